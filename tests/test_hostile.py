"""Input from a hostile probe that crashed, hung or silently misbehaved, each pinned.

Cases that could kill or hang a process (an offset near 2**63 on an array that ends
at a guard page, a batch count whose transpose buffer wraps) run in a child process:
this file is also that child's script (`python test_hostile.py CASE ...`), which prints
each case's name before running it, so a crash names its case and the runner
(tests/hostile/harness.py) starts the cases after it in a fresh process. The rest run
here. The suite in tests/hostile/ covers every family with generated cases.
"""
from __future__ import annotations

import faulthandler
import os
import sys
import threading
import time
from pathlib import Path

import cffi
import numpy as np
import pytest
from numpy.lib.stride_tricks import as_strided

import tpp
from hostile.harness import run_children
from tpp import cabi, capi, capi_build, dispatch
from tpp.jit import cache as disk_cache
from tpp.jit import compiler

CASES: dict[str, object] = {}


def case(fn, name: str | None = None):
    """A case for the child process (run in the order defined); it passes by returning."""
    CASES[name or fn.__name__] = fn
    return fn


# ---- BRGEMM arguments that pointed the kernel outside memory -----------------------------
@case
def offsets_near_2_63_on_a_guard_page():
    sys.path.insert(0, str(Path(__file__).parent))
    from guard_page_check import fenced
    br = tpp.brgemm(4, 4, 4, variant="offset", beta=0.0)
    a, b = fenced(16, np.float32), fenced(16, np.float32)
    a[:], b[:] = 1, 1
    c = np.zeros((4, 4), np.float32)
    zero = np.zeros(1, np.int64)
    for bad in (2 ** 63 - 1, 2 ** 63 - 16, 2 ** 62, 1):      # 1: one element past, wraps nothing
        with pytest.raises(tpp.ShapeError, match="end past the buffer"):
            br(a, b, c, np.array([bad], np.int64), zero)
        with pytest.raises(tpp.ShapeError, match="end past the buffer"):
            br(a, b, c, zero, np.array([0, bad], np.int64)[1:])
    with pytest.raises(tpp.ShapeError, match="start before"):
        br(a, b, c, np.array([-2 ** 63], np.int64), zero)
    with pytest.raises(tpp.ShapeError, match="start before"):          # wraps to -1 as int64
        br(a, b, c, np.array([2 ** 64 - 1], np.uint64), zero)
    with pytest.raises(tpp.DTypeError, match="a_offsets must hold integers"):
        br(a, b, c, np.array([0.5]), zero)
    br(a, b, c, zero, zero)                                # the last block that fits still runs
    np.testing.assert_array_equal(c, np.full((4, 4), 4, np.float32))


def _zero_stride_stack(block: np.ndarray, count: int) -> np.ndarray:
    return as_strided(block, (count,) + block.shape, (0,) + block.strides)


@case
def huge_batch_counts_from_python():
    for count_log2, (m, n, k) in ((56, (4, 4, 4)), (58, (2, 2, 2)), (60, (1, 1, 1))):
        br = tpp.brgemm(m, n, k, trans_b=True, beta=0.0)
        a = _zero_stride_stack(np.ones((m, k), np.float32), 2 ** count_log2)
        b = _zero_stride_stack(np.ones((n, k), np.float32), 2 ** count_log2)
        with pytest.raises(tpp.ShapeError, match=r"a batch of \d+ blocks is more than the limit"):
            br(a, b, np.zeros((m, n), np.float32))
    offsets = _zero_stride_stack(np.zeros((), np.int64), 2 ** 56)     # refused before it is copied
    br = tpp.brgemm(4, 4, 4, variant="offset", trans_b=True)
    with pytest.raises(tpp.ShapeError, match="more than the limit"):
        br(np.ones(16, np.float32), np.ones(16, np.float32), np.zeros((4, 4), np.float32), offsets, offsets)


_ffi = []


def capi_ffi() -> cffi.FFI:
    """An FFI with tpp.h's declarations (the C descriptor, tpp_kernel), no library built."""
    if not _ffi:
        ffi = cffi.FFI()
        ffi.cdef(capi_build.declarations())
        _ffi.append(ffi)
    return _ffi[0]


# ---- disk-cache entries: tests/hostile/test_cache.py (garbage, empty, header-only, cut,
# a section table past the end, another machine's or another kernel's object under the
# key, FIFOs, symlinks to a FIFO and to a good entry, and more)


