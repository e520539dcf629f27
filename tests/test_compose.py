"""The composition layer on its own: composites written in the tests, each checking
one feature (tiles and their edges, data-driven extents, weighted shares, hooks
with carried state, scratch, partial results, barriers, the call path's checks)."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from llvmlite import ir

import tpp
from tpp import compose
from tpp.jit.loops import I64, i64
from tpp.jit.types import DType


@dataclass(frozen=True)
class Desc(compose.CompositeDesc):
    """A test composite: `build(target)` makes it; `key` tells descriptors apart."""
    key: tuple
    build: Callable = None

    def composite(self, target):
        return self.build(target)

    def __hash__(self):
        return hash(self.key)

    def __eq__(self, other):
        return isinstance(other, Desc) and self.key == other.key


def run(key, build, arrays, threads=1):
    prog = compose.program("test composite", Desc(key, build))
    compose.run_checked(None, (), prog, arrays, threads)
    return prog


def store_i64(ctx, name, value, *index):
    ctx.b.store(value, ctx.tensor(name).at(*index))


def test_tiles_get_code_for_their_sizes():
    # out[i] = the size of the tile that holds i: 7 for four tiles, then the last tile's 3
    n, tile = 31, 7
    out = np.zeros(n, np.int64)

    def build(target):
        def tile_body(ctx):
            inner = compose.Loop("e", ctx.size["i"], (lambda c: store_i64(
                c, "out", i64(c.size["i"]), c.b.add(c.start["i"], c.index["e"])),))
            ctx.run(inner)
        return compose.Composite((compose.Tensor("out", DType.I64, (n,), output=True),),
                                 (compose.Loop("i", n, (tile_body,), tile=tile, parallel=True),))
    for threads in (1, 2):
        out[:] = 0
        run(("tiles", n, tile), build, [out], threads)
        assert out.tolist() == [7] * 28 + [3] * 3


def test_sequential_tiles_and_collapsed_parallel_loops():
    # parallel (4 x 3 tiles of 2-D) with a sequential tiled loop inside: every element once
    m, n, k = 9, 10, 11
    out = np.zeros((m, n), np.int64)

    def build(target):
        def count(ctx):
            p = ctx.tensor("out").at(ctx.b.add(ctx.start["i"], ctx.index["ii"]), ctx.b.add(ctx.start["j"], ctx.index["jj"]))
            ctx.b.store(ctx.b.add(ctx.b.load(p, typ=I64), i64(ctx.size["k"])), p)

        def tile(ctx):
            ctx.run(compose.Loop("ii", ctx.size["i"], (compose.Loop("jj", ctx.size["j"], (
                compose.Loop("k", k, (count,), tile=4),)),)))
        loops = compose.Loop("i", m, (compose.Loop("j", n, (tile,), tile=3, parallel=True),), tile=4, parallel=True)
        return compose.Composite((compose.Tensor("out", DType.I64, (m, n), output=True),), (loops,))
    for threads in (1, 2):
        out[:] = 0
        prog = run(("collapsed",), build, [out], threads)
        assert (out == k).all()
    assert prog.max_threads == 3 * 4


def segment_rows(n: int):
    """out[row] = sum of x[indptr[row]:indptr[row + 1]] with a carried accumulator:
    data-driven extents, a hook before the inner loop (init) and after it (store)."""
    def build(target):
        def init(ctx):
            ctx.b.store(ir.Constant(ir.DoubleType(), 0.0), ctx.var("acc", ir.DoubleType()))

        def add(ctx):
            acc = ctx.var("acc", ir.DoubleType())
            ctx.b.store(ctx.b.fadd(ctx.b.load(acc, typ=ir.DoubleType()), ctx.load("x", ctx.index["j"])), acc)

        def finish(ctx):
            ctx.b.store(ctx.b.load(ctx.var("acc", ir.DoubleType()), typ=ir.DoubleType()),
                        ctx.tensor("out").at(ctx.index["row"]))

        def tid(ctx):
            ctx.b.store(ctx.tid, ctx.tensor("owner").at(ctx.index["row"]))
        inner = compose.Loop("j", start=lambda c: c.load("indptr", c.index["row"]),
                             stop=lambda c: c.load("indptr", c.b.add(c.index["row"], i64(1))), body=(add,))
        rows = compose.Loop("row", n, (init, inner, finish, tid), parallel=True, weight="indptr")
        return compose.Composite((compose.Tensor("indptr", DType.I64, (n + 1,)),
                                  compose.Tensor("x", DType.F64, (int(1e6),)),
                                  compose.Tensor("out", DType.F64, (n,), output=True),
                                  compose.Tensor("owner", DType.I64, (n,), output=True)), (rows,))
    return build


def test_data_driven_extents_and_hooks(rng):
    n = 500
    degree = rng.integers(0, 30, n)
    indptr = np.concatenate([[0], np.cumsum(degree)]).astype(np.int64)
    x = rng.standard_normal(int(1e6))
    out, owner = np.zeros(n), np.zeros(n, np.int64)
    run(("segment", n), segment_rows(n), [indptr, x, out, owner], 2)
    want = np.array([x[indptr[i]:indptr[i + 1]].sum() for i in range(n)])
    np.testing.assert_allclose(out, want, rtol=1e-12, atol=1e-12)


def test_weighted_shares_balance_the_nonzeros(rng):
    # a power-law row length: shares by count would give one thread most of the work
    n = 1000
    degree = np.zeros(n, np.int64)
    degree[:10] = 20000                               # ten heavy rows first
    degree[10:] = rng.integers(0, 5, n - 10)
    indptr = np.concatenate([[0], np.cumsum(degree)]).astype(np.int64)
    x = np.ones(int(1e6))
    out, owner = np.zeros(n), np.full(n, -1, np.int64)
    run(("segment", n), segment_rows(n), [indptr, x, out, owner], 2)
    np.testing.assert_array_equal(out, degree)
    assert set(owner.tolist()) == {0, 1} and (np.diff(owner) >= 0).all()     # contiguous shares
    cost = degree + 1
    shares = [cost[owner == t].sum() for t in (0, 1)]
    assert max(shares) <= cost.sum() / 2 + cost.max()   # within one row of even
    assert 4 <= (owner[:10] == 0).sum() <= 6            # by count, thread 0 would have all ten heavy rows


def test_partial_results_are_summed(rng):
    # column sums: each thread adds its rows into its own partial copy
    m, n = 333, 37
    x = rng.standard_normal((m, n)).astype(np.float32)
    out = np.full((1, n), np.nan, np.float32)

    def build(target):
        add = tpp.binary_desc("add", 1, n, "f32")

        def body(ctx):
            part = (ctx.buffer("part"), n)
            ctx.call(ctx.primitive(add), [part, ctx.tensor("x").arg(ctx.index["r"]), part])
        return compose.Composite((compose.Tensor("x", DType.F32, (m, n)),
                                  compose.Tensor("out", DType.F32, (1, n), output=True)),
                                 (compose.Loop("r", m, (body,), parallel=True),),
                                 (compose.Scratch("part", DType.F32, n, "partial", into="out"),))
    for threads in (1, 2):
        run(("partial", m, n), build, [x, out], threads)
        np.testing.assert_allclose(out[0], x.astype(np.float64).sum(0), rtol=1e-4, atol=1e-4)


def test_a_barrier_orders_the_phases(rng):
    # phase 2 reads, reversed, what the other thread wrote in phase 1
    n = 4096
    x = rng.standard_normal(n)
    mid, out = np.zeros(n), np.zeros(n)

    def build(target):
        def double(ctx):
            v = ctx.load("x", ctx.index["i"])
            ctx.b.store(ctx.b.fmul(v, ir.Constant(ir.DoubleType(), 2.0)), ctx.tensor("mid").at(ctx.index["i"]))

        def reverse(ctx):
            v = ctx.load("mid", ctx.b.sub(i64(n - 1), ctx.index["i"]))
            ctx.b.store(v, ctx.tensor("out").at(ctx.index["i"]))
        return compose.Composite((compose.Tensor("x", DType.F64, (n,)),
                                  compose.Tensor("mid", DType.F64, (n,), output=True),
                                  compose.Tensor("out", DType.F64, (n,), output=True)),
                                 (compose.Loop("i", n, (double,), parallel=True), compose.BARRIER,
                                  compose.Loop("i", n, (reverse,), parallel=True)))
    for _ in range(50):
        mid[:] = 0
        run(("barrier", n), build, [x, mid, out], 2)
        np.testing.assert_array_equal(out, 2 * x[::-1])
    # more threads than cores: spinners past pool.YIELD_AFTER turns give their CPU away
    # (the barrier's, the caller's wait and the idle workers'), so the team still meets
    for _ in range(5):
        mid[:] = 0
        run(("barrier", n), build, [x, mid, out], 4 * (os.cpu_count() or 2))
        np.testing.assert_array_equal(out, 2 * x[::-1])
    from tpp import pool
    from tpp.compose.emit import emit_composite
    module = ir.Module()
    emit_composite(module, "f", build(tpp.current_target()), tpp.current_target())
    pool_module = ir.Module()
    pool._emit(pool_module, None)
    assert "sched_yield" in str(module) and str(pool_module).count("call i32 @\"sched_yield\"") == 2


def scratch_composite(count: int):
    """out[i] = i, through a per-thread scratch buffer of `count` f64."""
    def build(target):
        def body(ctx):
            buf = ctx.buffer("buf")
            i = ctx.index["i"]
            slot = ctx.b.gep(buf, [ctx.b.srem(i, i64(count))], source_etype=ir.DoubleType())
            ctx.b.store(ctx.b.sitofp(i, ir.DoubleType()), slot)
            ctx.b.store(ctx.b.load(slot, typ=ir.DoubleType()), ctx.tensor("out").at(i))
        return compose.Composite((compose.Tensor("out", DType.F64, (100,), output=True),),
                                 (compose.Loop("i", 100, (body,), parallel=True),),
                                 (compose.Scratch("buf", DType.F64, count, "thread", "the test's buffer"),))
    return build


@pytest.mark.parametrize("count", [8, compose.STACK_BYTES // 8 + 1])     # stack, heap
def test_thread_scratch_on_stack_and_heap(count):
    out = np.zeros(100)
    for threads in (1, 2):
        run(("scratch", count), scratch_composite(count), [out], threads)
        np.testing.assert_array_equal(out, np.arange(100))


def test_scratch_exhaustion_raises_memory_error(run_python):
    code = """
