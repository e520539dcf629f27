"""Equations through the C ABI (tpp_dispatch_equation over a tpp_eq_node array) and
tpp-aot ("kind": "equation" with the same nodes): the code the Python API builds, the
C-side cache, and the refusals as error codes."""
from __future__ import annotations

import ctypes
import datetime
import json
import os
import shutil

import numpy as np
import pytest

import embedded
import tpp
from tpp import aot, capi, capi_build, eq
from tpp.cabi import KERNEL, ffi

CC = shutil.which(os.environ.get("CC", "cc"))
pytestmark = pytest.mark.skipif(CC is None, reason="no C compiler (cc) on this machine")


class Node(ctypes.Structure):
    _fields_ = [("op", ctypes.c_int32), ("a", ctypes.c_int32), ("b", ctypes.c_int32), ("kind", ctypes.c_char_p),
                ("dtype", ctypes.c_char_p), ("value", ctypes.c_double), ("flags", ctypes.c_uint32)]


class EqDesc(ctypes.Structure):
    _fields_ = [("m", ctypes.c_int64), ("n", ctypes.c_int64), ("count", ctypes.c_int64),
                ("nodes", ctypes.POINTER(Node)), ("out_dtype", ctypes.c_char_p), ("target", ctypes.c_char_p)]


ARG, CONST, UNARY, BINARY, REDUCE = range(5)
SOFTMAX = [(ARG, 0, 0, None), (REDUCE, 0, 0, "max"), (BINARY, 0, 1, "sub"), (UNARY, 2, 0, "exp"),
           (REDUCE, 3, 0, "sum"), (BINARY, 3, 4, "div")]


@pytest.fixture(scope="module")
def lib(tmp_path_factory):
    out = tmp_path_factory.mktemp("capi_eq")
    capi_build.build(out)
    library = ctypes.CDLL(str(out / "lib" / "libtpp.so"))
    library.tpp_dispatch_equation.restype = ctypes.c_void_p
    library.tpp_dispatch_equation.argtypes = [ctypes.POINTER(EqDesc)]
    library.tpp_last_error.restype = ctypes.c_char_p
    getattr(datetime.datetime_CAPI, "anything", None)    # tags the capsule type: embedded.init copes
    assert embedded.init(library) == capi.OK
    return library


def make(m, n, rows, out_dtype=None):
    nodes = (Node * len(rows))(*[Node(op, a, b, kind.encode() if kind else None, None, value, flags)
                                 for op, a, b, kind, *rest in rows
                                 for value, flags in [tuple(rest) if rest else (0.0, 0)]])
    return EqDesc(m, n, len(rows), nodes, out_dtype, None), nodes


def test_softmax_through_c_is_the_python_kernel(lib, rng):
    desc, keep = make(9, 130, SOFTMAX)
    address = lib.tpp_dispatch_equation(ctypes.byref(desc))
    assert address, lib.tpp_last_error().decode()
    x = eq.arg(0)
    e = eq.exp(x - eq.max(x))
    assert address == tpp.equation(e / eq.sum(e), 9, 130).address
    assert lib.tpp_dispatch_equation(ctypes.byref(desc)) == address        # the C cache
    a = rng.uniform(-3, 3, (9, 130)).astype(np.float32)
    y = np.zeros_like(a)
    ffi.cast(KERNEL, address)(ffi.new("tpp_tensor[]", [(a.ctypes.data, 130), (y.ctypes.data, 130)]))
    ref = np.exp(a - a.max(1, keepdims=True))
    np.testing.assert_allclose(y, ref / ref.sum(1, keepdims=True), rtol=2e-6)


def test_constants_alpha_and_row_outputs(lib, rng):
    rows = [(ARG, 0, 0, None), (UNARY, 0, 0, "leaky_relu", 0.25, capi.ALPHA), (CONST, 0, 0, None, 2.0, 0),
            (BINARY, 1, 2, "mul"), (REDUCE, 3, 0, "sum")]
    desc, keep = make(4, 33, rows)
    address = lib.tpp_dispatch_equation(ctypes.byref(desc))
    assert address, lib.tpp_last_error().decode()
    a = rng.uniform(-2, 2, (4, 33)).astype(np.float32)
    y = np.zeros(4, np.float32)
    ffi.cast(KERNEL, address)(ffi.new("tpp_tensor[]", [(a.ctypes.data, 33), (y.ctypes.data, 4)]))
    np.testing.assert_allclose(y, (np.where(a > 0, a, 0.25 * a) * 2).sum(1), rtol=1e-5)


@pytest.mark.parametrize("rows,code,message", [
    ([(BINARY, 0, 0, "add")], capi.E_DESCRIPTOR, "earlier node"),
    ([(ARG, 0, 0, None), (UNARY, 0, 0, "nope")], capi.E_DESCRIPTOR, "unary kind 'nope'"),
    ([(7, 0, 0, None)], capi.E_DESCRIPTOR, "TPP_EQ_"),
    ([(ARG, 0, 0, "diagonal")], capi.E_DESCRIPTOR, "bcast must be one of"),
    ([(ARG, 0, 0, None, 0.0, 1 << 9)], capi.E_ARGUMENT, "unknown bits"),
])
def test_refusals_are_error_codes(lib, rows, code, message):
    desc, keep = make(2, 2, rows)
    assert not lib.tpp_dispatch_equation(ctypes.byref(desc))
    assert lib.tpp_last_error_code() == code
    assert message in lib.tpp_last_error().decode()
    assert not lib.tpp_dispatch_equation(None)
    assert lib.tpp_last_error_code() == capi.E_ARGUMENT


def test_aot_builds_an_equation(tmp_path, rng):
    nodes = [{"op": "arg", "index": 0}, {"op": "reduce", "kind": "max", "a": 0},
             {"op": "binary", "kind": "sub", "a": 0, "b": 1}, {"op": "unary", "kind": "exp", "a": 2},
             {"op": "reduce", "kind": "sum", "a": 3}, {"op": "binary", "kind": "div", "a": 3, "b": 4}]
    spec = tmp_path / "k.json"
    spec.write_text(json.dumps({"kernels": [{"name": "softmax_8x100", "kind": "equation", "m": 8, "n": 100,
                                             "nodes": nodes}]}))
    assert aot.main([str(spec), "--out", str(tmp_path / "out"), "--name", "eqlib"]) == 0
    header = (tmp_path / "out" / "eqlib.h").read_text()
    assert "void softmax_8x100(const tpp_tensor *args)" in header
    lib = ctypes.CDLL(str(tmp_path / "out" / "libeqlib.so"))
    a = rng.uniform(-3, 3, (8, 100)).astype(np.float32)
    y = np.zeros_like(a)
    fn = ffi.cast(KERNEL, ctypes.cast(lib.softmax_8x100, ctypes.c_void_p).value)
    fn(ffi.new("tpp_tensor[]", [(a.ctypes.data, 100), (y.ctypes.data, 100)]))
    ref = np.exp(a - a.max(1, keepdims=True))
    np.testing.assert_allclose(y, ref / ref.sum(1, keepdims=True), rtol=2e-6)
    spec.write_text(json.dumps({"kernels": [{"name": "bad", "kind": "equation", "m": 8, "n": 100}]}))
    assert aot.main([str(spec), "--out", str(tmp_path / "out2")]) == 1
