"""fork() after the worker pool has run and while other threads compile or compute,
multiprocessing pools (fork, spawn), a fork inside a fork, and Python threads
calling composites at once. Every forked child must finish its own calls, correct, in
time (a child that spins or deadlocks is killed and fails the case).
"""
from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
import traceback

import numpy as np

import tpp
import tpp.ops
from hostile import harness
from hostile.harness import Cases, Wrong

CASES = Cases()
CHILD_TIMEOUT = 30.0
_fresh = iter(range(7000, 1 << 20))


def work(seed: int = 0, threads: int = 2) -> bool:
    """What a forked child does: composites on the pool, a cached kernel, a new kernel."""
    rng = np.random.default_rng(seed)
    a, b = rng.standard_normal((37, 29)).astype(np.float32), rng.standard_normal((29, 41)).astype(np.float32)
    c = tpp.ops.matmul(a, b, threads=threads)
    harness.close(c, a.astype(np.float64) @ b, np.float32, "matmul in the child")
    x = rng.standard_normal((6, 50)).astype(np.float32)
    y = tpp.ops.bias_act(x, np.ones(50, np.float32), "relu", threads=threads)
    harness.close(y, np.maximum(x.astype(np.float64) + 1, 0), np.float32, "bias_act in the child")
    harness.close(tpp.unary("relu", 6, 50)(x), np.maximum(x, 0), np.float32, "relu in the child")
    n = 3000 + seed % 1000 + 1000 * (os.getpid() % 7)          # a kernel no one compiled yet
    z = rng.standard_normal((2, n)).astype(np.float32)
    harness.close(tpp.unary("abs", 2, n)(z), np.abs(z), np.float32, "a new kernel in the child")
    return True


def in_child(fn, timeout: float = CHILD_TIMEOUT) -> None:
    """Run fn in a forked child; it must exit 0 within the timeout."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            fn()
            code = 0
        except BaseException:                  # noqa: BLE001
            traceback.print_exc()
        finally:
            os._exit(code)
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise Wrong(f"the forked child hung (killed after {timeout} s)")
        time.sleep(0.01)
    if os.WIFSIGNALED(status):
        raise Wrong(f"the forked child was killed by {signal.Signals(os.WTERMSIG(status)).name}")
    if os.WEXITSTATUS(status):
        raise Wrong(f"the forked child failed (exit status {os.WEXITSTATUS(status)}; its traceback is above)")


@CASES.case
def fork_after_the_pool_ran():
    work(1)                                   # the workers are spinning now
    in_child(lambda: work(2))
    work(3)                                   # and the parent's pool still works


@CASES.case
def fork_after_the_pool_parked():
    work(4)
    time.sleep(0.2)                           # the workers have parked
    in_child(lambda: work(5))


@CASES.case
def fork_after_one_thread_calls():
    tpp.ops.matmul(np.ones((8, 8), np.float32), np.ones((8, 8), np.float32), threads=1)
    in_child(lambda: work(6))


@CASES.case
def fork_inside_a_fork():
    work(7)
    in_child(lambda: (work(8), in_child(lambda: work(9))))


def _busy_thread(job) -> tuple[threading.Event, threading.Thread]:
    stop = threading.Event()

    def loop():
        while not stop.is_set():
            job()
    t = threading.Thread(target=loop, daemon=True)
    t.start()
    return stop, t


def _compile_new():
    n = next(_fresh)
    tpp.unary("relu", 3, n)


def fork_while(job, rounds: int = 3):
    work(10)
    stop, t = _busy_thread(job)
    try:
        for r in range(rounds):
            time.sleep(0.05 + 0.03 * r)
            in_child(lambda: work(11 + r))
    finally:
        stop.set()
        t.join(CHILD_TIMEOUT)
    if t.is_alive():
        raise Wrong("the busy thread did not finish")
    work(20)


CASES.add("fork_while_a_thread_compiles", fork_while, _compile_new, 5)
CASES.add("fork_while_a_thread_runs_matmul", fork_while,
          lambda: tpp.ops.matmul(np.ones((64, 64), np.float32), np.ones((64, 64), np.float32), threads=2))
CASES.add("fork_while_a_thread_runs_segment_sum", fork_while,
          lambda: tpp.ops.segment_sum(np.array([0, 100, 200], np.int64), np.ones((200, 16), np.float32), threads=2))


def pool_case(method: str, workers: int = 2) -> None:
    work(21)
    ctx = multiprocessing.get_context(method)
    pool = ctx.Pool(workers)
    try:
        got = pool.map_async(work, range(30, 36)).get(CHILD_TIMEOUT * 2)
    except multiprocessing.TimeoutError:
        raise Wrong(f"a multiprocessing {method} pool hung") from None
    finally:
        pool.terminate()
        pool.join()
    if got != [True] * 6:
        raise Wrong(f"the {method} pool's workers returned {got}")
    work(22)


for _method in ("fork", "spawn"):              # (forkserver: as spawn, and as slow)
    CASES.add(f"multiprocessing_{_method}_pool", pool_case, _method)


@CASES.case
def process_pool_executor_fork():
    import concurrent.futures
    work(23)
    with concurrent.futures.ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("fork")) as ex:
        got = list(ex.map(work, range(40, 44), timeout=CHILD_TIMEOUT * 2))
    if got != [True] * 4:
        raise Wrong(f"ProcessPoolExecutor returned {got}")


@CASES.case
def python_threads_call_composites_at_once():
    errors = []

    def run(seed):
        try:
            for i in range(5):
                work(100 + 10 * seed + i, threads=1 + (seed + i) % 2)
        except BaseException as exc:          # noqa: BLE001
            errors.append(exc)
    ts = [threading.Thread(target=run, args=(s,)) for s in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(CHILD_TIMEOUT * 2)
    if any(t.is_alive() for t in ts):
        raise Wrong("threads calling composites at once hung")
    if errors:
        raise errors[0]


results = harness.results_fixture(CASES, __name__)
test_case = harness.case_test(CASES)

if __name__ == "__main__":
    harness.main(CASES)
