"""Binary kinds against their float64 numpy references: every kind with every
broadcast mode for each input (none, row, col, scalar), every dtype, the
accepted operand forms ((1, n) or (n,) rows, () arrays or Python numbers for
scalars), IEEE special values, views, in-place use and hypothesis shapes."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import tpp
from tpp.kernels import binary as binary_refs
from tpp.kernels import eltwise

from tensors import (REMAINDER_SHAPE, SHAPES, STRIDED, CONTIGUOUS, Domain, Layout, blank, grid, layouts,
                     magnitude, place, seeds, shapes, uniform, values)
from tolerances import DTYPES, EXACT, Tol, assert_close, tolerance

MODES = ["none", "row", "col", "scalar"]


@dataclass(frozen=True)
class Case:
    kind: str
    a: Domain
    b: Domain
    compare: bool = False      # bool mask out, must equal numpy exactly


ARITH = uniform(-10, 10)
TIES = grid(-2, 2, nan_fraction=0.1)      # equal pairs and NaNs: what compares and max/min must get right
CASES = {c.kind: c for c in [
    Case("add", ARITH, ARITH),
    Case("sub", ARITH, ARITH),
    Case("mul", ARITH, ARITH),
    Case("div", ARITH, magnitude(0.1, 10, signed=True)),
    Case("max", TIES, TIES),
    Case("min", TIES, TIES),
    *(Case(k, TIES, TIES, compare=True) for k in ("gt", "ge", "lt", "le", "eq", "ne")),
]}


def operand_shape(mode: str, m: int, n: int, flat_row: bool = False) -> tuple:
    return {"none": (m, n), "row": (n,) if flat_row else (1, n), "col": (m, 1), "scalar": ()}[mode]


def out_dtype(case: Case, dtype) -> np.dtype:
    return np.dtype(np.bool_) if case.compare else np.dtype(dtype)


def _inputs(case: Case, rng, mode_a, mode_b, shape, dtype, flat_row_a=True):
    m, n = shape
    a = values(case.a, rng, operand_shape(mode_a, m, n, flat_row=flat_row_a), dtype)
    b = values(case.b, rng, operand_shape(mode_b, m, n), dtype)
    return a, b


def _check(k, case: Case, got, a, b, dtype, what: str):
    m, n = k.descriptor.m, k.descriptor.n
    ref = k.reference(a, b)
    if case.compare:
        assert got.dtype == np.bool_ and got.shape == (m, n), what
        bad = np.argwhere(got != ref)
        assert bad.size == 0, f"{what}: {len(bad)} wrong, first at {tuple(bad[0])}"
    else:
        assert got.dtype == dtype and got.shape == (m, n), what
        assert_close(got, ref, tolerance(EXACT, dtype), inputs=[a, b], what=what)


def _params():
    grid_ = [("f32", s) for s in SHAPES] + [("bf16", REMAINDER_SHAPE), ("f64", REMAINDER_SHAPE)]
    return [pytest.param(kind, ma, mb, dt, shape, id=f"{kind}-{ma}-{mb}-{dt}-{shape[0]}x{shape[1]}")
            for dt, shape in grid_ for kind in CASES for ma in MODES for mb in MODES]


# ---- the catalog ---------------------------------------------------------------------------
def test_every_binary_kind_has_a_case():
    assert set(CASES) == set(tpp.BINARY_KINDS)


@pytest.mark.parametrize("kind", list(CASES))
def test_reference_is_importable_by_kind_name(kind, rng):
    a, b = rng.uniform(-3, 3, (2, 3, 5))
    np.testing.assert_array_equal(tpp.binary(kind, 3, 5).reference(a, b), getattr(binary_refs, kind)(a, b))


@pytest.mark.parametrize("alias, kind", [("maximum", "max"), ("minimum", "min"), ("multiply", "mul"),
                                         ("subtract", "sub"), ("divide", "div")])
def test_aliases_dispatch_the_same_kernel(alias, kind):
    assert tpp.binary(alias, 3, 5) is tpp.binary(kind, 3, 5)


# ---- numerics -------------------------------------------------------------------------------
@pytest.mark.parametrize("kind, mode_a, mode_b, dt, shape", _params())
def test_matches_reference(kind, mode_a, mode_b, dt, shape, rng):
    case, dtype = CASES[kind], DTYPES[dt]
    k = tpp.binary(kind, *shape, dtype=dt, broadcast=(mode_a, mode_b))
    a, b = _inputs(case, rng, mode_a, mode_b, shape, dtype)
    _check(k, case, k(a, b), a, b, dtype, f"{kind} {mode_a}/{mode_b} {dt} {shape}")


def test_single_mode_applies_to_the_second_input(rng):
    k = tpp.binary("sub", 4, 6, broadcast="col")
    assert (k.descriptor.bcast_a.value, k.descriptor.bcast_b.value) == ("full", "col")
    a, b = rng.uniform(-1, 1, (4, 6)).astype(np.float32), rng.uniform(-1, 1, (4, 1)).astype(np.float32)
    np.testing.assert_array_equal(k(a, b), a - b)


@pytest.mark.parametrize("form", [(1, 37), (37,)])
def test_row_operand_forms(form, rng):
    a = rng.uniform(-1, 1, REMAINDER_SHAPE).astype(np.float32)
    row = rng.uniform(-1, 1, form).astype(np.float32)
    np.testing.assert_array_equal(tpp.binary("add", *REMAINDER_SHAPE, broadcast="row")(a, row), a + row)
    np.testing.assert_array_equal(
        tpp.binary("add", *REMAINDER_SHAPE, broadcast=("row", "none"))(row, a), row + a)


@pytest.mark.parametrize("form", ["float", "int", "0-d array", "scalar of the dtype", "np.float64"])
@pytest.mark.parametrize("dt", ["f32", "bf16"])
def test_scalar_operand_forms(form, dt, rng):
    """A scalar operand may be a 0-d array of the kernel's dtype or a number (Python's,
    or a numpy scalar such as np.float32(x) / ml_dtypes.bfloat16(x)), converted to the
    kernel's dtype as numpy's astype would."""
    dtype = DTYPES[dt]
    scalar = {"float": 2.5, "int": -3, "0-d array": np.array(1.5, dtype),
              "scalar of the dtype": dtype.type(0.75), "np.float64": np.float64(0.1)}[form]
    a = values(uniform(-4, 4), rng, REMAINDER_SHAPE, dtype)
    k = tpp.binary("mul", *REMAINDER_SHAPE, dtype=dt, broadcast="scalar")
    got = k(a, scalar)
    expected = a.astype(np.float64) * np.asarray(scalar).astype(dtype).astype(np.float64)
    assert_close(got, expected, tolerance(EXACT, dtype), inputs=[a], what=f"mul by {scalar!r}")
    got = tpp.binary("sub", *REMAINDER_SHAPE, dtype=dt, broadcast=("scalar", "none"))(scalar, a)
    expected = np.asarray(scalar).astype(dtype).astype(np.float64) - a.astype(np.float64)
    assert_close(got, expected, tolerance(EXACT, dtype), inputs=[a], what=f"{scalar!r} minus a")


SPECIALS = np.array([0.0, -0.0, 1.0, -1.0, np.inf, -np.inf, np.nan, 3.0e38, -3.0e38, 1e-45, 1e-40])


@pytest.mark.parametrize("kind", list(CASES))
@pytest.mark.parametrize("dt", ["f32", "f64"])
def test_ieee_special_values(kind, dt):
    """Every pair of special values (inf - inf, 0/0, x/0, NaN compares, max with NaN,
    overflow, subnormals): exactly numpy's IEEE result in the same dtype."""
    dtype = DTYPES[dt]
    a = np.repeat(SPECIALS, SPECIALS.size).reshape(SPECIALS.size, SPECIALS.size).astype(dtype)
    b = np.ascontiguousarray(a.T)
    with np.errstate(all="ignore"):
        got, expected = tpp.binary(kind, *a.shape, dtype=dt)(a, b), getattr(binary_refs, kind)(a, b)
    assert got.dtype == expected.dtype
    assert_close(got, expected, Tol(0.0), inputs=[a, b], what=f"{kind} {dt} special values")


