"""A small worker pool for the parallel loop of composite operators.

A composite compiles to `void f(const tpp_tensor *args, int64_t start, int64_t end)`,
which runs iterations [start, end) of its parallel loop. `run(f, args, total)`
splits [0, total) into one contiguous share per thread; the calling thread runs the
first share itself, each worker one of the others.

Handing a share to a sleeping thread and waiting for it through Python's
primitives costs ~45 us per run on this VM (two futex wake-ups), 7% of a 2-thread
512^3 matmul. So the hand-off is native: each worker owns a slot (cache lines of
int64) and sits in a JIT-compiled loop, with the GIL released, that spins on the
slot's job counter, runs the job it finds and publishes its completion; the caller
posts jobs and waits for them in native code too. A worker that has seen no job
for SPINS turns of its loop parks (a threading.Event) and is woken by the next
post; the park/post handshake is a store, a full fence and a load on each side,
so no wake-up is lost.

A child of os.fork() has only the thread that forked: the workers are gone, and posting
to their slots would spin forever, so the child starts with no workers and fresh locks
(os.register_at_fork below).
"""
from __future__ import annotations

import os
import threading

import numpy as np
from llvmlite import ir
from llvmlite.ir.types import _TypedPointerType

from . import config
from .cabi import ffi

SPINS = 1 << 18        # idle loop turns, with a pause each (~3-5 ms here), before a worker parks:
                       # waking a parked thread costs 100-200 us on this VM
YIELD_AFTER = 1 << 12  # spin turns (~50-100 us) after which each turn also gives the CPU away
                       # (sched_yield; counted as YIELD_TURNS): with more threads than free
YIELD_TURNS = 64       # cores a spinner held the CPU its job's owner needed (a 512^3 matmul
                       # on 8 threads of 2 cores: 26x slower than on 2)
SLOT_WORDS = 24        # int64 per slot: three cache lines
# word offsets in a slot: the caller writes the first line, the worker the second
POSTED, FN, ARGS, START, END = 0, 1, 2, 3, 4
DONE = 8
PARKED = 16
STOP = -1              # posted value that tells a worker to leave its loop

_I64 = ir.IntType(64)
_PTR = ir.PointerType()
_WORDS = _TypedPointerType(_I64)   # llvmlite's atomic load/store want to know the pointee


