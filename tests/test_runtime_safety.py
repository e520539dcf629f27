"""The runtime under hostile conditions: knobs with bad values, targets a composite cannot
run on, thread counts past the cores, fork() after or during use, and the memory of many
distinct kernels. Each risky case runs in its own interpreter with a timeout (a hang fails
the test instead of the run)."""
from __future__ import annotations

import gc
import os
import weakref

import numpy as np
import pytest

import tpp
import tpp.ops
from tpp import config, dispatch, pool
from tpp.errors import ArgumentError
from tpp.jit import compiler


# ---- knobs ----------------------------------------------------------------------------
@pytest.mark.parametrize("value, on", [("False", False), ("OFF", False), ("no", False), (" 0 ", False),
                                       ("TRUE", True), ("On", True), ("yes", True), ("1", True)])
def test_cache_switch_spellings(monkeypatch, value, on):
    monkeypatch.setenv("TPP_CACHE", value)
    assert config.from_environment().cache is on


@pytest.mark.parametrize("value", ["maybe", "2", "disable", "of"])
def test_cache_switch_refuses_other_words(monkeypatch, value):
    monkeypatch.setenv("TPP_CACHE", value)
    with pytest.raises(ValueError, match=f"TPP_CACHE={value!r} is not a boolean"):
        config.from_environment()


def test_bad_knob_refused_at_import(run_python):
    ran = run_python("import tpp", env={"TPP_CACHE": "sometimes"})
    assert ran.returncode == 1 and "TPP_CACHE='sometimes' is not a boolean" in ran.stderr


def test_kernel_cache_size_knob(monkeypatch):
    monkeypatch.setenv("TPP_KERNEL_CACHE_SIZE", "7")
    assert config.from_environment().kernel_cache_size == 7
    monkeypatch.setenv("TPP_KERNEL_CACHE_SIZE", "-1")
    with pytest.raises(ValueError, match="TPP_KERNEL_CACHE_SIZE=-1 is outside"):
        config.from_environment()


# ---- targets ----------------------------------------------------------------------------
ALL_OPS = """
import numpy as np, tpp, tpp.ops
a = np.ones((8, 8), np.float32)
calls = {"matmul": lambda: tpp.ops.matmul(a, a),
         "bias_act": lambda: tpp.ops.bias_act(a, np.ones(8, np.float32), "relu"),
         "segment_sum": lambda: tpp.ops.segment_sum(np.array([0, 4, 8]), a)}
for name, call in calls.items():
    try:
        call()
        print(name, "ran")
    except tpp.TargetError as e:
        print(name, "TargetError", e)
"""


@pytest.mark.parametrize("env, says", [
    ({"TPP_TARGET": "bogus"}, ["unknown target 'bogus'", "(TPP_TARGET)"]),
    ({"TPP_TARGET": "x86-avx512", "TPP_HOST_LIMIT": "x86-avx2"},
     ["target x86-avx512 (TPP_TARGET) is a CPU target this machine cannot run", "runs x86-avx2"]),
    ({"TPP_TARGET": "nvptx-sm90"}, ["target nvptx-sm90 (TPP_TARGET) is a GPU target", "host CPU only"]),
    ({"TPP_TARGET": "aarch64-sve"}, ["target aarch64-sve (TPP_TARGET)", "host CPU only"]),
])
def test_composites_on_a_target_they_cannot_run(run_python, env, says):
    ran = run_python(ALL_OPS, env=env, timeout=120).check()
    lines = ran.stdout.strip().split("\n")
    assert [line.split()[:2] for line in lines] == [[op, "TargetError"] for op in
                                                    ("matmul", "bias_act", "segment_sum")], ran.stdout
    assert all(s in line for s in says for line in lines), ran.stdout


def test_target_argument_and_knob_raise_the_same_error():
    with pytest.raises(tpp.TargetError, match="unknown target 'bogus'"):
        tpp.unary("relu", 4, 4, target="bogus")
    with config.override(target="bogus"), pytest.raises(tpp.TargetError, match=r"\(TPP_TARGET\)"):
        tpp.current_target()


# ---- threads ----------------------------------------------------------------------------
def test_thread_counts_past_the_maximum_are_refused():
    a = np.ones((16, 16), np.float32)
    most = config.get().max_threads
    assert most == min(config.THREADS_LIMIT, config.THREADS_PER_CORE * config.cores())
    for op in (lambda t: tpp.ops.matmul(a, a, threads=t),
               lambda t: tpp.ops.bias_act(a, np.ones(16, np.float32), "relu", threads=t),
               lambda t: tpp.ops.segment_sum(np.array([0, 8, 16]), a, threads=t)):
        for threads in (most + 1, 100000, np.int64(1 << 40)):
            with pytest.raises(ArgumentError, match=f"threads={int(threads)} is more than the maximum of {most}"):
                op(threads)
        np.testing.assert_allclose(op(most), op(1), rtol=1e-6)     # the maximum itself runs