import resource, numpy as np, tpp
from tpp import compose
import test_compose as t
soft, hard = resource.getrlimit(resource.RLIMIT_AS)
used = int(open("/proc/self/statm").read().split()[0]) * resource.getpagesize()
resource.setrlimit(resource.RLIMIT_AS, (used + (64 << 20), hard))
out = np.zeros(100)
for threads in (1, 2):
    try:
        t.run(("huge",), t.scratch_composite(1 << 28), [out], threads)     # 2 GB a thread
    except MemoryError as e:
        print("MemoryError", "2147483648 bytes of the test's buffer" in str(e))
t.run(("small",), t.scratch_composite(64), [out], 2)                  # the pool still works
print(bool((out == np.arange(100)).all()))
"""
    tests = str(Path(__file__).parent)
    got = run_python(code, env={"PYTHONPATH": tests + os.pathsep + os.environ.get("PYTHONPATH", "")})
    got = got.check().stdout.split()
    assert got == ["MemoryError", "True", "MemoryError", "True", "True"]


def test_the_call_path_checks_arrays():
    def build(target):
        return compose.Composite((compose.Tensor("x", DType.F32, (4, 5)),
                                  compose.Tensor("y", DType.F32, (4, 5), output=True)),
                                 (compose.Loop("i", 4, (lambda ctx: None,), parallel=True),))
    prog = compose.program("op", Desc(("checks",), build))
    x, y = np.zeros((4, 5), np.float32), np.zeros((4, 5), np.float32)
    assert prog.check([x, y])
    with pytest.raises(tpp.DTypeError, match="argument 'x' must have dtype float32"):
        prog.check([x.astype(np.float64), y])
    with pytest.raises(tpp.ShapeError, match=r"argument 'y' must have shape \(4, 5\)"):
        prog.check([x, y[:3]])
    with pytest.raises(tpp.ShapeError, match="element strides"):
        prog.check([np.zeros((4, 10), np.float32)[:, :5], y])
    with pytest.raises(tpp.AliasError, match="output 'y' overlaps 'x'"):
        prog.check([x, x])
    y.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        prog.check([x, y])
    with pytest.raises(TypeError, match="numpy array"):
        prog.check([[1.0], y])


def test_spec_errors():
    body = (lambda ctx: None,)
    with pytest.raises(ValueError, match="must stand in the top-level body"):
        compose.Composite((), (compose.Loop("i", 3, (compose.Loop("j", 3, body, parallel=True),)),))
    with pytest.raises(ValueError, match="barrier"):
        compose.Composite((), (compose.Loop("i", 3, (compose.BARRIER,)),))
    with pytest.raises(ValueError, match="only a parallel loop"):
        compose.Loop("i", 3, body, weight="w")
    with pytest.raises(ValueError, match="static extent or a start/stop range"):
        compose.Loop("i", 3, body, start=lambda c: i64(0), stop=lambda c: i64(1))
    with pytest.raises(ValueError, match="no tensor 'w'"):
        compose.Composite((), (compose.Loop("i", 3, body, parallel=True, weight="w"),))
    with pytest.raises(ValueError, match="unique"):
        compose.Composite((compose.Tensor("x", DType.F32, (3,)),), (), (compose.Scratch("x", DType.F32, 3),))
    with pytest.raises(ValueError, match="summed into"):
        compose.Scratch("p", DType.F32, 3, "partial")
