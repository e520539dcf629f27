"""The C face: libtpp.so + tpp.h (cffi embedding) and tpp-aot libraries.

The C programs in examples/c and tests/c are built with the system compiler and
run in a nearly empty environment (the library must find its Python itself);
their numerics are checked against plain C loops. Every dispatchable kind is
also checked in this process: libtpp is loaded with ctypes (it then uses this
interpreter), kernels are dispatched through its C functions and the returned
code is called on numpy arrays and compared with the numpy reference.
"""
from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
import sysconfig
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest

import embedded
import tpp
from tpp import aot, capi, capi_build
from tpp.cabi import KERNEL, ffi
from tpp.descriptors import BINARY_KINDS, UNARY_KINDS
from tpp.kernels import reduce as reduce_k

from targets import X86, require

ROOT = Path(__file__).resolve().parent.parent
CC = shutil.which(os.environ.get("CC", "cc"))
pytestmark = pytest.mark.skipif(CC is None, reason="no C compiler (cc) on this machine")


def _run(cmd, env=None, timeout=120) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, env=env, timeout=timeout)
    assert proc.returncode == 0, f"{cmd} -> {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.fixture(scope="session")
def capi_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("capi")
    capi_build.build(out)
    return out


def _flags(capi_dir: Path) -> list[str]:
    return [f"-I{capi_dir / 'include'}", f"-L{capi_dir / 'lib'}", "-ltpp", f"-Wl,-rpath,{capi_dir / 'lib'}"]


def _bare_env(kernel_cache_dir) -> dict:
    """No PATH, no VIRTUAL_ENV, no PYTHONPATH: only where to keep compiled kernels."""
    return {"TPP_CACHE_DIR": str(kernel_cache_dir)}


# ---- the library and its examples ---------------------------------------------------------
def test_build_writes_header_library_and_pkgconfig(capi_dir):
    assert (capi_dir / "include" / "tpp.h").is_file()
    assert (capi_dir / "lib" / "libtpp.so").is_file()
    pc = (capi_dir / "lib" / "pkgconfig" / "tpp.pc").read_text()
    assert "-ltpp" in pc and f"prefix={capi_dir}" in pc


def test_header_compiles_as_c_and_cpp(capi_dir, tmp_path):
    header = capi_dir / "include" / "tpp.h"
    _run([CC, "-std=c99", "-Wall", "-Wextra", "-Werror", "-fsyntax-only", "-x", "c", header])
    cxx = shutil.which("g++") or shutil.which("c++")
    if cxx:
        _run([cxx, "-Wall", "-Wextra", "-Werror", "-fsyntax-only", "-x", "c++", header])


def test_dispatch_example_in_an_empty_environment(capi_dir, tmp_path, kernel_cache_dir):
    exe = tmp_path / "dispatch"
    _run([CC, "-O2", "-Wall", "-Wextra", "-Werror", ROOT / "examples/c/dispatch.c", "-o", exe, *_flags(capi_dir),
          "-lm"])
    out = _run([exe], env=_bare_env(kernel_cache_dir)).stdout
    assert out.strip().endswith(f"ok (libtpp {tpp.__version__})"), out
    assert "m = 0: tpp relu: m must be an integer >= 1, got 0" in out


def test_two_c_threads_dispatch_and_call_at_once(capi_dir, tmp_path, kernel_cache_dir):
    exe = tmp_path / "threads"
    _run([CC, "-O2", "-pthread", ROOT / "tests/c/threads.c", "-o", exe, *_flags(capi_dir)])
    assert _run([exe], env=_bare_env(kernel_cache_dir)).stdout.strip() == "ok"


