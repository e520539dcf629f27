"""A small worker pool for the parallel loop of composite operators.

A composite compiles to `void f(const tpp_tensor *args, int64_t start, int64_t end)`,
which runs iterations [start, end) of its parallel loop. `run(f, args, total)`
splits [0, total) into one contiguous share per worker; each worker calls f
through cffi, which releases the GIL, so the shares run on separate cores.
"""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

from . import config

_lock = threading.Lock()
_executor: ThreadPoolExecutor | None = None
_executor_threads = 0


def threads() -> int:
    return config.get().num_threads


def _pool(workers: int) -> ThreadPoolExecutor:
    global _executor, _executor_threads
    with _lock:
        if _executor is None or _executor_threads < workers:
            if _executor is not None:
                _executor.shutdown(wait=True)
            _executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="tpp")
            _executor_threads = workers
        return _executor


def shares(total: int, workers: int) -> list[tuple[int, int]]:
    """[0, total) cut into `workers` contiguous ranges of near-equal length."""
    workers = max(1, min(workers, total))
    base, extra = divmod(total, workers)
    out, start = [], 0
    for w in range(workers):
        end = start + base + (w < extra)
        out.append((start, end))
        start = end
    return out


def run(fn, args, total: int, workers: int | None = None) -> None:
    """Run f(args, start, end) over [0, total) on `workers` threads (default: TPP_NUM_THREADS).
    The calling thread takes the first share itself."""
    parts = shares(total, workers or threads())
    if len(parts) == 1:
        fn(args, 0, total)
        return
    futures = [_pool(len(parts) - 1).submit(fn, args, s, e) for s, e in parts[1:]]
    fn(args, *parts[0])
    for f in futures:
        f.result()
