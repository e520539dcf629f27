"""Hostile descriptor fields, one at a time, for every family: sizes, strides and counts as
every numpy integer type, bools, huge, negative and zero values, floats, None, strings;
dtypes as strings and numpy dtypes, bad strings; bad kinds, broadcasts, variants,
epilogues, flags and scalars. Each case must either be refused with a tpp error, or
give a kernel whose descriptor holds plain Python values and whose result on a correct
call matches the float64 reference (a huge accepted size must refuse small arrays).
"""
from __future__ import annotations

import math
import sys
import zlib

import ml_dtypes
import numpy as np

import tpp
from hostile import harness
from hostile.harness import NP_INTS, Cases, Wrong, attempt, refused, small
from hostile.subjects import check_call, families, primitive_call

CASES = Cases()
NAN = float("nan")


def int_values(v: int) -> list[tuple[str, object, str]]:
    """(label, value, expectation) for an integer field whose valid value is v."""
    out = [(t.__name__, t(v), "work") for t in NP_INTS if np.iinfo(t).min <= v <= np.iinfo(t).max]
    out += [("True", True, "refuse"), ("np_True", np.True_, "refuse"), ("False", False, "refuse"),
            ("np_False", np.False_, "refuse")]
    out += [(label, value, "same") for label, value in (
        ("2e31", 2 ** 31), ("2e48", 2 ** 48), ("2e63m1", 2 ** 63 - 1), ("2e63", 2 ** 63), ("2e64", 2 ** 64),
        ("minus1", -1), ("minus2e63", -2 ** 63), ("zero", 0), ("int8_minus1", np.int8(-1)),
        ("uint64_max", np.uint64(2 ** 64 - 1)), ("int64_2e62", np.int64(2 ** 62)),
        ("int16_200", np.int16(200)), ("uint16_300", np.uint16(300)), ("uint8_255", np.uint8(255)),
        ("float", float(v)), ("float_half", v + 0.5), ("float64", np.float64(v)), ("float32", np.float32(v)),
        ("nan", NAN), ("inf", float("inf")), ("None", None), ("str", str(v)), ("complex", complex(v)),
        ("array0d", np.array(v)), ("array1", np.array([v])), ("list", [v]))]
    return out


DTYPES = [("f32", "f32"), ("bf16", "bf16"), ("f64", "f64"), ("float32", "float32"), ("bfloat16", "bfloat16"),
          ("np_float32", np.float32), ("np_dtype_f64", np.dtype("float64")), ("ml_bf16", ml_dtypes.bfloat16),
          ("np_dtype_bf16", np.dtype(ml_dtypes.bfloat16)), ("DType_F32", tpp.DType.F32),
          ("float16", np.float16), ("int32", np.int32), ("int8", "i8"), ("uint8", np.uint8), ("bool", np.bool_),
          ("complex64", np.complex64), ("f33", "f33"), ("empty", ""), ("space_f32", " f32"), ("F32", "F32"),
          ("None", None), ("five", 5), ("bytes", b"f32"), ("float", float), ("object", object)]
KINDS = [("upper", "RELU"), ("space", "relu "), ("empty", ""), ("None", None), ("int", 5), ("bytes", b"relu"),
         ("dunder", "__class__"), ("other_family", "add"), ("list", ["relu"])]
BROADCASTS = [("row", "row"), ("col", "col"), ("scalar", "scalar"), ("none", "none"), ("None", None),
              ("upper", "ROW"), ("diag", "diag"), ("one_tuple", ("row",)), ("triple", ("row", "col", "none")),
              ("list_pair", ["col", "none"]), ("pair_scalar", ("scalar", "scalar")), ("int", 5)]
VARIANTS = [("stride", "stride"), ("offset", "offset"), ("address", "address"), ("upper", "STRIDE"),
            ("empty", ""), ("None", None), ("int", 1)]
EPILOGUES = [("none", ()), ("str", "relu"), ("bias", ("bias",)), ("relu_relu", ("relu", "relu")),
             ("bias_bias", ("bias", "bias")), ("softmax", ("softmax",)), ("residual_bias", ("residual", "bias")),
             ("None", None), ("empty_str", ""), ("list_empty", [""]), ("cast", ("cast",)),
             ("transpose", ("transpose",)), ("reduce", ("reduce_sum",)), ("grad", ("relu_grad",)), ("int", 5),
             ("leaky", ("bias", "leaky_relu")), ("gelu_alias", ("gelu",))]
ACTIVATIONS = [("relu", "relu"), ("None", None), ("gelu", "gelu"), ("cast", "cast"), ("transpose", "transpose"),
               ("reduce", "reduce_sum"), ("grad", "relu_grad"), ("empty", ""), ("upper", "RELU"), ("int", 5)]
A_LAYOUTS = [("panels", "panels"), ("rows", "rows"), ("blocks", "blocks"), ("in_place", "in_place"),
             ("bogus", "bogus"), ("empty", ""), ("None", None), ("int", 5)]