# it leaves a thread computing: the last case
@case
def huge_batch_count_from_c_runs_in_place():
    """What a C caller can do: the kernel takes any count. One whose transpose buffer
    size wrapped (2**62 blocks x a multiple of 64 bytes = 0 mod 2**64) got a 64-byte
    buffer and wrote past it at once; now malloc is asked for SIZE_MAX, fails, and the
    kernel reads the (here zero-strided) blocks in place: still computing after 1 s."""
    br = tpp.brgemm(4, 4, 4, trans_b=True, stride_a=0, stride_b=0, beta=0.0)
    a, b, c = (np.ones((4, 4), np.float32) for _ in range(3))
    args = cabi.tensors([(cabi.data_address(x), 4) for x in (a, b, c)] + [(0, 2 ** 62)])
    fn = cabi.ffi.cast(cabi.KERNEL, br.address)            # the address tpp_dispatch_brgemm returns
    threading.Thread(target=fn, args=(args,), daemon=True).start()      # cffi releases the GIL
    time.sleep(1.0)        # the process exits after the last case, this thread with it


def main(names: list[str]) -> None:
    faulthandler.enable()
    for name in names:
        print(f"case {name}", flush=True)
        try:
            CASES[name]()
        except BaseException as exc:            # reported per case; the next ones still run
            print(f"failed {name}: {type(exc).__name__}: {exc}", flush=True)
        else:
            print(f"ok {name}", flush=True)
    os._exit(0)                                  # without waiting for a computing thread


# ---- the runner: tests/hostile/harness.py ------------------------------------------------
@pytest.fixture(scope="module")
def hostile(kernel_cache_dir) -> dict[str, str]:
    return run_children([sys.executable, str(Path(__file__))], list(CASES), kernel_cache_dir, timeout=120)


@pytest.mark.parametrize("name", list(CASES))
def test_in_a_child_process(name, hostile):
    assert hostile[name] == "ok", hostile[name]


# ---- in this process: numpy integers and bools as descriptor fields -----------------------
@pytest.mark.parametrize("m, n", [(np.int16(200), np.int16(200)), (np.uint8(16), np.uint8(16)),
                                  (np.int16(181), np.int16(182)), (np.int64(3), np.uint32(11))])
def test_numpy_integer_sizes_compute_in_python_ints(m, n, rng):
    """np.int16(200) * np.int16(200) wraps: the kernel read and wrote a fraction of the
    tile and left the rest uninitialised, under a descriptor equal to (200, 200)'s."""
    k = tpp.unary("relu", m, n)
    assert type(k.descriptor.m) is int and type(k.descriptor.n) is int
    assert k is tpp.unary("relu", int(m), int(n))
    x = rng.uniform(-1, 1, (int(m), int(n))).astype(np.float32)
    np.testing.assert_array_equal(k(x), np.maximum(x, 0))


def test_numpy_integer_fields_of_every_family(rng):
    x = rng.uniform(-1, 1, (3, 11)).astype(np.float32)
    vals, idx = tpp.unary("reduce_max", np.int64(3), np.int64(11), axis=np.int64(1), argidx=np.True_)(x)
    np.testing.assert_array_equal(idx, x.argmax(axis=1))
    np.testing.assert_array_equal(tpp.unary("transpose", *x.shape)(x), x.T)
    a, b = x[:, :5].copy(), rng.uniform(-1, 1, (5, 7)).astype(np.float32)
    m, k = a.shape
    g = tpp.gemm(m, b.shape[1], np.int32(k), beta=0.0, lda=np.int64(5), ldb=np.uint16(7))
    assert all(type(getattr(g.descriptor, f)) is int for f in ("m", "n", "k", "lda", "ldb", "ldc"))
    np.testing.assert_allclose(g(a, b), a @ b, rtol=1e-5, atol=1e-6)
    br = tpp.brgemm(np.int8(3), np.int16(7), np.int32(5), trans_b=np.True_, beta=0.0, stride_a=np.int64(15),
                    stride_b=np.int64(35))
    assert type(br.descriptor.stride_a) is int and br.descriptor.trans_b is True
    bt = np.ascontiguousarray(np.stack([b.T, b.T]))
    np.testing.assert_allclose(br(np.stack([a, a]), bt, np.zeros((3, 7), np.float32)), 2 * a @ b,
                               rtol=1e-5, atol=1e-6)
    out = tpp.binary("add", np.int64(3), np.int64(11), broadcast="col")(x, x[:, :1].copy())
    np.testing.assert_array_equal(out, x + x[:, :1])


