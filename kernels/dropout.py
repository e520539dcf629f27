"""The dropout TPP: y = x * keep / (1 - p), keep drawn from a counter-based RNG.

Philox 4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC'11)
in IR: the random word of element (row r, column j) is word j % 4 of Philox applied
to the counter (j // 4, r, 0, 0) under the key (seed low 32 bits, seed high 32 bits).
It depends on nothing but the seed and the element's place, so the mask is the same
whatever the thread count, the tiling or the vector length, and a backward pass can
draw it again. r is the row's index in the whole tensor: the kernel takes the index
of its first row at call time (composites pass their tile's).

keep = (word >> 8) * 2**-24 >= p: each element is kept with probability 1 - p (a
24-bit uniform, like torch's float draws). One Philox call gives the words of four
columns; a step computes Philox for `lanes` counters at once and interleaves the four
result vectors into the columns' order (shuffles).

Operands: x (M x N), seed (i64 scalar), row0 (i64 scalar), y (M x N).
"""
from __future__ import annotations

import numpy as np
from llvmlite import ir

from ..jit.loops import I64, Loop, i64
from ..jit.targets import Target
from ..jit.types import DType
from ..jit.vec import VecBuilder
from . import fields
from .eltwise import compute_lanes
from .errors import DescriptorError
from .family import Family, Lowering
from .operands import Bcast, Operand, define_kernel, element_ptr, unpack_args

M0, M1 = 0xD2511F53, 0xCD9E8D57          # Philox 4x32 multipliers
W0, W1 = 0x9E3779B9, 0xBB67AE85          # its Weyl key increments
ROUNDS = 10
I32 = ir.IntType(32)
FLOATS = frozenset({DType.F32, DType.BF16})


def philox(counter: np.ndarray, key: tuple[int, int]) -> np.ndarray:
    """Philox 4x32-10 in numpy: counter (..., 4) uint32 -> (..., 4) uint32."""
    c = counter.astype(np.uint64)
    k0, k1 = np.uint64(key[0]), np.uint64(key[1])
    mask = np.uint64(0xFFFFFFFF)
    for r in range(ROUNDS):
        p0, p1 = np.uint64(M0) * c[..., 0], np.uint64(M1) * c[..., 2]
        c = np.stack([(p1 >> np.uint64(32)) ^ c[..., 1] ^ k0, p1 & mask,
                      (p0 >> np.uint64(32)) ^ c[..., 3] ^ k1, p0 & mask], axis=-1)
        k0, k1 = (k0 + np.uint64(W0)) & mask, (k1 + np.uint64(W1)) & mask
    return c.astype(np.uint32)