def test_thread_knob_past_the_maximum_is_refused(monkeypatch):
    most = config.THREADS_PER_CORE * config.cores()
    monkeypatch.setenv("TPP_NUM_THREADS", str(most + 1))
    if most + 1 <= config.THREADS_LIMIT:
        with pytest.raises(ValueError, match=f"TPP_NUM_THREADS={most + 1} is more than the maximum"):
            config.from_environment()
    monkeypatch.setenv("TPP_NUM_THREADS", str(min(most, config.THREADS_LIMIT)))
    assert config.from_environment().num_threads == min(most, config.THREADS_LIMIT)


def test_the_pool_never_grows_past_the_maximum():
    a = np.ones((64, 64), np.float32)
    most = config.get().max_threads
    np.testing.assert_allclose(tpp.ops.matmul(a, a, threads=most), a @ a, rtol=1e-6)
    assert len(pool._workers) <= most - 1



def test_a_composite_starts_no_more_threads_than_its_work_can_use(run_python):
    """One row of work runs on the calling thread alone, whatever threads= asks for; 16 rows
    on a fresh pool start at most 15 workers beside the caller."""
    ran = run_python("""
import numpy as np, tpp, tpp.ops
from tpp import config, pool
most = config.get().max_threads
tpp.ops.bias_act(np.ones((1, 64), np.float32), np.ones(64, np.float32), "relu", threads=most)
print(len(pool._workers))
x = np.ones((16, 64), np.float32)
tpp.ops.bias_act(x, np.ones(64, np.float32), "relu", threads=most)
print(len(pool._workers) <= min(most, 16) - 1)
""", timeout=120).check()
    assert ran.stdout.split() == ["0", "True"], ran.stdout

# ---- fork -------------------------------------------------------------------------------
# A child of fork() has only the thread that forked. Each case forks from a fresh
# interpreter; a child that is not done in CHILD_S is killed and reported as a hang (left
# alone, one spun at 100% CPU forever).
FORKING = r"""
import os, signal, sys, threading, time
import numpy as np, tpp, tpp.ops

CHILD_S = 60.0


def forked(child):
    pid = os.fork()
    if pid == 0:
        code = 4
        try:
            code = child()
        except BaseException as exc:
            print("child raised", type(exc).__name__, exc, flush=True)
        os._exit(code)
    deadline = time.monotonic() + CHILD_S
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.01)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    return "hang"


rng = np.random.default_rng(0)
a = rng.uniform(-1, 1, (192, 160)).astype(np.float32)
b = rng.uniform(-1, 1, (160, 96)).astype(np.float32)
want = a.astype(np.float64) @ b


def matmul_ok(_=None):
    c = tpp.ops.matmul(a, b, threads=2)
    return 0 if np.allclose(c, want, rtol=1e-4, atol=1e-4) else 3
"""

AFTER_USE = FORKING + r"""
assert matmul_ok() == 0                  # the pool's worker is started (and spinning)
print([forked(matmul_ok) for _ in range(2)], matmul_ok())
"""

DURING_COMPILE = FORKING + r"""
stop = threading.Event()


def compile_forever():
    i = 0
    while not stop.is_set():
        tpp.unary("relu", 1 + i % 97, 3 + i // 97)       # a new kernel each time: locks held
        i += 1


def child(n):
    def run():
        x = np.zeros((5, n), np.float32)
        if not np.allclose(tpp.unary("sigmoid", 5, n)(x), 0.5):   # a first dispatch there
            return 3
        return matmul_ok()
    return run


results = []
for attempt in range(5):
    t = threading.Thread(target=compile_forever)
    t.start()
    time.sleep(0.03 + 0.02 * attempt)
    results.append(forked(child(1000 + attempt)))
    stop.set()
    t.join()
    stop.clear()
print(results, matmul_ok())
"""

FORK_POOL = FORKING + r"""
import multiprocessing
assert matmul_ok() == 0
with multiprocessing.get_context("fork").Pool(2) as workers:
    print(workers.map_async(matmul_ok, range(4)).get(timeout=CHILD_S), matmul_ok())
"""


