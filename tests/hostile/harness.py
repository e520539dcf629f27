"""The hostile suite's machinery: cases that run in child processes, and what "works
correctly or raises a tpp error" means.

A module of the suite builds an ordered `Cases` table (name -> function, built the same
way in pytest and in the child, from fixed seeds) and ends with

    results = harness.results_fixture(CASES, __name__)
    test_case = harness.case_test(CASES)
    if __name__ == "__main__":
        harness.main(CASES)

pytest runs the module as a child script (`python -m hostile.MODULE NAME ...`, with tests/
on PYTHONPATH): the child prints `case NAME` before each case, then `ok NAME` or `failed
NAME: why`. A crash (a signal, an abort) or a hang (a per-case watchdog ends the child,
the parent's timeout backs it up) fails the case that was running, and the cases after
it run in a fresh child. Each case is one pytest test, so a failure names it.
"""
from __future__ import annotations

import concurrent.futures

import faulthandler
import math
import os
import signal
import subprocess
import sys
import traceback
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest

import tpp

TESTS = Path(__file__).resolve().parents[1]
BF16 = np.dtype(ml_dtypes.bfloat16)
NP_INTS = (np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64)
CASE_TIMEOUT = 60.0          # seconds one case may take in the child before it counts as a hang


class Cases(dict):
    """name -> function of no arguments (it passes by returning), in definition order."""

    def add(self, name: str, fn, *args, **kwargs) -> None:
        assert name not in self and " " not in name, name
        self[name] = (lambda: fn(*args, **kwargs)) if args or kwargs else fn

    def case(self, fn):
        """Decorator: the function's name is the case's."""
        self.add(fn.__name__, fn)
        return fn


# ---- what a hostile call may do ------------------------------------------------------------
class Wrong(AssertionError):
    """A call did something it must not: a wrong value, an undocumented error, ..."""


def documented(exc: BaseException) -> bool:
    """A tpp error (tpp.TppError: DescriptorError, ShapeError, ... subclass TypeError or
    ValueError), a MemoryError (what tpp documents for allocations that fail), or a
    TypeError/ValueError raised by tpp itself (its message starts with "tpp")."""
    if isinstance(exc, (tpp.TppError, MemoryError)):
        return True
    return isinstance(exc, (TypeError, ValueError)) and str(exc).startswith("tpp")


def attempt(fn):
    """(result, None) or (None, exc) for a documented error; anything else is Wrong."""
    try:
        return fn(), None
    except Exception as exc:        # noqa: BLE001  (which kinds are allowed is the point)
        if documented(exc):
            return None, exc
        raise Wrong(f"undocumented error {type(exc).__name__}: {exc}") from exc


def refused(fn, why: str) -> BaseException:
    """fn must raise a documented error (`why` says what is wrong with the call)."""
    got, exc = attempt(fn)
    if exc is None:
        raise Wrong(f"accepted {why}; returned {_short(got)}")
    return exc


def _short(x) -> str:
    return f"{type(x).__name__} {getattr(x, 'shape', '')} {getattr(x, 'dtype', '')}".strip()


def tolerance(dtype) -> float:
    dtype = np.dtype(dtype)
    if dtype == BF16:
        return 3e-2
    if dtype == np.float32:
        return 2e-4
    if dtype == np.float64:
        return 1e-10
    return 0.0                       # integers, bools: exact


def close(got, expect, dtype=None, what: str = "result") -> None:
    """got against a float64 reference rounded to got's dtype (relative and absolute
    tolerance of the looser of got's dtype and `dtype`, the computation's)."""
    got = np.asarray(got)
    ref = np.asarray(expect, np.float64)
    if got.shape != ref.shape and got.size == ref.size:
        raise Wrong(f"{what}: shape {got.shape}, expected {ref.shape}")
    if got.shape != ref.shape:
        raise Wrong(f"{what}: shape {got.shape}, expected {ref.shape}")
    tol = max(tolerance(got.dtype), tolerance(dtype if dtype is not None else got.dtype))
    rounded = ref.astype(got.dtype if got.dtype != bool else np.float64).astype(np.float64)
    g = got.astype(np.float64)
    bad = ~np.isclose(g, rounded, rtol=tol, atol=tol, equal_nan=True)
    if bad.any():
        i = tuple(int(v) for v in np.argwhere(bad)[0])
        raise Wrong(f"{what}: {int(bad.sum())} of {bad.size} elements wrong, first at {i}: "
                    f"got {g[i]!r}, expected {rounded[i]!r}")


def values(rng: np.random.Generator, shape, dtype, positive: bool = False) -> np.ndarray:
    """Random values of dtype away from 0 (in 0.25..2 with random signs; small integers)."""
    dtype = np.dtype(dtype)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return rng.integers(max(info.min, -8), min(info.max, 8), shape, endpoint=True).astype(dtype)
    if dtype == bool:
        return rng.integers(0, 2, shape).astype(bool)
    x = rng.uniform(0.25, 2.0, shape)
    if not positive:
        x *= rng.choice((-1.0, 1.0), shape)
    return x.astype(dtype)


