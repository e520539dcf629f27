"""Gather rows / scatter-add rows by index (kernels/gather.py): against a float64 numpy
reference and, bit for bit, against numpy doing the same additions in the same order, on
every x86 target (hypothesis over m, n, strides, index widths, dtypes, repeated indices,
m = 0); bad indices (negative, extent, huge int64) refused with out untouched; the code
for every CPU target; the descriptor's checks; and the primitive inlined in a composite."""
from __future__ import annotations

import re
from dataclasses import FrozenInstanceError

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import tpp
from tpp import compose
from tpp.errors import DescriptorError, DTypeError
from tpp.jit.loops import i64
from tpp.jit.types import DType
from targets import GPU, SVE, X86, compile_only, require
from tolerances import DTYPES, EPS

INDEX = {"i32": np.int32, "i64": np.int64}


def make(kind, m, n, extent, dtype, index_dtype, target=None):
    maker = tpp.gather if kind == "gather" else tpp.scatter_add
    return maker(m, n, extent, dtype, index_dtype=index_dtype, target=target)


def strided(rng, rows, n, pad, dt):
    """A rows x n view with row stride n + pad of random values."""
    base = rng.uniform(-4, 4, (rows, n + pad)).astype(dt)
    return base[:, :n]


def sequential(x, idx, out):
    """out[idx[i]] += x[i] one row at a time, each addition in f32 (f64 for f64) and
    rounded to out's dtype: what the kernel does, in its order."""
    out = out.copy()
    wide = np.float64 if out.dtype == np.float64 else np.float32
    for i, j in enumerate(idx):
        out[j] = (out[j].astype(wide) + x[i].astype(wide)).astype(out.dtype)
    return out


@st.composite
def cases(draw):
    kind = draw(st.sampled_from(["gather", "scatter_add"]))
    m = draw(st.integers(0, 67))
    n = draw(st.one_of(st.integers(1, 67), st.sampled_from([128, 200, 333, 1030])))
    extent = draw(st.integers(1, 40))
    dtype = draw(st.sampled_from(["f32", "bf16", "f64"]))
    return dict(kind=kind, m=m, n=n, extent=extent, dtype=dtype,
                index_dtype=draw(st.sampled_from(["i32", "i64"])),
                pad_x=draw(st.sampled_from([0, 0, 1, 5, 16])), pad_out=draw(st.sampled_from([0, 0, 3, 16])),
                few=draw(st.booleans()), seed=draw(st.integers(0, 2 ** 32 - 1)))


@pytest.mark.parametrize("target", X86)
@settings(max_examples=80, deadline=None)
@given(case=cases())
def test_matches_the_reference(target, case):
    kind, m, n, extent, dtype = (case[k] for k in ("kind", "m", "n", "extent", "dtype"))
    k = require(make(kind, m, n, extent, dtype, case["index_dtype"], target))
    rng, dt = np.random.default_rng(case["seed"]), DTYPES[dtype]
    # few: indices from a handful of rows, so repeats are many (scatter_add accumulates them)
    high = min(extent, 3) if case["few"] else extent
    idx = rng.integers(0, high, m).astype(INDEX[case["index_dtype"]])
    if kind == "gather":
        x = strided(rng, extent, n, case["pad_x"], dt)
        out = strided(rng, m, n, case["pad_out"], dt) if m else None
        got = k(x, idx, out=out) if out is not None else k(x, idx)
        assert got.shape == (m, n) and (out is None or got is out)
        np.testing.assert_array_equal(got.view(np.uint8), x[idx].view(np.uint8))    # bits moved
        np.testing.assert_array_equal(got.astype(np.float64), k.reference(x, idx))
        return
    x = strided(rng, m, n, case["pad_x"], dt)
    out = strided(rng, extent, n, case["pad_out"], dt)
    before = out.copy()
    assert k(x, idx, out) is out
    np.testing.assert_array_equal(out.view(np.uint8), sequential(x, idx, before).view(np.uint8))
    # against float64: one rounding per addition, of at most the row's magnitude so far
    ref = k.reference(x, idx, before)
    hits = np.bincount(idx.astype(np.int64), minlength=extent)[:, None] if m else np.zeros((extent, 1))
    mag = np.abs(before.astype(np.float64)).copy()
    if m:
        np.add.at(mag, idx.astype(np.int64), np.abs(x.astype(np.float64)))
    unit = EPS[dt] / 2 + (EPS[np.dtype(np.float32)] if dt == DTYPES["bf16"] else 0)
    assert np.all(np.abs(out.astype(np.float64) - ref) <= (hits + 1) * unit * mag + 1e-300)