def words(rows: np.ndarray, cols: int, seed: int) -> np.ndarray:
    """The random word of every element (row in `rows`, column < cols)."""
    q = np.arange(-(-cols // 4), dtype=np.uint64)
    counter = np.zeros((len(rows), len(q), 4), np.uint64)
    counter[..., 0] = q[None, :]
    counter[..., 1] = np.asarray(rows, np.uint64)[:, None]
    out = philox(counter, (seed & 0xFFFFFFFF, (seed >> 32) & 0xFFFFFFFF))
    return out.reshape(len(rows), -1)[:, :cols]


def threshold_of(p: float) -> int:
    """The smallest 24-bit draw that is kept: ceil(p * 2**24) (2**24 for p = 1: none)."""
    return int(np.ceil(p * 2.0 ** 24))


def keep_mask(rows: np.ndarray, cols: int, seed: int, p: float) -> np.ndarray:
    return (words(rows, cols, seed) >> 8).astype(np.float64) * 2.0 ** -24 >= p


def _validate(d) -> None:
    fields.dtype_check("dropout", d.dtype, FLOATS)
    p = fields.real("dropout", "p", d.p)
    if not 0.0 <= p <= 1.0:
        raise DescriptorError(f"tpp dropout: p must be in [0, 1], got {p!r}")
    fields.put(d, "p", p)


def _operands(d) -> list[Operand]:
    return [Operand("x", d.dtype, d.m, d.n), Operand("seed", DType.I64, 1, 1, Bcast.SCALAR),
            Operand("row0", DType.I64, 1, 1, Bcast.SCALAR), Operand("y", d.dtype, d.m, d.n, output=True)]


def _reference(d, x, seed, row0):
    seed, row0 = int(np.asarray(seed)), int(np.asarray(row0))
    keep = keep_mask(np.arange(row0, row0 + d.m), d.n, seed % 2 ** 64, d.p)
    x = np.asarray(x, np.float64).reshape(d.m, d.n)
    return np.where(keep, x / (1.0 - d.p), 0.0) if d.p < 1 else np.zeros((d.m, d.n))


def _philox_ir(b: ir.IRBuilder, v: VecBuilder, c: list, k0: ir.Value, k1: ir.Value) -> list:
    """Ten rounds on a vector of counters (four <lanes x i32>); keys are i32 scalars."""
    wide = v.vty(I64)

    def mulhilo(m: int, x: ir.Value):
        p = b.mul(b.zext(x, wide), v.splat(ir.Constant(I64, m)))       # 32 x 32 -> 64 (vpmuludq)
        return b.trunc(b.lshr(p, v.splat(ir.Constant(I64, 32))), x.type), b.trunc(p, x.type)
    for _ in range(ROUNDS):
        hi0, lo0 = mulhilo(M0, c[0])
        hi1, lo1 = mulhilo(M1, c[2])
        c = [b.xor(b.xor(hi1, c[1]), v.splat(k0)), lo1, b.xor(b.xor(hi0, c[3]), v.splat(k1)), lo0]
        k0, k1 = b.add(k0, ir.Constant(I32, W0)), b.add(k1, ir.Constant(I32, W1))
    return c


def _interleave(b: ir.IRBuilder, lanes: int, w: list) -> list:
    """Four vectors of words per counter -> four vectors in column order: column
    4i + k is w[k][i]."""
    def cat(x, y, n):
        return b.shuffle_vector(x, y, ir.Constant(ir.VectorType(I32, 2 * n), list(range(2 * n))))
    both = cat(cat(w[0], w[1], lanes), cat(w[2], w[3], lanes), 2 * lanes)
    order = [k * lanes + i for i in range(lanes) for k in range(4)]
    out = []
    for part in range(4):
        pick = order[part * lanes:(part + 1) * lanes]
        out.append(b.shuffle_vector(both, ir.Constant(both.type, None), ir.Constant(ir.VectorType(I32, lanes), pick)))
    return out


def emit_simd(module: ir.Module, name: str, target: Target, d) -> ir.Function:
    ops = _operands(d)
    fn, b = define_kernel(module, name, target)
    lanes = compute_lanes(target, ops[:1])
    v = VecBuilder(b, lanes, target)
    (x, ldx), (seed_p, _), (row_p, _), (y, ldy) = unpack_args(b, fn.args[0], 4)
    seed = b.load(seed_p, typ=I64)
    row0 = b.load(row_p, typ=I64)
    k0, k1 = b.trunc(seed, I32), b.trunc(b.lshr(seed, i64(32)), I32)
    elem = ir.FloatType()
    scale = v.const(1.0 / (1.0 - d.p) if d.p < 1 else 0.0, elem)
    # (word >> 8) * 2**-24 >= p, exactly: the 24-bit integer against ceil(p * 2**24)
    threshold = v.const(threshold_of(d.p), I32)
    zero = v.const(0.0, elem)
    group = 4 * lanes                                           # columns one Philox step covers
    with Loop(b, 0, d.m, name="row") as row:
        r32 = v.splat(b.trunc(b.add(row0, row.i), I32))
        xrow = element_ptr(b, x, d.dtype, b.mul(row.i, ldx))
        yrow = element_ptr(b, y, d.dtype, b.mul(row.i, ldy))

        def step(j0: ir.Value, last: int | None) -> None:
            """Columns [j0, j0 + group); `last`: how many of them exist (None: all)."""
            q = b.add(v.splat(b.trunc(b.lshr(j0, i64(2)), I32)), v.iota(I32))
            zeros = v.const(0, I32)
            ws = _interleave(b, lanes, _philox_ir(b, v, [q, r32, zeros, zeros], k0, k1))
            for part in range(4):
                count = lanes if last is None else max(0, min(lanes, last - part * lanes))
                if count == 0:
                    continue
                mask = None if count == lanes else v.tail_mask(i64(count))
                j = b.add(j0, i64(part * lanes))
                xs = v.load(element_ptr(b, xrow, d.dtype, j), d.dtype, mask)
                keep = b.icmp_unsigned(">=", b.lshr(ws[part], v.const(8, I32)), threshold)
                v.store(b.select(keep, b.fmul(xs, scale), zero), element_ptr(b, yrow, d.dtype, j), d.dtype, mask)
        full = d.n // group * group
        if full:
            with Loop(b, 0, full, group, name="cols") as col:
                step(col.i, None)
        if d.n > full:
            step(i64(full), d.n - full)
    b.ret_void()
    return fn


FAMILY = Family("dropout", "eltwise", ("dropout",), _validate, _operands, _reference, {"simd": Lowering(emit_simd)},
                unsupported={"simt": "dropout is compiled for vector CPUs only so far"})
