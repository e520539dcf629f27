"""Hostile tpp-aot specs, each in its own process: kernel names that would shadow the C
library or the runtime (malloc, free, main, _start, a C keyword), a spec that is not
UTF-8, malformed TOML and JSON, fields of the wrong type, a target that emits no object
code. Each must end with a nonzero status and a message, never a signal, a hang or a
Python traceback.
"""
from __future__ import annotations

import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from hostile import harness

TIMEOUT = 120


def _kernel(name="k", **fields) -> str:
    import json
    return json.dumps({"kernels": [{"name": name, "kind": "unary", "op": "relu", "m": 4, "n": 4, **fields}]})


CASES: dict[str, tuple[bytes, str, list[str]]] = {}    # name -> (spec bytes, file name, extra args)
for _n in ("malloc", "main", "_start", "int", "tpp_init", ""):        # (tests/test_aot_cli.py has more)
    CASES[f"name_{_n or 'empty'}"] = (_kernel(_n).encode(), "spec.json", [])
CASES["spec_not_utf8"] = (b'{"kernels": [{"name": "k\xff", "kind": "unary"}]}', "spec.json", [])
CASES["toml_malformed"] = (b'[[kernels]\nname = "k"\n', "spec.toml", [])
CASES["beta_a_word"] = (b'{"kernels": [{"name": "g", "kind": "gemm", "m": 4, "n": 4, "k": 4, "beta": "x"}]}',
                        "spec.json", [])
CASES["alpha_a_word"] = (_kernel(op="leaky_relu", alpha="big").encode(), "spec.json", [])
CASES["m_a_bool"] = (_kernel(m=True).encode(), "spec.json", [])
CASES["target_nvptx"] = (_kernel().encode(), "spec.json", ["--target", "nvptx-sm90"])
CASES["duplicate_names"] = (b'{"kernels": [{"name": "k", "kind": "unary", "op": "relu", "m": 4, "n": 4},'
                            b' {"name": "k", "kind": "unary", "op": "abs", "m": 4, "n": 4}]}', "spec.json", [])


def run_case(name: str, kernel_cache_dir) -> str:
    spec, filename, extra = CASES[name]
    with tempfile.TemporaryDirectory(prefix="tpp-aot-") as tmp:
        path = Path(tmp) / filename
        path.write_bytes(spec)
        try:
            proc = subprocess.run([sys.executable, "-m", "tpp.aot", str(path), "--out", tmp, *extra],
                                  capture_output=True, text=True, errors="replace", timeout=TIMEOUT,
                                  env=harness.child_env(kernel_cache_dir), stdin=subprocess.DEVNULL, cwd=tmp)
        except subprocess.TimeoutExpired:
            return f"hung (killed after {TIMEOUT} s)"
    out = proc.stdout + proc.stderr
    if proc.returncode < 0:
        return f"killed by {signal.Signals(-proc.returncode).name}\n{out[-3000:]}"
    if proc.returncode == 0:
        return f"accepted (exit status 0)\n{out[-2000:]}"
    if "Traceback" in out:
        return f"a traceback instead of a message:\n{out[-3000:]}"
    if not out.strip():
        return f"exit status {proc.returncode} and no message"
    return "ok"


results = harness.pooled_results(CASES, run_case)
test_case = harness.case_test(CASES)