def _emit(module: ir.Module, pause: str | None) -> None:
    """serve(slot, spins) -> 0 when parked, -1 when stopped; post(slot, fn, args, start,
    end) -> whether the worker was parked; wait(slot, job)."""
    job_type = ir.FunctionType(ir.VoidType(), [_PTR, _I64, _I64])
    job_ptr = _TypedPointerType(job_type)

    def word(b, slot, index):
        at = b.gep(slot, [ir.Constant(_I64, index)], source_etype=_I64)
        return b.inttoptr(b.ptrtoint(at, _I64), _WORDS)     # typed, for the atomics

    def load(b, ptr, order):
        return b.load_atomic(ptr, order, 8, typ=_I64)

    def relax(b):
        if pause:
            b.call(module.globals.get(pause) or ir.Function(module, ir.FunctionType(ir.VoidType(), []), pause),
                   [])

    def relax_after(b, turns):
        """One turn of a spin loop that has turned `turns` times: a pause, and past
        YIELD_AFTER a yield too; the next turn count."""
        relax(b)
        late = b.icmp_signed(">", turns, ir.Constant(_I64, YIELD_AFTER))
        with b.if_then(late):
            give_way(module, b)
        return b.add(turns, b.select(late, ir.Constant(_I64, YIELD_TURNS), ir.Constant(_I64, 1)))

    # ---- serve ------------------------------------------------------------------------
    serve = ir.Function(module, ir.FunctionType(_I64, [_PTR, _I64]), "tpp_pool_serve")
    slot, spins = serve.args
    entry, loop, run_job, idle, park, recheck, unpark, stop, parked = (
        serve.append_basic_block(n) for n in
        ("entry", "loop", "run", "idle", "park", "recheck", "unpark", "stop", "parked"))
    b = ir.IRBuilder(entry)
    b.store_atomic(ir.Constant(_I64, 0), word(b, slot, PARKED), "seq_cst", 8)
    first_seen = load(b, word(b, slot, DONE), "acquire")
    b.branch(loop)
    b = ir.IRBuilder(loop)
    seen = b.phi(_I64)
    turns = b.phi(_I64)
    seen.add_incoming(first_seen, entry)
    turns.add_incoming(ir.Constant(_I64, 0), entry)
    posted = load(b, word(b, slot, POSTED), "acquire")
    is_stop = b.icmp_signed("==", posted, ir.Constant(_I64, STOP))
    fresh = b.icmp_signed("!=", posted, seen)
    b.cbranch(is_stop, stop, idle)
    b = ir.IRBuilder(idle)
    b.cbranch(fresh, run_job, park)
    b = ir.IRBuilder(run_job)
    fn = b.inttoptr(b.load(word(b, slot, FN), typ=_I64), job_ptr)
    args = b.inttoptr(b.load(word(b, slot, ARGS), typ=_I64), _PTR)
    b.call(fn, [args, b.load(word(b, slot, START), typ=_I64), b.load(word(b, slot, END), typ=_I64)])
    b.store_atomic(posted, word(b, slot, DONE), "release", 8)
    seen.add_incoming(posted, run_job)
    turns.add_incoming(ir.Constant(_I64, 0), run_job)
    b.branch(loop)
    b = ir.IRBuilder(park)
    more = relax_after(b, turns)
    b.cbranch(b.icmp_signed("<", more, spins), loop, recheck)
    seen.add_incoming(seen, b.block)
    turns.add_incoming(more, b.block)
    b = ir.IRBuilder(recheck)
    # park: publish PARKED, then look at POSTED once more (seq_cst on both sides: a
    # post either sees PARKED and wakes us, or we see its job here)
    b.store_atomic(ir.Constant(_I64, 1), word(b, slot, PARKED), "seq_cst", 8)
    b.fence("seq_cst")
    again = load(b, word(b, slot, POSTED), "seq_cst")
    b.cbranch(b.icmp_signed("!=", again, seen), unpark, parked)
    b = ir.IRBuilder(unpark)
    b.store_atomic(ir.Constant(_I64, 0), word(b, slot, PARKED), "seq_cst", 8)
    seen.add_incoming(seen, unpark)
    turns.add_incoming(ir.Constant(_I64, 0), unpark)
    b.branch(loop)
    b = ir.IRBuilder(parked)
    b.ret(ir.Constant(_I64, 0))
    b = ir.IRBuilder(stop)
    b.ret(ir.Constant(_I64, -1))

    # ---- post ---------------------------------------------------------------------------
    post = ir.Function(module, ir.FunctionType(_I64, [_PTR, _I64, _I64, _I64, _I64]), "tpp_pool_post")
    slot, fn_addr, args_addr, start, end = post.args
    b = ir.IRBuilder(post.append_basic_block("entry"))
    for index, value in ((FN, fn_addr), (ARGS, args_addr), (START, start), (END, end)):
        b.store(value, word(b, slot, index))
    job = b.add(b.load(word(b, slot, POSTED), typ=_I64), ir.Constant(_I64, 1))
    b.store_atomic(job, word(b, slot, POSTED), "seq_cst", 8)
    b.fence("seq_cst")
    b.ret(load(b, word(b, slot, PARKED), "seq_cst"))

    # ---- wait ---------------------------------------------------------------------------
    wait = ir.Function(module, ir.FunctionType(ir.VoidType(), [_PTR]), "tpp_pool_wait")
    slot, = wait.args
    entry, loop, done = (wait.append_basic_block(n) for n in ("entry", "loop", "done"))
    b = ir.IRBuilder(entry)
    target_job = b.load(word(b, slot, POSTED), typ=_I64)
    b.branch(loop)
    b = ir.IRBuilder(loop)
    waited = b.phi(_I64)
    waited.add_incoming(ir.Constant(_I64, 0), entry)
    more = relax_after(b, waited)
    waited.add_incoming(more, b.block)
    finished = load(b, word(b, slot, DONE), "acquire")
    b.cbranch(b.icmp_signed("==", finished, target_job), done, loop)
    b = ir.IRBuilder(done)
    b.ret_void()