@pytest.mark.parametrize("target", X86)
def test_repeated_indices_accumulate(target):
    k = require(tpp.scatter_add(200, 19, 3, "f32", target=target))
    idx = np.array([1] * 150 + [2] * 50, np.int64)
    out = np.zeros((3, 19), np.float32)
    k(np.ones((200, 19), np.float32), idx, out)
    assert (out[0] == 0).all() and (out[1] == 150).all() and (out[2] == 50).all()


def test_bf16_scatter_add_rounds_each_addition():
    """bf16: f32 addition, rounded to bf16 per addition: 256 + 1 stays 256, 256 times."""
    k = require(tpp.scatter_add(256, 5, 1, "bf16", index_dtype="i32"))
    bf = DTYPES["bf16"]
    out = np.full((1, 5), 256, bf)
    k(np.ones((256, 5), bf), np.zeros(256, np.int32), out)
    assert (out.astype(np.float32) == 256).all()


BAD = {"i64": [-1, -2 ** 63, 2 ** 62, 2 ** 63 - 1, "extent", 2 ** 32], "i32": [-1, -2 ** 31, 2 ** 31 - 1, "extent"]}


@pytest.mark.parametrize("target", X86)
@pytest.mark.parametrize("kind", ["gather", "scatter_add"])
@pytest.mark.parametrize("index_dtype", ["i32", "i64"])
@pytest.mark.parametrize("at", [0, 13, 40])
def test_bad_indices_are_refused_and_nothing_is_touched(target, kind, index_dtype, at, rng):
    m, n, extent = 41, 33, 7
    k = require(make(kind, m, n, extent, "f32", index_dtype, target))
    for value in BAD[index_dtype]:
        bad = extent if value == "extent" else value
        idx = rng.integers(0, extent, m).astype(INDEX[index_dtype])
        idx[at] = bad
        idx[-1] = -1 if at != 40 else idx[-1]          # a later bad one: the first is named
        x = rng.standard_normal((extent if kind == "gather" else m, n)).astype(np.float32)
        out = rng.standard_normal((m if kind == "gather" else extent, n)).astype(np.float32)
        before = out.copy()
        with pytest.raises(tpp.IndexRangeError, match=rf"idx\[{at}\] = {bad} is out of range .* {extent} rows"):
            k(x, idx, out) if kind == "scatter_add" else k(x, idx, out=out)
        np.testing.assert_array_equal(out, before)
        assert isinstance(tpp.IndexRangeError("x"), IndexError)


@pytest.mark.parametrize("kind", ["gather", "scatter_add"])
def test_a_bad_index_in_the_check_loops_tail_and_body(kind):
    """Lanes of the vector check: every position of a 37-index call (16 + 16 + 5 on AVX-512)."""
    k = require(make(kind, 37, 4, 9, "f32", "i32"))
    x = np.zeros((9 if kind == "gather" else 37, 4), np.float32)
    for at in range(37):
        idx = np.zeros(37, np.int32)
        idx[at] = 9
        out = np.zeros((37 if kind == "gather" else 9, 4), np.float32)
        with pytest.raises(tpp.IndexRangeError, match=rf"idx\[{at}\]"):
            k(x, idx, out) if kind == "scatter_add" else k(x, idx, out=out)


def test_empty_m():
    g = require(tpp.gather(0, 5, 3))
    assert g(np.zeros((3, 5), np.float32), np.zeros(0, np.int64)).shape == (0, 5)
    s = tpp.scatter_add(0, 5, 3, "bf16", index_dtype="i32")
    out = np.ones((3, 5), DTYPES["bf16"])
    assert s(np.zeros((0, 5), DTYPES["bf16"]), np.zeros(0, np.int32), out) is out and (out == 1).all()
    with pytest.raises(DTypeError, match="'idx'"):
        g(np.zeros((3, 5), np.float32), np.zeros(0, np.int32))
    with pytest.raises(tpp.ShapeError, match="'x'"):
        g(np.zeros((4, 5), np.float32), np.zeros(0, np.int64))