@pytest.mark.parametrize("call, match", [
    (lambda: tpp.gemm(4, 4, 1, lda=True), "lda must be an integer, got the bool True"),
    (lambda: tpp.gemm(4, 4, 1, ldc=np.True_), "ldc must be an integer, got the bool np.True_"),
    (lambda: tpp.unary("relu", np.True_, 4), "m must be an integer >= 1, got np.True_"),
    (lambda: tpp.unary("reduce_sum", 4, 4, axis=True), "axis must be an integer, got the bool True"),
    (lambda: tpp.brgemm(4, 4, 4, stride_b=False), "stride_b must be an integer, got the bool False"),
    (lambda: tpp.gemm(4, 4, 4, ldb=np.float64(4)), r"ldb must be an integer, got float64 np.float64\(4.0\)"),
    (lambda: tpp.GemmDesc(4, 4, 4, tpp.DType.F32, trans_a=1), "trans_a must be True or False, got int 1"),
])
def test_bools_and_non_integers_are_refused_naming_the_field(call, match):
    with pytest.raises(tpp.DescriptorError, match=match):
        call()


# ---- sizes whose byte extents are absurd, from Python and from C ---------------------------
@pytest.mark.parametrize("call, match", [
    (lambda: tpp.brgemm(4, 4, 4, stride_a=2 ** 62),
     r"stride_a=4611686018427387904 puts blocks \d+ bytes apart"),
    (lambda: tpp.brgemm(4, 4, 4, stride_b=2 ** 47), r"stride_b=140737488355328 puts blocks"),
    (lambda: tpp.gemm(4, 4, 4, lda=2 ** 62), r"m, k, lda make operand 'a' span \d+ bytes"),
    (lambda: tpp.gemm(4, 4, 4, trans_b=True, ldb=2 ** 47), r"n, k, ldb make operand 'b' span"),
    (lambda: tpp.unary("relu", 2 ** 30, 2 ** 30), r"m, n make operand 'x' span"),
    (lambda: tpp.binary("add", 2 ** 31 - 1, 2 ** 20, broadcast="row"), r"make operand 'a' span"),
])
def test_absurd_extents_are_refused_at_dispatch(call, match):
    with pytest.raises(tpp.DescriptorError, match=match):
        call()


def test_extents_up_to_the_limit_are_accepted():
    """The limit is the extent, not the field: a huge stride over one block row is fine."""
    assert tpp.brgemm(1, 4, 4, stride_a=2 ** 40, beta=0.0).descriptor.stride_a == 2 ** 40
    assert tpp.gemm(1, 4, 4, lda=2 ** 40, beta=0.0).descriptor.lda == 2 ** 40


@pytest.mark.parametrize("fields, match", [
    ({"stride_a": 2 ** 62}, "stride_a=4611686018427387904 puts blocks"),
    ({"lda": 2 ** 62}, "make operand 'a' span"),
    ({"m": 2 ** 62}, "m=4611686018427387904 is too large"),
    ({"k": -5}, "k must be an integer >= 1, got -5"),
    ({"ldc": -1}, "ldc must be an integer >= 4, got -1"),
])
def test_c_descriptors_with_absurd_fields(fields, match):
    """The C ABI's dispatch (capi.kernel_address, what tpp_dispatch_brgemm runs) refuses
    them with TPP_ERROR_DESCRIPTOR and the same message."""
    ffi = capi_ffi()
    d = ffi.new("tpp_desc *", {"m": 4, "n": 4, "k": 4, **fields})
    with pytest.raises(tpp.DescriptorError, match=match) as info:
        capi.kernel_address(ffi, "brgemm", d)
    assert capi._error_code(info.value) == capi.E_DESCRIPTOR


def test_a_bad_object_is_refused_before_linking():
    """compiler.load_object checks what it links (the last line of defence after the cache)."""
    with pytest.raises(RuntimeError, match="refusing to link object code .* not an ELF file"):
        compiler.load_object(b"\0" * 200, dispatch.current_target(), ["tpp_nothing"])


def test_a_bad_ptx_entry_is_rebuilt(tmp_path):
    shape = (3, 4321)
    dispatch.clear_memory_cache()
    with tpp.config.override(cache=True, cache_dir=tmp_path):
        k = tpp.unary("relu", *shape, target="nvptx-sm90")
        entry, = tmp_path.glob(f"{k.symbol[4:]}*.o")
        good = k.code
        key = entry.read_bytes()[len(disk_cache._MAGIC):].partition(b"\n")[0].decode()
        entry.write_bytes(disk_cache.wrap(key, good.replace(b".target sm_90", b".target sm_80")))
        dispatch.clear_memory_cache()
        again = tpp.unary("relu", *shape, target="nvptx-sm90")
    dispatch.clear_memory_cache()
    assert again.code == good and entry.read_bytes().endswith(good)


if __name__ == "__main__":
    main(sys.argv[1:])