def give_way(module: ir.Module, b: ir.IRBuilder) -> None:
    """Call sched_yield() (libc, resolved in the process like malloc): a spinning thread
    lets a runnable one have its CPU; with a CPU free it returns at once (~1 us)."""
    fn = module.globals.get("sched_yield") or ir.Function(module, ir.FunctionType(ir.IntType(32), []),
                                                            "sched_yield")
    b.call(fn, [])


_SYMBOLS = ("tpp_pool_serve", "tpp_pool_post", "tpp_pool_wait")
_native = None
_native_lock = threading.Lock()


def _functions():
    """(serve, post, wait) as cffi functions, compiled once per process."""
    global _native
    with _native_lock:
        if _native is None:
            from .jit import compiler
            from .jit.targets import Target
            host = Target.host()
            module = ir.Module(name="tpp_pool")
            module.triple = host.triple
            spec = host.intrinsic("spin_pause")
            _emit(module, spec.partition("|")[0] if spec else None)
            obj = compiler.emit_object(compiler.optimise(str(module), host), host)
            found = compiler.load_object(obj, host, list(_SYMBOLS))
            _native = (ffi.cast("int64_t (*)(int64_t *, int64_t)", found["tpp_pool_serve"]),
                       ffi.cast("int64_t (*)(int64_t *, int64_t, int64_t, int64_t, int64_t)",
                                found["tpp_pool_post"]),
                       ffi.cast("void (*)(int64_t *)", found["tpp_pool_wait"]))
    return _native


class _Worker:
    def __init__(self, serve):
        raw = np.zeros(SLOT_WORDS + 8, np.int64)
        start = (-raw.ctypes.data % 64) // 8          # the slot starts on a cache line
        self.words = raw[start:start + SLOT_WORDS]
        self.slot = ffi.cast("int64_t *", self.words.ctypes.data)
        self.wake = threading.Event()
        self.thread = threading.Thread(target=self._loop, args=(serve,), name="tpp-worker", daemon=True)
        self.thread.start()

    def _loop(self, serve) -> None:
        while serve(self.slot, SPINS) == 0:          # cffi releases the GIL while it spins
            self.wake.wait()
            self.wake.clear()


_lock = threading.Lock()
_workers: list[_Worker] = []


def threads() -> int:
    return config.get().num_threads


def _take(count: int, serve) -> list[_Worker]:
    """`count` workers, started on first use. The pool's callers must not overlap: a
    worker runs one job at a time (run() holds _run_lock)."""
    with _lock:
        while len(_workers) < count:
            _workers.append(_Worker(serve))
        return _workers[:count]


_run_lock = threading.Lock()


def _forget_in_child() -> None:
    """After fork, in the child: no worker threads exist there, and a lock held by a thread
    of the parent (a run in progress, a worker being started) would never be released."""
    global _workers, _lock, _run_lock, _native_lock
    _workers = []
    _lock, _run_lock, _native_lock = threading.Lock(), threading.Lock(), threading.Lock()


os.register_at_fork(after_in_child=_forget_in_child)


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
    The calling thread takes the first share itself. Calls from several threads at once
    take turns for the workers."""
    parts = shares(total, workers or threads())
    if len(parts) == 1:
        fn(args, 0, total)
        return
    serve, post, wait = _functions()
    fn_addr = int(ffi.cast("intptr_t", fn))
    args_addr = int(ffi.cast("intptr_t", args))
    with _run_lock:
        helpers = _take(len(parts) - 1, serve)
        for worker, (s, e) in zip(helpers, parts[1:]):
            if post(worker.slot, fn_addr, args_addr, s, e):
                worker.wake.set()
        fn(args, *parts[0])
        for worker in helpers:
            wait(worker.slot)


def run_team(fn, args, count: int) -> None:
    """Run f(args, k, count) for k = 0 .. count-1 at once, one thread each: a
    composite's team (its barriers need every member running). The calling thread is
    member 0."""
    if count <= 1:
        fn(args, 0, 1)
        return
    serve, post, wait = _functions()
    fn_addr = int(ffi.cast("intptr_t", fn))
    args_addr = int(ffi.cast("intptr_t", args))
    with _run_lock:
        helpers = _take(count - 1, serve)
        for k, worker in enumerate(helpers, 1):
            if post(worker.slot, fn_addr, args_addr, k, count):
                worker.wake.set()
        fn(args, 0, count)
        for worker in helpers:
            wait(worker.slot)