INDEX_DTYPES = [("int32", np.int32), ("int64", np.int64), ("uint64", np.uint64), ("int16", np.int16),
                ("uint32", np.uint32), ("float64", np.float64), ("bool", np.bool_)]
FLAGS = [("True", True), ("False", False), ("np_True", np.True_), ("one", 1), ("zero", 0), ("str", "yes"),
         ("None", None), ("two", 2), ("array", np.array([True]))]
FLOATS = [("zero", 0.0), ("one", 1.0), ("f32_one", np.float32(1)), ("f16_zero", np.float16(0)), ("int1", 1),
          ("int64_0", np.int64(0)), ("True", True), ("half", 0.5), ("two", 2.0), ("minus1", -1.0), ("nan", NAN),
          ("inf", float("inf")), ("minus0", -0.0), ("str1", "1"), ("str_x", "x"), ("None", None),
          ("huge_int", 2 ** 1000), ("big", 1e308), ("complex", 1j), ("list", [1.0])]


def _descriptor_fields_are_plain(made, fam, name, value) -> None:
    """An accepted descriptor holds Python ints (not bools, not numpy integers), equal to
    the integer given."""
    d = getattr(made, "descriptor", None)
    if d is None:
        return
    for f in fam.int_fields:
        got = getattr(d, f, None)
        if got is not None and type(got) is not int:
            raise Wrong(f"descriptor field {f} is {type(got).__name__} {got!r}, not an int")
    got = getattr(d, name, None)
    if name in fam.int_fields and isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)):
        if got != int(value):
            raise Wrong(f"descriptor field {name} is {got!r}, given {value!r}")


def _huge(made) -> bool:
    d = getattr(made, "descriptor", None)
    if d is None:
        return False
    try:
        return not small(*(3 * op.rows * op.cols for op in d.operands()))
    except Exception:       # noqa: BLE001
        return True


def field_case(fam, name, value, expect, seed) -> None:
    fields = dict(fam.fields)
    fields[name] = value
    rng = np.random.default_rng(seed)
    why = f"{fam.name} with {name}={value!r}"
    made, exc = attempt(lambda: fam.make(dict(fields)))
    if exc is not None:
        if expect == "work":
            raise Wrong(f"{why}: refused a valid value: {type(exc).__name__}: {exc}")
        return
    if expect == "refuse" and getattr(made, "descriptor", None) is not None:
        raise Wrong(f"accepted {why}: {made.descriptor}")
    if expect == "refuse":                  # a composite: its call checks the field
        call = fam.call(made, rng)
        check_call(call, call.values(), expect="refuse", why=why)
        return
    _descriptor_fields_are_plain(made, fam, name, value)
    if _huge(made):                         # nothing to allocate: small arrays must be refused
        # one per argument of the call (gather's status word is the kernel's own operand)
        wrong = [np.zeros((2, 3), np.float32) for op in made.descriptor.operands() if op.name != "status"]
        refused(lambda: made(*wrong), f"{why}: arrays of the wrong shape")
        return
    call = fam.call(made, rng)
    check_call(call, call.values(), expect="work" if expect == "work" else "same", why=why)
    if fam.call is primitive_call:          # the allocating form too
        alloc = primitive_call(made, np.random.default_rng(seed), pass_out=False)
        check_call(alloc, alloc.values(), expect="work" if expect == "work" else "same", why=why + " (allocated)")


def _add(fam, field, label, value, expect="same") -> None:
    name = f"{fam.name}-{field}-{label}"
    CASES.add(name, field_case, fam, field, value, expect, zlib.crc32(name.encode()))


for _fam in families():
    for _f in _fam.int_fields:
        valid = _fam.fields.get(_f)
        if valid is None:                   # an optional field (ld, stride, threads): its default
            if _f == "threads":
                valid = 2
            else:
                desc = _fam.make(dict(_fam.fields)).descriptor
                valid = getattr(desc, _f)
        for _label, _value, _expect in int_values(valid):
            _add(_fam, _f, _label, _value, _expect)
    for _f in _fam.dtype_fields:
        for _label, _value in DTYPES:
            _add(_fam, _f, _label, _value)
    for _f, table in (("kind", KINDS), ("broadcast", BROADCASTS), ("variant", VARIANTS), ("epilogue", EPILOGUES),
                      ("activation", ACTIVATIONS), ("trans_a", FLAGS), ("trans_b", FLAGS), ("argidx", FLAGS),
                      ("b_vnni", FLAGS), ("beta", FLOATS), ("alpha", FLOATS), ("a_layout", A_LAYOUTS)):
        if _f in _fam.fields or (_f in ("trans_a", "trans_b", "beta") and _fam.name.startswith(("gemm", "brgemm"))):
            for _label, _value in table:
                _add(_fam, _f, _label, _value)
    if _fam.name == "segment_sum":
        for _label, _value in INDEX_DTYPES:
            _add(_fam, "index", _label, _value)

results = harness.results_fixture(CASES, __name__)
test_case = harness.case_test(CASES)

if __name__ == "__main__":
    harness.main(CASES)
