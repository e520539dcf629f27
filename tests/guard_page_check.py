"""Run remainder-shaped kernels on arrays that end exactly at a PROT_NONE page
(or begin right after one), reading and writing there, and check the results.

A kernel that loads or stores one element past an operand faults, so this
runs as its own process (test_guard_page.py starts it): exit status 0 means
every case passed; a case that touches the guard page dies with SIGSEGV after
printing its name. Usage: python guard_page_check.py GROUP [GROUP ...]
"""
from __future__ import annotations

import ctypes
import faulthandler
import mmap
import sys

import ml_dtypes
import numpy as np

import tpp

PAGE = mmap.PAGESIZE
PROT_NONE = 0
BF16 = np.dtype(ml_dtypes.bfloat16)
DT = {"f32": np.dtype(np.float32), "bf16": BF16, "f64": np.dtype(np.float64)}
SHAPES = [(1, 1), (3, 5), (7, 37), (2, 17), (1, 67), (33, 65)]

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
_keep = []      # mappings stay alive (and fenced) until the process exits


def fenced(count: int, dtype, at_end: bool = True) -> np.ndarray:
    """`count` elements ending exactly at a PROT_NONE page (or starting right after one)."""
    nbytes = count * np.dtype(dtype).itemsize
    pages = -(-nbytes // PAGE)
    mm = mmap.mmap(-1, (pages + 2) * PAGE)
    base = ctypes.addressof(ctypes.c_char.from_buffer(mm))
    for guard in (base, base + (pages + 1) * PAGE):
        if _libc.mprotect(guard, PAGE, PROT_NONE) != 0:
            raise OSError(ctypes.get_errno(), "mprotect failed")
    _keep.append(mm)
    offset = (pages + 1) * PAGE - nbytes if at_end else PAGE
    a = np.frombuffer(mm, dtype=dtype, count=count, offset=offset)
    assert a.flags.writeable
    return a


def fenced_like(values: np.ndarray, ld: int | None = None, at_end: bool = True) -> np.ndarray:
    """An array equal to `values` (0-D, 1-D or 2-D; 2-D with row stride ld >= n) whose
    last element touches the guard page after it (or first element the guard before)."""
    if values.ndim < 2:
        a = fenced(max(values.size, 1), values.dtype, at_end)[: values.size].reshape(values.shape)
    else:
        m, n = values.shape
        ld = ld or n
        flat = fenced((m - 1) * ld + n, values.dtype, at_end)
        a = np.lib.stride_tricks.as_strided(flat, (m, n), (ld * flat.itemsize, flat.itemsize))
    a[...] = values
    return a


def fenced_column(values: np.ndarray, ld: int, at_end: bool = True) -> np.ndarray:
    """An (m, 1) column view with row stride ld whose last element touches the guard."""
    m = values.shape[0]
    flat = fenced((m - 1) * ld + 1, values.dtype, at_end)
    a = np.lib.stride_tricks.as_strided(flat, (m, 1), (ld * flat.itemsize, flat.itemsize))
    a[...] = values
    return a


def check(got, expected, rtol=2e-6, what=""):
    got = np.asarray(got, np.float64)
    expected = np.asarray(expected, np.float64)
    assert np.allclose(got, expected, rtol=rtol, atol=1e-6, equal_nan=True), what


def layouts(n):
    """(ld, at_end): contiguous and strided, at both guards."""
    return [(n, True), (n + 3, True), (n, False), (n + 3, False)]


def case(name):
    print("case", name, flush=True)


# ---- groups ------------------------------------------------------------------------------------------
def group_unary(rng):
    for dt in ("f32", "bf16"):
        for kind in ("copy", "relu", "exp", "gelu_erf", "gelu_tanh_grad"):
            for m, n in SHAPES:
                k = tpp.unary(kind, m, n, dtype=dt)
                xs = [rng.uniform(-3, 3, (m, n)).astype(DT[dt]) for _ in range(2 if "grad" in kind else 1)]
                tol = 2 ** -7 if dt == "bf16" else 1e-5
                for ld, at_end in layouts(n):
                    case(f"{kind} {dt} {m}x{n} ld={ld} {'end' if at_end else 'start'}")
                    ins = [fenced_like(x, ld, at_end) for x in xs]
                    out = fenced_like(np.zeros((m, n), DT[dt]), ld, at_end)
                    check(k(*ins, out=out), k.reference(*xs), tol, kind)
                    case(f"{kind} {dt} {m}x{n} ld={ld} in place")
                    check(k(*ins, out=ins[0]), k.reference(*xs), tol, kind)


def group_binary(rng):
    for dt in ("f32", "bf16"):
        for m, n in SHAPES:
            a = rng.uniform(-3, 3, (m, n)).astype(DT[dt])
            operands = {"none": a[::-1].copy(), "row": a[0].copy(), "col": a[:, :1].copy(),
                        "scalar": np.array(1.5, DT[dt])}
            for mode, b in operands.items():
                for kind in ("add", "gt"):
                    k = tpp.binary(kind, m, n, dtype=dt, broadcast=mode)
                    for ld, at_end in layouts(n):
                        case(f"{kind} {dt} {m}x{n} b={mode} ld={ld} {'end' if at_end else 'start'}")
                        fb = fenced_column(b, ld, at_end) if mode == "col" else fenced_like(b, ld, at_end)
                        out_dt = np.bool_ if kind == "gt" else DT[dt]
                        out = fenced_like(np.zeros((m, n), out_dt), ld, at_end)
                        got = k(fenced_like(a, ld, at_end), fb, out=out)
                        check(got, k.reference(a, b), 2 ** -7, f"{kind} b={mode}")


def group_reduce(rng):
    for dt in ("f32", "bf16"):
        for kind in ("reduce_sum", "reduce_max"):
            for axis in (1, 0):
                for m, n in SHAPES:
                    argidx = kind == "reduce_max"
                    x = rng.integers(-4, 5, (m, n)).astype(DT[dt])
                    k = tpp.unary(kind, m, n, dtype=dt, axis=axis, argidx=argidx)
                    length = m if axis == 1 else n
                    for ld, at_end in layouts(n):
                        case(f"{kind} axis={axis} {dt} {m}x{n} ld={ld} {'end' if at_end else 'start'}")
                        vals = fenced_like(np.zeros(length, DT[dt]), at_end=at_end)
                        if argidx:
                            idx = fenced_like(np.zeros(length, np.int64), at_end=at_end)
                            got_v, got_i = k(fenced_like(x, ld, at_end), out=(vals, idx))
                            ref_v, ref_i = k.reference(x)
                            assert np.array_equal(got_i, ref_i), "argidx"
                        else:
                            got_v, ref_v = k(fenced_like(x, ld, at_end), out=vals), k.reference(x)
                        check(got_v, ref_v, 0, kind)


def group_transpose(rng):
    for dt in ("f32", "bf16", "f64"):
        for m, n in SHAPES + [(17, 3), (3, 17)]:
            x = rng.uniform(-3, 3, (m, n)).astype(DT[dt])
            k = tpp.unary("transpose", m, n, dtype=dt)
            for ld, at_end in layouts(n):
                case(f"transpose {dt} {m}x{n} ld={ld} {'end' if at_end else 'start'}")
                out = fenced_like(np.zeros((n, m), DT[dt]), m + (ld - n), at_end)
                assert np.array_equal(k(fenced_like(x, ld, at_end), out=out), x.T), "transpose"


def group_cast(rng):
    for src, dst in (("f32", "bf16"), ("bf16", "f32")):
        for m, n in SHAPES:
            x = rng.uniform(-3, 3, (m, n)).astype(DT[src])
            k = tpp.unary("cast", m, n, dtype=src, out_dtype=dst)
            for ld, at_end in layouts(n):
                case(f"cast {src}->{dst} {m}x{n} ld={ld} {'end' if at_end else 'start'}")
                out = fenced_like(np.zeros((m, n), DT[dst]), ld, at_end)
                assert np.array_equal(k(fenced_like(x, ld, at_end), out=out), x.astype(DT[dst])), "cast"


def group_large(rng):
    """Operands over the streaming-store threshold (a share of the last-level cache),
    ending at the guard at an arbitrary alignment (so the aligned head peel and the tail
    both matter)."""
    from tpp.kernels import eltwise
    share = eltwise.STREAM_SHARE * tpp.jit.host.last_level().size
    for dt in ("f32", "bf16"):
        n = 1037
        m = int(share // (1.5 * n * np.dtype(DT[dt]).itemsize)) + 3   # relu: x + y/2 (eltwise.streams)
        x = rng.uniform(-3, 3, (m, n)).astype(DT[dt])
        for ld, at_end in ((n, True), (n + 1, True), (n + 1, False)):
            case(f"large relu {dt} {m}x{n} ld={ld} {'end' if at_end else 'start'}")
            out = fenced_like(np.zeros((m, n), DT[dt]), ld, at_end)
            check(tpp.unary("relu", m, n, dtype=dt)(fenced_like(x, ld, at_end), out=out), np.maximum(x, 0), 0)
            case(f"large add {dt} {m}x{n} ld={ld}")
            out = fenced_like(np.zeros((m, n), DT[dt]), ld, at_end)
            add = tpp.binary("add", m, n, dtype=dt, broadcast="row")
            got = add(x, fenced_like(x[0], at_end=at_end), out=out)
            check(got, x.astype(np.float64) + x[0].astype(np.float64), 2 ** -7, "large add")


GROUPS = {name[len("group_"):]: fn for name, fn in globals().items() if name.startswith("group_")}

if __name__ == "__main__":
    faulthandler.enable()
    print("target", tpp.current_target().name, flush=True)
    for group in sys.argv[1:]:
        GROUPS[group](np.random.default_rng(0))
    print("all cases passed", flush=True)
