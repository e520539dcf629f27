"""The worker pool: every iteration of a parallel loop runs exactly once, with any
worker count, back to back (workers spinning), after they parked, and from several
Python threads at once."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from tpp import cabi, pool
from tpp.jit import compiler
from tpp.jit.targets import Target


@pytest.fixture(scope="module")
def count_nest():
    """A native nest f(args, start, end): counts[i] += 1 for i in [start, end), where
    args[0].data points at the int64 counts."""
    host = Target.host()
    text = f'''target triple = "{host.triple}"
define void @count(ptr %args, i64 %start, i64 %end) {{
entry:
  %data = load ptr, ptr %args
  br label %loop
loop:
  %i = phi i64 [%start, %entry], [%next, %body]
  %more = icmp slt i64 %i, %end
  br i1 %more, label %body, label %done
body:
  %at = getelementptr i64, ptr %data, i64 %i
  %old = load i64, ptr %at
  %new = add i64 %old, 1
  store i64 %new, ptr %at
  %next = add i64 %i, 1
  br label %loop
done:
  ret void
}}'''
    obj = compiler.emit_object(compiler.optimise(text, host), host)
    address = compiler.load_object(obj, host, ["count"])["count"]
    return cabi.ffi.cast(cabi.NEST, address)


def counted(nest, total: int, workers: int, runs: int = 1) -> np.ndarray:
    counts = np.zeros(total, np.int64)
    args = cabi.tensors([(counts.ctypes.data, total)])
    for _ in range(runs):
        pool.run(nest, args, total, workers)
    return counts


@pytest.mark.parametrize("workers", [1, 2, 3, 5])
@pytest.mark.parametrize("total", [1, 2, 7, 1000])
def test_every_iteration_runs_once(count_nest, workers, total):
    assert np.array_equal(counted(count_nest, total, workers), np.ones(total, np.int64))


def test_back_to_back_runs(count_nest):
    assert np.array_equal(counted(count_nest, 64, 2, runs=3000), np.full(64, 3000))


def test_parked_workers_wake_up(count_nest):
    counts = np.zeros(10, np.int64)
    args = cabi.tensors([(counts.ctypes.data, 10)])
    for pause in (0.0, 0.02, 0.1):        # past the spin: the workers have parked
        pool.run(count_nest, args, 10, 3)
        time.sleep(pause)
    assert np.array_equal(counts, np.full(10, 3))


def test_calls_from_several_threads(count_nest):
    results = [None] * 4

    def work(i: int) -> None:
        results[i] = counted(count_nest, 257, 2, runs=200)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert all(np.array_equal(r, np.full(257, 200)) for r in results)


def test_shares_cover_the_range_evenly():
    for total in (1, 5, 16, 161):
        for workers in (1, 2, 3, 8):
            parts = pool.shares(total, workers)
            assert parts[0][0] == 0 and parts[-1][1] == total
            assert all(a[1] == b[0] for a, b in zip(parts, parts[1:]))
            sizes = [e - s for s, e in parts]
            assert max(sizes) - min(sizes) <= 1 and min(sizes) >= 1