def small(*dims) -> bool:
    """Whether arrays with these element counts are small enough to allocate."""
    return all(isinstance(d, int) and d >= 0 for d in dims) and math.prod(dims) <= 1 << 16


# ---- the child ------------------------------------------------------------------------------
def main(cases: Cases, argv: list[str] | None = None) -> None:
    """Run the named cases in order, logging each; then leave at once (a case may have
    left threads behind)."""
    faulthandler.enable()
    for name in (sys.argv[1:] if argv is None else argv):
        print(f"case {name}", flush=True)
        faulthandler.dump_traceback_later(CASE_TIMEOUT, exit=True)       # a hang ends the child
        try:
            cases[name]()
        except BaseException as exc:             # noqa: BLE001  (reported per case)
            tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)[-3:])
            detail = f"{type(exc).__name__}: {exc}\n{tb}".replace("\n", "\n  ")
            print(f"failed {name}: {detail[:4000]}", flush=True)
        else:
            print(f"ok {name}", flush=True)
        faulthandler.cancel_dump_traceback_later()
    sys.stdout.flush()
    os._exit(0)


def child_env(kernel_cache_dir, extra: dict | None = None) -> dict:
    path = os.pathsep.join(p for p in (str(TESTS), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "TPP_CACHE_DIR": str(kernel_cache_dir), "PYTHONFAULTHANDLER": "1",
            "PYTHONPATH": path, **(extra or {})}


def run_children(command: list[str], names: list[str], kernel_cache_dir, timeout: float = 600,
                 env: dict | None = None) -> dict[str, str]:
    """Run `command NAME ...` (each name printed as `case NAME`, then `ok NAME` or `failed
    NAME: why`) in as few child processes as crashes allow: after a crash or a hang, the
    names after the one running start in a fresh child. Returns name -> "ok" or what
    happened, with the child's last lines (its log of what it was doing)."""
    results: dict[str, str] = {}
    left = list(names)
    full_env = child_env(kernel_cache_dir, env)
    while left:
        try:
            proc = subprocess.run(command + left, capture_output=True, text=True, env=full_env,
                                  timeout=timeout, stdin=subprocess.DEVNULL)
            out, err = proc.stdout, proc.stderr
            how = (f"killed by {signal.Signals(-proc.returncode).name}" if proc.returncode < 0
                   else f"exit status {proc.returncode}")
        except subprocess.TimeoutExpired as exc:
            out, err = _text(exc.stdout), _text(exc.stderr)
            how = f"hung (killed after {timeout} s)"
        running, lines = None, []
        for line in out.splitlines():
            word, _, rest = line.partition(" ")
            if word == "case":
                running, lines = rest, []
            elif word == "ok":
                results[rest] = "ok"
            elif word == "failed":
                name, _, detail = rest.partition(": ")
                results[name] = detail + "\n--- the child's output ---\n" + "\n".join(lines[-40:])
            else:
                lines.append(line)
        tail = "\n".join(lines[-5:]) + f"\n--- stderr (tail) ---\n{err[-2500:]}"
        if running is None or running in results:      # nothing started, or every one finished
            for name in left:
                results.setdefault(name, f"not run: the child ended with {how}\n{tail}")
            break
        if "Timeout (0:" in err and how == "exit status 1":
            how = f"hung (more than {CASE_TIMEOUT} s)"
        results[running] = f"{how} during it; last logged:\n{tail}"
        left = left[left.index(running) + 1:]
    return results


def _text(data) -> str:
    return data.decode(errors="replace") if isinstance(data, bytes) else (data or "")


def results_fixture(cases: Cases, module: str, env: dict | None = None):
    """A module-scoped fixture: every case's outcome, from child processes."""
    stem = module.rpartition(".")[2] if module != "__main__" else None

    @pytest.fixture(scope="module")
    def results(kernel_cache_dir) -> dict[str, str]:
        return run_children([sys.executable, "-m", f"hostile.{stem}"], list(cases), kernel_cache_dir, env=env)
    return results


def pooled_results(cases, run_case, workers: int = 2):
    """A module-scoped fixture: run_case(name, kernel_cache_dir) -> outcome for every
    case, `workers` at a time (each runs its own process: a CLI or an interpreter)."""
    @pytest.fixture(scope="module")
    def results(kernel_cache_dir) -> dict[str, str]:
        with concurrent.futures.ThreadPoolExecutor(workers) as ex:
            return dict(zip(cases, ex.map(lambda n: run_case(n, kernel_cache_dir), cases)))
    return results


def case_test(cases: Cases):
    @pytest.mark.parametrize("name", list(cases))
    def test_case(name, results):
        assert results[name] == "ok", results[name]
    return test_case