@pytest.mark.parametrize("kind", ["add", "div", "max", "lt"])
@pytest.mark.parametrize("mode_a, mode_b", [("none", "none"), ("col", "none"), ("none", "row"),
                                            ("row", "col"), ("none", "col")])
def test_views_in_and_out(kind, mode_a, mode_b, rng):
    case, (m, n) = CASES[kind], REMAINDER_SHAPE
    k = tpp.binary(kind, m, n, broadcast=(mode_a, mode_b))
    a, b = _inputs(case, rng, mode_a, mode_b, (m, n), np.float32, flat_row_a=False)
    pa, pb = place(a, STRIDED), place(b, STRIDED)
    out = blank((m, n), out_dtype(case, np.float32), STRIDED)
    assert k(pa.view, pb.view, out=out.view) is out.view
    _check(k, case, out.view, a, b, np.float32, f"{kind} {mode_a}/{mode_b} views")
    out.assert_untouched_outside()
    pa.assert_unchanged()
    pb.assert_unchanged()


@pytest.mark.parametrize("kind", ["add", "sub", "mul", "div", "max", "min"])
@pytest.mark.parametrize("dt", ["f32", "bf16", "f64"])
@pytest.mark.parametrize("which", ["a", "b"])
def test_in_place(kind, dt, which, rng):
    """out may be exactly either full input (also a strided view); the other may be broadcast."""
    case, dtype, (m, n) = CASES[kind], DTYPES[dt], REMAINDER_SHAPE
    modes = ("none", "row") if which == "a" else ("col", "none")
    k = tpp.binary(kind, m, n, dtype=dt, broadcast=modes)
    a, b = _inputs(case, rng, *modes, (m, n), dtype)
    expected = k.reference(a, b)
    pa, pb = place(a, STRIDED), place(b, STRIDED)
    target = pa if which == "a" else pb
    assert k(pa.view, pb.view, out=target.view) is target.view
    assert_close(target.view, expected, tolerance(EXACT, dtype), inputs=[a, b], what=f"{kind} in place")
    target.assert_untouched_outside()