def test_call_errors_name_the_argument():
    g = require(tpp.gather(4, 5, 3))
    with pytest.raises(DTypeError, match="'idx'"):
        g(np.zeros((3, 5), np.float32), np.zeros(4, np.int32))
    with pytest.raises(tpp.ShapeError, match="'x'"):
        g(np.zeros((4, 5), np.float32), np.zeros(4, np.int64))
    with pytest.raises(TypeError, match="accumulates"):
        tpp.scatter_add(4, 5, 3)(np.zeros((4, 5), np.float32), np.zeros(4, np.int64))
    s = tpp.scatter_add(3, 5, 6)
    buf = np.zeros((6, 5), np.float32)
    with pytest.raises(tpp.AliasError):
        s(buf[:3], np.zeros(3, np.int64), buf)


# ---- the code ---------------------------------------------------------------------------
def _body(asm: str) -> list[str]:
    return [line for line in asm.splitlines() if line.startswith("\t") and not line.strip().startswith(".")]


@pytest.mark.parametrize("target, reg", [("x86-avx512", "zmm"), ("x86-avx2", "ymm")])
@pytest.mark.parametrize("kind", ["gather", "scatter_add"])
def test_rows_move_in_full_vectors_and_indices_are_checked_in_vectors(target, reg, kind):
    assert target in X86
    k = tpp.get_kernel(tpp.gather_desc(1000, 64, 500, kind=kind), compile_only(target))
    body = _body(k.asm)
    moves = [line for line in body if reg in line and ("vmovups" in line or "vaddps" in line)]
    assert len(moves) >= 64 * 4 // (64 if reg == "zmm" else 32), moves    # the row's vectors
    assert any("vpcmp" in line and reg in line for line in body)            # the index check
    assert not any("vgather" in line or "vscatter" in line for line in body)


@pytest.mark.parametrize("target", SVE)
@pytest.mark.parametrize("kind", ["gather", "scatter_add"])
@pytest.mark.parametrize("dtype", ["f32", "bf16"])
def test_compiles_for_sve(target, kind, dtype):
    k = tpp.get_kernel(tpp.gather_desc(50, 70, 100, dtype, kind=kind), compile_only(target))
    # vectors: SVE registers, or NEON ones where LLVM prefers them (128-bit SVE)
    assert any(re.search(r"\bz\d+\.[sdh]\b|\bv\d+\.(4s|2d|8h)\b", line) for line in _body(k.asm))


@pytest.mark.parametrize("target", GPU)
def test_gpus_are_refused_with_the_reason(target):
    with pytest.raises(tpp.TargetError, match="atomic"):
        tpp.get_kernel(tpp.gather_desc(9, 16, 3), compile_only(target))


# ---- the descriptor ---------------------------------------------------------------------
@pytest.mark.parametrize("make_desc, error, match", [
    (lambda: tpp.gather_desc(4, 5, 3, kind="scatter"), DescriptorError, "unknown kind"),
    (lambda: tpp.gather_desc(-1, 5, 3), DescriptorError, "m must be"),
    (lambda: tpp.gather_desc(True, 5, 3), DescriptorError, "m must be"),
    (lambda: tpp.gather_desc(4, 0, 3), DescriptorError, "n must be"),
    (lambda: tpp.gather_desc(4, 5, 0), DescriptorError, "extent must be"),
    (lambda: tpp.gather_desc(4, 5, 2 ** 31), DescriptorError, "extent=2147483648 is too large"),
    (lambda: tpp.gather_desc(4, 5, 3, "i32"), DTypeError, "dtype i32 is not supported"),
    (lambda: tpp.gather_desc(4, 5, 3, index_dtype="f32"), DTypeError, "index_dtype"),
    (lambda: tpp.gather_desc(4, 5, 3, index_dtype="i8"), DTypeError, "index_dtype"),
    (lambda: tpp.gather_desc(4, 2 ** 30, 2 ** 30 - 1), DescriptorError, "more than the limit"),
])
def test_bad_descriptors_name_the_field(make_desc, error, match):
    with pytest.raises(error, match=match):
        make_desc()