def test_a_missing_package_is_an_error_not_an_abort(capi_dir, tmp_path, kernel_cache_dir):
    """With the library's Python paths hidden (a copy whose init code looks elsewhere),
    dispatch returns NULL with a message instead of killing the program."""
    exe = tmp_path / "dispatch"
    _run([CC, "-O2", ROOT / "examples/c/dispatch.c", "-o", exe, *_flags(capi_dir), "-lm"])
    env = {**_bare_env(kernel_cache_dir), "PYTHONNOUSERSITE": "1", "PYTHONPATH": str(tmp_path)}
    (tmp_path / "tpp").mkdir()
    (tmp_path / "tpp" / "__init__.py").write_text("raise ImportError('hidden for the test')\n")
    proc = subprocess.run([str(exe)], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2, proc.stdout + proc.stderr       # tpp_init failed, reported, exit 2
    assert "cannot import the tpp package" in proc.stderr


# ---- every kind through the C functions, in this process ------------------------------------
class Desc(ctypes.Structure):
    _fields_ = [("kind", ctypes.c_char_p), ("m", ctypes.c_int64), ("n", ctypes.c_int64), ("k", ctypes.c_int64),
                ("lda", ctypes.c_int64), ("ldb", ctypes.c_int64), ("ldc", ctypes.c_int64),
                ("stride_a", ctypes.c_int64), ("stride_b", ctypes.c_int64),
                ("dtype", ctypes.c_char_p), ("out_dtype", ctypes.c_char_p),
                ("broadcast_a", ctypes.c_char_p), ("broadcast_b", ctypes.c_char_p),
                ("epilogue", ctypes.c_char_p), ("variant", ctypes.c_char_p), ("target", ctypes.c_char_p),
                ("alpha", ctypes.c_double), ("flags", ctypes.c_uint32)]


@pytest.fixture(scope="module")
def lib(capi_dir):
    library = ctypes.CDLL(str(capi_dir / "lib" / "libtpp.so"))
    for name in ("tpp_dispatch_unary", "tpp_dispatch_binary", "tpp_dispatch_gemm", "tpp_dispatch_brgemm"):
        getattr(library, name).restype = ctypes.c_void_p
        getattr(library, name).argtypes = [ctypes.POINTER(Desc)]
    library.tpp_last_error.restype = ctypes.c_char_p
    assert embedded.init(library) == capi.OK
    return library


def dispatch(lib, which: str, **fields) -> int:
    d = Desc(**{k: (v.encode() if isinstance(v, str) else v) for k, v in fields.items()})
    address = getattr(lib, f"tpp_dispatch_{which}")(ctypes.byref(d))
    assert address, lib.tpp_last_error().decode()
    assert lib.tpp_last_error_code() == capi.OK
    return address


def call(address: int, arrays: list[np.ndarray], extra: list[tuple[int, int]] = ()) -> None:
    entries = [(a.ctypes.data, a.strides[0] // a.itemsize if a.ndim == 2 else a.shape[-1]) for a in arrays]
    ffi.cast(KERNEL, address)(ffi.new("tpp_tensor[]", entries + list(extra)))


NP = {"f32": np.float32, "f64": np.float64, "bf16": ml_dtypes.bfloat16}


@pytest.mark.parametrize("kind", sorted(UNARY_KINDS))
def test_every_unary_kind(lib, kind, rng):
    m, n = 7, 19
    desc_args, fields = {}, {}
    if kind in reduce_k.KINDS:
        desc_args["axis"] = 1
        fields["flags"] = capi.REDUCE_ROWS
    dtype = "f32"
    if kind == "vnni_pack":
        dtype = "bf16"
    if kind == "cast":
        desc_args["out_dtype"] = fields["out_dtype"] = "bf16"
    d = tpp.unary_desc(kind, m, n, dtype, **desc_args)
    address = dispatch(lib, "unary", kind=kind, m=m, n=n, dtype=dtype, **fields)
    assert address == tpp.unary(kind, m, n, dtype, **desc_args).address      # the same JIT code
    ops = d.operands()
    ins = [rng.uniform(0.1, 2.0, (op.rows, op.cols)).astype(NP[dtype]) for op in ops if not op.output]
    outs = [np.zeros((op.rows, op.cols), tpp.dtypes.to_numpy(op.dtype)) for op in ops if op.output]
    call(address, ins + outs)
    ref = d.reference(*ins)
    ref = ref[0] if isinstance(ref, tuple) else ref
    np.testing.assert_allclose(outs[0].astype(np.float64).reshape(np.shape(ref)), ref, rtol=1e-2, atol=1e-3)


@pytest.mark.parametrize("kind", sorted(BINARY_KINDS))
@pytest.mark.parametrize("broadcast_b", ["none", "row", "col", "scalar"])
def test_every_binary_kind(lib, kind, broadcast_b, rng):
    m, n = 5, 21
    address = dispatch(lib, "binary", kind=kind, m=m, n=n, broadcast_b=broadcast_b)
    d = tpp.binary_desc(kind, m, n, broadcast=broadcast_b)
    shapes = {"none": (m, n), "row": (1, n), "col": (m, 1), "scalar": (1, 1)}
    a = rng.uniform(0.5, 2, (m, n)).astype(np.float32)
    b = rng.uniform(0.5, 2, shapes[broadcast_b]).astype(np.float32)
    out = np.zeros((m, n), tpp.dtypes.to_numpy(d.operands()[-1].dtype))     # bool for comparisons
    call(address, [a, b, out])
    np.testing.assert_allclose(out.astype(np.float64), d.reference(a, b), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("flags", [0, capi.BETA_0, capi.TRANS_A, capi.TRANS_B | capi.BETA_0])
@pytest.mark.parametrize("epilogue", [None, "bias,relu"])
def test_gemm(lib, flags, epilogue, rng):
    m, n, k = 13, 35, 17
    address = dispatch(lib, "gemm", m=m, n=n, k=k, flags=flags, epilogue=epilogue)
    d = tpp.gemm_desc(m, n, k, trans_a=bool(flags & capi.TRANS_A), trans_b=bool(flags & capi.TRANS_B),
                      beta=0.0 if flags & capi.BETA_0 else 1.0, epilogue=epilogue.split(",") if epilogue else ())
    ops = d.operands()
    arrays = [rng.uniform(-1, 1, (op.rows, op.cols)).astype(np.float32) for op in ops]
    c0 = arrays[-1].copy()
    call(address, arrays)
    ref = d.reference(*arrays[:-1], c0)
    np.testing.assert_allclose(arrays[-1], ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype,flags", [("bf16", capi.B_VNNI), ("u8s8", 0), ("f64", capi.BETA_0)])
def test_gemm_dtypes(lib, dtype, flags, rng):
    m, n, k = 9, 20, 12
    address = dispatch(lib, "gemm", m=m, n=n, k=k, dtype=dtype, flags=flags)
    d = tpp.gemm_desc(m, n, k, dtype, b_vnni=bool(flags & capi.B_VNNI), beta=0.0 if flags & capi.BETA_0 else 1.0)
    arrays = [rng.integers(0 if i == 0 else -3, 4, (op.rows, op.cols)).astype(tpp.dtypes.to_numpy(op.dtype))
              for i, op in enumerate(d.operands())]
    c0 = arrays[-1].astype(np.float64)
    call(address, arrays)
    np.testing.assert_array_equal(arrays[-1].astype(np.float64), d.reference(*arrays[:-1], c0))


@pytest.mark.parametrize("variant", ["stride", "offset", "address"])
def test_brgemm(lib, variant, rng):
    m, n, k, batch = 6, 18, 11, 4
    address = dispatch(lib, "brgemm", m=m, n=n, k=k, variant=variant, flags=capi.BETA_0)
    a = rng.uniform(-1, 1, (batch, m, k)).astype(np.float32)
    b = rng.uniform(-1, 1, (batch, k, n)).astype(np.float32)
    c = np.full((m, n), np.nan, np.float32)
    keep = []
    if variant == "stride":
        entries = [(a.ctypes.data, k), (b.ctypes.data, n), (c.ctypes.data, n), (0, batch)]
    elif variant == "offset":
        offs_a, offs_b = np.arange(batch) * m * k, np.arange(batch) * k * n
        keep = [offs_a, offs_b]
        entries = [(a.ctypes.data, k), (b.ctypes.data, n), (c.ctypes.data, n), (offs_a.ctypes.data, batch),
                   (offs_b.ctypes.data, batch)]
    else:
        pa = np.array([a[i].ctypes.data for i in range(batch)], np.int64)
        pb = np.array([b[i].ctypes.data for i in range(batch)], np.int64)
        keep = [pa, pb]
        entries = [(pa.ctypes.data, k), (pb.ctypes.data, n), (c.ctypes.data, n), (0, batch)]
    ffi.cast(KERNEL, address)(ffi.new("tpp_tensor[]", entries))
    del keep
    np.testing.assert_allclose(c, np.einsum("bik,bkj->ij", a.astype(np.float64), b), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind,fields,code,message", [
    ("unary", {"kind": "relu", "m": 0, "n": 4}, capi.E_DESCRIPTOR, "m must be an integer >= 1"),
    ("unary", {"kind": None, "m": 4, "n": 4}, capi.E_DESCRIPTOR, "desc->kind is NULL"),
    ("unary", {"kind": "reduce_sum", "m": 4, "n": 4, "flags": capi.REDUCE_ROWS | capi.REDUCE_COLS},
     capi.E_DESCRIPTOR, "exclude each other"),
    ("unary", {"kind": "relu", "m": 4, "n": 4, "flags": 1 << 20}, capi.E_ARGUMENT, "unknown flag bits"),
    ("binary", {"kind": "add", "m": 4, "n": 4, "dtype": "i8"}, capi.E_DTYPE, "not supported"),
    ("binary", {"kind": "add", "m": 4, "n": 4, "broadcast_b": "diagonal"}, capi.E_DESCRIPTOR, "broadcast mode"),
    ("gemm", {"m": 4, "n": 4, "k": 4, "dtype": "f32", "out_dtype": "bf16"}, capi.E_DTYPE, "out_dtype"),
    ("gemm", {"m": 4, "n": 4, "k": 4, "epilogue": "bias,softmax"}, capi.E_DESCRIPTOR, "softmax"),
    ("gemm", {"m": 4, "n": 4, "k": 4, "target": "riscv-v"}, capi.E_TARGET, "unknown target"),
    ("brgemm", {"m": 4, "n": 4, "k": 4, "variant": "gather"}, capi.E_DESCRIPTOR, "variant must be"),
    ("brgemm", {"m": 4, "n": 4, "k": 4, "stride_a": 2 ** 62}, capi.E_DESCRIPTOR, "more than the limit of 2**48"),
    ("gemm", {"m": 4, "n": 4, "k": 4, "lda": 2 ** 62}, capi.E_DESCRIPTOR, "make operand 'a' span"),
    ("unary", {"kind": "relu", "m": 2 ** 40, "n": 4}, capi.E_DESCRIPTOR, "m=1099511627776 is too large"),
    # bytes that are not UTF-8: the caller's argument is bad (was TPP_ERROR_INTERNAL)
    ("unary", {"kind": b"rel\xffu", "m": 4, "n": 4}, capi.E_ARGUMENT,
     "desc->kind is not UTF-8 text (byte 0xff at offset 3)"),
    ("gemm", {"m": 4, "n": 4, "k": 4, "dtype": b"\xc3("}, capi.E_ARGUMENT, "desc->dtype is not UTF-8"),
    ("binary", {"kind": "add", "m": 4, "n": 4, "broadcast_b": b"\x80"}, capi.E_ARGUMENT, "desc->broadcast_b"),
    ("brgemm", {"m": 4, "n": 4, "k": 4, "variant": b"off\xfe"}, capi.E_ARGUMENT, "desc->variant"),
    ("gemm", {"m": 4, "n": 4, "k": 4, "target": b"\xff"}, capi.E_ARGUMENT, "desc->target"),
])
def test_dispatch_errors(lib, kind, fields, code, message):
    d = Desc(**{k: (v.encode() if isinstance(v, str) else v) for k, v in fields.items()})
    assert getattr(lib, f"tpp_dispatch_{kind}")(ctypes.byref(d)) is None
    assert lib.tpp_last_error_code() == code
    assert message in lib.tpp_last_error().decode()


@pytest.mark.parametrize("alpha", [float("nan"), float("inf"), float("-inf")])
def test_one_alpha_rule_for_python_aot_and_c(lib, alpha):
    """A non-finite alpha is refused by the descriptor, with the same message, whichever
    way it arrives (the C ABI used to refuse it alone)."""
    expected = f"tpp elu: alpha must be finite, got {alpha}"
    with pytest.raises(tpp.DescriptorError) as python:
        tpp.unary("elu", 4, 4, alpha=alpha)
    assert str(python.value) == expected
    with pytest.raises(tpp.DescriptorError) as spec:
        aot.descriptor({"name": "e", "kind": "unary", "op": "elu", "m": 4, "n": 4, "alpha": alpha})
    assert str(spec.value) == f"kernel e: {expected}"
    d = Desc(kind=b"elu", m=4, n=4, alpha=alpha, flags=capi.ALPHA)
    assert lib.tpp_dispatch_unary(ctypes.byref(d)) is None
    assert lib.tpp_last_error_code() == capi.E_DESCRIPTOR
    assert lib.tpp_last_error().decode() == expected


def test_null_descriptor(lib):
    assert lib.tpp_dispatch_gemm(None) is None
    assert lib.tpp_last_error_code() == capi.E_ARGUMENT


# ---- ahead-of-time libraries ------------------------------------------------------------------
@pytest.mark.parametrize("target", X86)
def test_aot_library_runs_without_python(target, tmp_path):
    paths = aot.build(aot.read_spec(ROOT / "examples/c/kernels.json"), target, tmp_path, "exkernels")
    exe = tmp_path / "aot"
    _run([CC, "-O2", "-Wall", "-Wextra", "-Werror", f"-I{tmp_path}", ROOT / "examples/c/aot.c", paths["static"],
          "-o", exe, "-lm"])
    require(target)                                             # built and linked; runs where it can
    assert _run([exe], env={}).stdout.strip() == "ok"          # no Python anywhere near it
    exe_shared = tmp_path / "aot_shared"
    _run([CC, "-O2", f"-I{tmp_path}", ROOT / "examples/c/aot.c", f"-L{tmp_path}", "-lexkernels",
          f"-Wl,-rpath,{tmp_path}", "-o", exe_shared, "-lm"])
    assert _run([exe_shared], env={}).stdout.strip() == "ok"
    cxx = shutil.which("g++") or shutil.which("c++")
    if cxx:
        _run([cxx, "-fsyntax-only", "-x", "c++", paths["header"]])


def test_avx2_objects_have_no_zmm(tmp_path):
    objdump = shutil.which("objdump")
    if objdump is None:
        pytest.skip("no objdump")
    spec = aot.read_spec(ROOT / "examples/c/kernels.json") + [
        {"name": "k_gelu", "kind": "unary", "op": "gelu_tanh", "m": 33, "n": 70},
        {"name": "k_bf16", "kind": "gemm", "m": 32, "n": 32, "k": 32, "dtype": "bf16"},
        {"name": "k_u8", "kind": "gemm", "m": 32, "n": 32, "k": 32, "dtype": "u8s8"}]
    paths = aot.build(spec, "x86-avx2", tmp_path, "avx2k", shared=False, static=False)
    text = _run([objdump, "-d", paths["object"]]).stdout
    assert "%ymm" in text and "%zmm" not in text        # AT&T register names, not the file path


@pytest.mark.parametrize("spec,message", [
    ([{"name": "1bad", "kind": "unary", "op": "relu", "m": 4, "n": 4}], "C identifier"),
    ([{"name": "k", "kind": "conv", "m": 4, "n": 4}], "'kind' must be one of"),
    ([{"name": "k", "kind": "unary", "m": 4, "n": 4}], "needs 'op'"),
    ([{"name": "k", "kind": "gemm", "m": 4, "n": 4}], "missing 'k'"),
    ([{"name": "k", "kind": "unary", "op": "relu", "m": 4, "n": 4, "colour": 1}], "colour"),
    ([{"name": "k", "kind": "unary", "op": "relu", "m": 4, "n": 4}] * 2, "appears twice"),
    ([], "no kernels"),
])
def test_aot_spec_errors(spec, message, tmp_path):
    with pytest.raises(tpp.TppError, match=message):
        aot.build(spec, None, tmp_path, "bad")


def test_aot_cli(tmp_path, capsys):
    spec = tmp_path / "k.json"
    spec.write_text('[{"name": "only_relu", "kind": "unary", "op": "relu", "m": 8, "n": 8}]')
    assert aot.main([str(spec), "--out", str(tmp_path / "out"), "--no-shared"]) == 0
    assert (tmp_path / "out" / "k.h").read_text().count("void only_relu(const tpp_tensor *args);") == 1
    assert (tmp_path / "out" / "libk.a").is_file() and not (tmp_path / "out" / "libk.so").exists()
    spec.write_text("[{")
    assert aot.main([str(spec), "--out", str(tmp_path / "out")]) == 1
    assert "not valid JSON" in capsys.readouterr().err


def test_python_headers_present_for_the_build():
    """The library build compiles against Python.h; CI installs it where missing."""
    assert Path(sysconfig.get_paths()["include"], "Python.h").is_file()


def test_aot_reads_toml_specs(tmp_path):
    pytest.importorskip("tomllib")
    spec = tmp_path / "k.toml"
    spec.write_text('[[kernels]]\nname = "t_relu"\nkind = "unary"\nop = "relu"\nm = 4\nn = 9\n\n'
                    '[[kernels]]\nname = "t_add"\nkind = "binary"\nop = "add"\nm = 4\nn = 9\nbroadcast = "col"\n')
    named = [aot.descriptor(e) for e in aot.read_spec(spec)]
    assert [n for n, _ in named] == ["t_relu", "t_add"]
    assert named[1][1] == tpp.binary_desc("add", 4, 9, broadcast="col")