@pytest.mark.parametrize("script, expected", [
    (AFTER_USE, "[0, 0] 0"),                   # hung forever on the child's parallel call
    (DURING_COMPILE, "[0, 0, 0, 0, 0] 0"),     # deadlocked on the child's first dispatch
    (FORK_POOL, "[0, 0, 0, 0] 0"),             # multiprocessing's fork pool hung the same way
], ids=["after-use", "during-compile", "multiprocessing"])
def test_fork(run_python, script, expected):
    ran = run_python(script, env={"TPP_NUM_THREADS": "2"}, timeout=200).check()
    assert ran.stdout.strip().split("\n")[-1] == expected, ran.stdout


# ---- bounded in-memory cache --------------------------------------------------------------
def _evict_all():
    """Dispatch enough other kernels to push everything else out of a 2-entry cache."""
    for i in range(24):
        tpp.unary("negate", 2, 300 + i)
    gc.collect()


def test_a_held_kernel_outlives_the_cache(rng):
    x = rng.uniform(-1, 1, (7, 13)).astype(np.float32)
    with config.override(kernel_cache_size=2):
        k = tpp.unary("relu", 7, 13)
        _evict_all()
        assert (7, 13) not in [(d.m, d.n) for d, _ in dispatch._memory.found]
        np.testing.assert_array_equal(k(x), np.maximum(x, 0))
        assert tpp.unary("relu", 7, 13) is k          # still alive: handed out again, not rebuilt
        wide = np.zeros((7, 40), np.float32)          # a view runs a sibling compiled for its ld
        wide[:, 5:18] = x
        for _ in range(2):
            np.testing.assert_array_equal(k(wide[:, 5:18]), np.maximum(x, 0))
            _evict_all()


def test_an_unreferenced_kernel_is_freed():
    with config.override(kernel_cache_size=2):
        k = tpp.unary("relu", 9, 31)
        symbol, seen = k.symbol, weakref.ref(k)
        del k
        _evict_all()
        assert seen() is None
        assert all(symbol not in key[1] for key in compiler._linked.keys())   # its code unlinked
        k = tpp.unary("relu", 9, 31)                  # and built again when asked
        x = np.full((9, 31), -2.0, np.float32)
        np.testing.assert_array_equal(k(x), np.zeros_like(x))


def test_a_kernel_whose_address_was_taken_is_kept():
    with config.override(kernel_cache_size=2):
        k = tpp.unary("relu", 11, 3)
        assert k.address
        seen = weakref.ref(k)
        del k
        _evict_all()
        assert seen() is not None                     # a raw address has no lifetime: kept


def test_composites_outlive_the_cache(rng):
    a = rng.uniform(-1, 1, (40, 24)).astype(np.float32)
    b = rng.uniform(-1, 1, (24, 20)).astype(np.float32)
    with config.override(kernel_cache_size=2):
        out = np.empty((40, 20), np.float32)
        for _ in range(3):
            tpp.ops.matmul(a, b, out=out, threads=2)         # the memo's Program, and the checked path
            np.testing.assert_allclose(out, a @ b, rtol=1e-5, atol=1e-5)
            for n in range(5, 12):                           # other composites push it out
                tpp.ops.bias_act(np.ones((3, n), np.float32), np.ones(n, np.float32), "relu")
            _evict_all()
        assert len(tpp.compose.call._programs) <= 2


MANY_KERNELS = r"""
import sys
import tpp
count, step = int(sys.argv[1]), int(sys.argv[1]) // 10


def rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20


marks = []
for i in range(count):
    tpp.unary("copy", 1 + i // 200, 1 + i % 200)           # each a distinct kernel
    if (i + 1) % step == 0:
        marks.append(rss_mb())
print(" ".join(f"{m:.1f}" for m in marks))
"""

# 20,000 distinct kernels took the process from 80 to 659 MB (~29 KB each, never freed).
# TPP_TEST_MANY_KERNELS=20000 runs the count; by default fewer, as fast as a
# check of the growth allows (each kernel compiles: ~5-10 ms).
MANY = int(os.environ.get("TPP_TEST_MANY_KERNELS", "1500"))


def test_memory_stays_bounded_over_many_distinct_kernels(run_python):
    ran = run_python(MANY_KERNELS, str(MANY), env={"TPP_CACHE": "0", "TPP_KERNEL_CACHE_SIZE": "64"},
                     timeout=max(600, MANY * 0.1)).check()
    marks = [float(m) for m in ran.stdout.split()]
    growth = marks[-1] - marks[1]          # past the first tenth: the cache is full by then
    per_kernel_kb = growth * 1024 / (MANY * 0.9)
    assert per_kernel_kb < 2, f"RSS (MB) every {MANY // 10} kernels: {marks}"