def test_descriptor_is_a_cache_key():
    a = tpp.gather_desc(4, 5, 3, index_dtype=np.int32)
    assert a == tpp.gather_desc(np.int64(4), 5, 3, index_dtype="i32") and hash(a) == hash(tpp.GatherDesc(
        "gather", 4, 5, 3, DType.F32, DType.I32))
    assert a != tpp.gather_desc(4, 5, 3, kind="scatter_add") and a != tpp.gather_desc(4, 5, 4, index_dtype="i32")
    assert type(a.m) is int
    with pytest.raises(FrozenInstanceError):
        a.m = 5
    assert tpp.gather(4, 5, 3).kernel is tpp.gather(4, 5, 3).kernel


# ---- inlined in a composite -------------------------------------------------------------
class _Desc(compose.CompositeDesc):
    """Rows of x gathered by idx in tiles of `tile` indices, one gather primitive each
    (inlined), each tile's status word in status[t]; then scatter-added back into acc."""

    def __init__(self, m, n, extent, tile):
        self.key = (m, n, extent, tile)

    def __hash__(self):
        return hash(self.key)

    def __eq__(self, other):
        return isinstance(other, _Desc) and self.key == other.key

    def composite(self, target):
        m, n, extent, tile = self.key
        gather = tpp.gather_desc(tile, n, extent, index_dtype="i32")
        scatter = tpp.gather_desc(tile, n, extent, index_dtype="i32", kind="scatter_add")

        def body(ctx):
            t = ctx.index["t"]
            row = ctx.b.mul(t, i64(tile))
            idx = (ctx.tensor("idx").at(row), 1)
            out = ctx.tensor("out").arg(row, 0)
            ctx.call(ctx.primitive(gather), [ctx.tensor("x").arg(0, 0), idx, out, (ctx.tensor("status").at(t), 1)])
            ctx.call(ctx.primitive(scatter), [out, idx, ctx.tensor("acc").arg(0, 0),
                                              (ctx.tensor("status2").at(t), 1)])
        return compose.Composite((compose.Tensor("x", DType.F32, (extent, n)),
                                  compose.Tensor("idx", DType.I32, (m,)),
                                  compose.Tensor("out", DType.F32, (m, n), output=True),
                                  compose.Tensor("acc", DType.F32, (extent, n), output=True),
                                  compose.Tensor("status", DType.I64, (m // tile,), output=True),
                                  compose.Tensor("status2", DType.I64, (m // tile,), output=True)),
                                 (compose.Loop("t", m // tile, (body,)),))


def test_the_primitive_inlines_in_a_composite(rng):
    m, n, extent, tile = 96, 40, 50, 32
    x = rng.standard_normal((extent, n)).astype(np.float32)
    idx = rng.integers(0, extent, m).astype(np.int32)
    idx[70] = extent + 3                         # the third tile's bad index: that tile stops
    out, acc = np.zeros((m, n), np.float32), np.zeros((extent, n), np.float32)
    status, status2 = np.zeros(m // tile, np.int64), np.zeros(m // tile, np.int64)
    prog = compose.program("test gather composite", _Desc(m, n, extent, tile))
    compose.run_checked(None, (), prog, [x, idx, out, acc, status, status2], 1)
    assert status.tolist() == [tile, tile, 70 - 2 * tile] and status2.tolist() == status.tolist()
    np.testing.assert_array_equal(out[:64], x[idx[:64]])
    assert (out[64:] == 0).all()
    want = np.zeros((extent, n))
    np.add.at(want, idx[:64], x[idx[:64]].astype(np.float64))
    np.testing.assert_allclose(acc, want, rtol=1e-5, atol=1e-5)


def test_threads_calling_one_kernel_get_their_own_status(rng):
    """The status word is per thread: a bad call in one never fails a good one in another."""
    from concurrent.futures import ThreadPoolExecutor
    g = require(tpp.gather(8192, 16, 64))          # work enough that the call releases the GIL
    x = rng.standard_normal((64, 16)).astype(np.float32)
    good, bad = rng.integers(0, 64, 8192), rng.integers(0, 64, 8192)
    bad[8000] = 64

    def call(k):
        try:
            return "ok" if np.array_equal(g(x, good if k % 2 else bad), x[good]) else "wrong"
        except tpp.IndexRangeError:
            return "bad"
    with ThreadPoolExecutor(2) as pool:
        got = list(pool.map(call, range(400)))
    assert got == ["bad", "ok"] * 200


def test_a_python_list_is_refused_naming_the_argument():
    g = require(tpp.gather(2, 5, 3))
    with pytest.raises(TypeError, match="'idx' must be a numpy array"):
        g(np.zeros((3, 5), np.float32), [0, 1])