def test_both_inputs_the_same_array(rng):
    a = rng.uniform(-3, 3, REMAINDER_SHAPE).astype(np.float32)
    np.testing.assert_array_equal(tpp.binary("mul", *REMAINDER_SHAPE)(a, a), a * a)
    x = a.copy()
    tpp.binary("add", *REMAINDER_SHAPE)(x, x, out=x)
    np.testing.assert_array_equal(x, a + a)


# ---- large outputs (streaming stores, aligned head peel) ----------------------------------------
@pytest.mark.parametrize("kind, dt, mode_b", [("add", "f32", "row"), ("mul", "bf16", "scalar"),
                                              ("sub", "f64", "col"), ("gt", "f32", "none")])
@pytest.mark.parametrize("layout", [CONTIGUOUS, Layout(col_off=1, pad=2)], ids=str)
def test_large_outputs(kind, dt, mode_b, layout, rng):
    """Operands over the streaming threshold (a share of this machine's last-level cache:
    non-temporal stores in the main loop), also as a view whose rows start off the vector
    alignment."""
    case, dtype = CASES[kind], DTYPES[dt]
    weight = np.dtype(dtype).itemsize * (2 if mode_b == "none" else 1) + out_dtype(case, dtype).itemsize / 2
    share = eltwise.STREAM_SHARE * tpp.jit.host.last_level().size       # see eltwise.streams
    shape = (int(share // (1037 * weight)) + 3, 1037)
    k = tpp.binary(kind, *shape, dtype=dt, broadcast=("none", mode_b))
    # bf16: a truncating store (vpmovdw); an output vector under 16 bytes (AVX2's 8 bools)
    # has no non-temporal form
    vector_bytes = k.target.vector_bits // 32 * out_dtype(case, dtype).itemsize
    if out_dtype(case, dtype) != np.dtype(DTYPES["bf16"]) and vector_bytes >= 16:
        assert "vmovnt" in k.asm, "the tile does not take the streaming stores"
    a, b = _inputs(case, rng, "none", mode_b, shape, dtype)
    out = blank(shape, out_dtype(case, dtype), layout)
    k(a, b, out=out.view)
    _check(k, case, out.view, a, b, dtype, f"{kind} {dt} large")
    out.assert_untouched_outside()
    if not case.compare:                      # and in place over a view
        pa = place(a, layout)
        k(pa.view, b, out=pa.view)
        _check(k, case, pa.view, a, b, dtype, f"{kind} {dt} large in place")
        pa.assert_untouched_outside()


# ---- hypothesis: any shape, any layout --------------------------------------------------------
@given(kind=st.sampled_from(["add", "div", "max", "ge", "ne"]), dt=st.sampled_from(["f32", "bf16"]),
       modes=st.tuples(st.sampled_from(MODES), st.sampled_from(MODES)), shape=shapes,
       la=layouts, lb=layouts, lo=layouts, in_place=st.sampled_from([None, "a", "b"]), seed=seeds)
def test_any_shape_and_layout(kind, dt, modes, shape, la, lb, lo, in_place, seed):
    case, dtype = CASES[kind], DTYPES[dt]
    k = tpp.binary(kind, *shape, dtype=dt, broadcast=modes)
    rng = np.random.default_rng(seed)
    a, b = _inputs(case, rng, *modes, shape, dtype, flat_row_a=bool(seed & 1))
    pa, pb = place(a, la), place(b, lb)
    full = {"a": modes[0] == "none", "b": modes[1] == "none"}
    if in_place and full[in_place] and not case.compare:
        out = pa if in_place == "a" else pb
    else:
        in_place, out = None, blank(shape, out_dtype(case, dtype), lo)
    assert k(pa.view, pb.view, out=out.view) is out.view
    _check(k, case, out.view, a, b, dtype, f"{kind} {modes} {dt} {shape} a {la} b {lb} out {in_place or lo}")
    out.assert_untouched_outside()
    for p in (pa, pb):
        if p is not out:
            p.assert_unchanged()
