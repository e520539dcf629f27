"""Input from a hostile probe that crashed, hung or silently misbehaved, each pinned.

Cases that could kill or hang a process (an offset near 2**63 on an array that ends
at a guard page, a batch count whose transpose buffer wraps, disk-cache entries that
are garbage with a good checksum or a FIFO behind a symlink) run in a child process:
this file is also that child's script (`python test_hostile.py CASE ...`), which prints
each case's name before running it, so a crash names its case and the runner starts
the cases after it in a fresh process. The rest run here.
"""
from __future__ import annotations

import faulthandler
import hashlib
import itertools
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import cffi
import numpy as np
import pytest
from numpy.lib.stride_tricks import as_strided

import tpp
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


# ---- disk-cache entries that are not what their key names --------------------------------
_fresh = itertools.count()


def _planted(make_bad) -> None:
    """Write the disk entry of a fresh relu kernel without linking it, replace it with
    make_bad(path, object code), then dispatch it in this process (so the bad entry is
    the first code for its symbol): it must be discarded, rebuilt and work."""
    shape = (5, 7000 + next(_fresh))              # a symbol no earlier case linked
    with tempfile.TemporaryDirectory(prefix="tpp-hostile-") as tmp, \
            tpp.config.override(cache=True, cache_dir=Path(tmp) / "kernels"):
        directory = Path(tmp)
        desc, target = tpp.unary_desc("relu", *shape), dispatch.current_target()
        obj, symbol, _ = dispatch._object_code({"target": target, "descriptor": desc},
                                               lambda sym: dispatch._module(desc, target, sym))
        entry, = (directory / "kernels").glob(f"{symbol[4:]}*.o")
        make_bad(entry, obj)
        x = np.linspace(-1, 1, shape[0] * shape[1], dtype=np.float32).reshape(shape)
        k = tpp.unary("relu", *shape)
        np.testing.assert_array_equal(k(x), np.maximum(x, 0))
        rebuilt = entry.read_bytes()
        assert entry.is_file() and not entry.is_symlink() and disk_cache._unwrap(rebuilt) == obj


def _entry(payload: bytes) -> bytes:
    """An entry with a good checksum around any payload."""
    return disk_cache._MAGIC + hashlib.sha256(payload).digest() + payload


BAD_PAYLOADS = {
    "garbage": lambda obj: os.urandom(len(obj)),
    "empty": lambda obj: b"",
    "elf_header_only": lambda obj: obj[:64],
    "elf_cut_in_half": lambda obj: obj[: len(obj) // 2],
    "section_table_past_the_end": lambda obj: obj[:40] + (len(obj) + 4096).to_bytes(8, "little") + obj[48:],
    "another_machine": lambda obj: obj[:18] + (183).to_bytes(2, "little") + obj[20:],     # AArch64
    "another_kernels_object": lambda obj: obj.replace(b"tpp_", b"tqq_"),
}
for _name, _bad in BAD_PAYLOADS.items():
    case(lambda _bad=_bad: _planted(lambda path, obj: path.write_bytes(_entry(_bad(obj)))),
         f"cache_entry_{_name}")


def _fifo_behind_symlink(path: Path, obj: bytes) -> None:
    fifo = path.with_name("fifo")
    os.mkfifo(fifo)
    path.unlink()
    path.symlink_to(fifo)


def _fifo(path: Path, obj: bytes) -> None:
    path.unlink()
    os.mkfifo(path)


def _symlink_to_a_good_entry(path: Path, obj: bytes) -> None:
    """Even a valid entry is not read through a link (it could be swapped under us)."""
    elsewhere = path.with_name("elsewhere")
    path.rename(elsewhere)
    path.symlink_to(elsewhere)


for _name, _make in (("fifo_behind_a_symlink", _fifo_behind_symlink), ("fifo", _fifo),
                     ("symlink_to_a_good_entry", _symlink_to_a_good_entry)):
    case(lambda _make=_make: _planted(_make), f"cache_entry_{_name}")


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


# ---- the runner (test_fuzz.py uses it too) -------------------------------------------------
def run_children(script: Path, names: list[str], kernel_cache_dir, timeout: float = 120) -> dict[str, str]:
    """Run `python script NAME ...` (each name printed as `case NAME`, then `ok NAME` or
    `failed NAME: why`) in as few child processes as crashes allow: after a crash or a
    hang, the names after the one running start in a fresh child. Returns name -> "ok"
    or what happened, with the child's last lines (its log of what it was doing)."""
    results: dict[str, str] = {}
    left = list(names)
    env = {**os.environ, "TPP_CACHE_DIR": str(kernel_cache_dir), "PYTHONFAULTHANDLER": "1"}
    while left:
        try:
            proc = subprocess.run([sys.executable, str(script), *left], capture_output=True, text=True,
                                  env=env, timeout=timeout)
            out, err = proc.stdout, proc.stderr
            how = (f"killed by {signal.Signals(-proc.returncode).name}" if proc.returncode < 0
                   else f"exit status {proc.returncode}")
        except subprocess.TimeoutExpired as exc:
            out, err = (exc.stdout or b"").decode(), (exc.stderr or b"").decode()
            how = f"hung (killed after {timeout} s)"
        running, lines = None, []
        for line in out.splitlines():
            word, _, rest = line.partition(" ")
            if word == "case":
                running, lines = rest, []
            elif word == "ok":
                results[rest] = "ok"
            elif word == "failed":
                name, _, detail = rest.partition(": ")
                results[name] = detail + "\n--- the child's output ---\n" + "\n".join(lines[-40:])
            else:
                lines.append(line)
        tail = "\n".join(lines[-5:]) + f"\n--- stderr (tail) ---\n{err[-2500:]}"
        if running is None or running in results:      # nothing started, or every one finished
            for name in left:
                results.setdefault(name, f"not run: the child ended with {how}\n{tail}")
            break
        results[running] = f"{how} during it; last logged:\n{tail}"
        left = left[left.index(running) + 1:]
    return results


@pytest.fixture(scope="module")
def hostile(kernel_cache_dir) -> dict[str, str]:
    return run_children(Path(__file__), list(CASES), kernel_cache_dir)


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
        entry.write_bytes(_entry(good.replace(b".target sm_90", b".target sm_80")))
        dispatch.clear_memory_cache()
        again = tpp.unary("relu", *shape, target="nvptx-sm90")
    dispatch.clear_memory_cache()
    assert again.code == good and disk_cache._unwrap(entry.read_bytes()) == good


if __name__ == "__main__":
    main(sys.argv[1:])
