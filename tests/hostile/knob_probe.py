"""A fresh interpreter under the knobs in its environment: import tpp, run a kernel and
each composite, print one JSON line per step: {"step", "ok"} or {"step", "error", "type",
"documented"}; then the process's thread count. Wrong values are errors too."""
from __future__ import annotations

import json
import os
import sys


def say(**record) -> None:
    print(json.dumps(record), flush=True)


def threads_alive() -> int:
    return len(os.listdir("/proc/self/task"))


def main() -> None:
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    try:
        import numpy as np
        import tpp
        import tpp.ops
        from hostile.harness import close, documented
    except Exception as exc:                   # noqa: BLE001  (tpp did not import: judge by name)
        ours = any(c.__name__ == "TppError" for c in type(exc).__mro__) or isinstance(exc, MemoryError) or (
            isinstance(exc, (TypeError, ValueError)) and str(exc).startswith("tpp"))
        say(step="import", error=str(exc)[:500], type=type(exc).__name__, documented=ours)
        return
    say(step="import", threads=tpp.config.get().num_threads)
    try:
        say(step="target", target=tpp.current_target().name)
    except Exception as exc:                   # noqa: BLE001  (a bad TPP_TARGET: at the first use)
        say(step="target", error=str(exc)[:500], type=type(exc).__name__, documented=documented(exc))
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((67, 45)).astype(np.float32), rng.standard_normal((45, 33)).astype(np.float32)
    x = rng.standard_normal((9, 40)).astype(np.float32)
    steps = {
        "relu": lambda: close(tpp.unary("relu", 9, 40)(x), np.maximum(x, 0)),
        "gemm": lambda: close(tpp.gemm(67, 33, 45, beta=0.0)(a, b), a.astype(np.float64) @ b),
        "matmul": lambda: close(tpp.ops.matmul(a, b), a.astype(np.float64) @ b),
        "matmul_again": lambda: close(tpp.ops.matmul(a, b), a.astype(np.float64) @ b),
        "bias_act": lambda: close(tpp.ops.bias_act(x, np.ones(40, np.float32), "relu"),
                                  np.maximum(x.astype(np.float64) + 1, 0)),
        "segment_sum": lambda: close(tpp.ops.segment_sum(np.array([0, 4, 9], np.int64), x),
                                     np.stack([x[:4].sum(0), x[4:].sum(0)])),
    }
    if sys.argv[1:] == ["quick"]:
        steps = {"relu": steps["relu"]}
    for step, fn in steps.items():
        try:
            fn()
            say(step=step, ok=True)
        except Exception as exc:               # noqa: BLE001
            say(step=step, error=str(exc)[:500], type=type(exc).__name__, documented=documented(exc))
    say(step="end", threads_alive=threads_alive())


if __name__ == "__main__":
    main()
    sys.stdout.flush()
    os._exit(0)
