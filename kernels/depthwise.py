"""The depthwise-row TPP: one output row of a depthwise convolution,

    out[q, :] = act(bias[:] + sum_{i < R, t < S} X_i[q*stride + t*dilation, :] * W[i*S + t, :] + res[q, :])

for Q output pixels of c channels each. X_i is input row i, `extent(d)` pixels c
elements apart, of which the first pad[0] and the last pad[1] are zeros that are not
in memory (a convolution's left and right padding: their taps are skipped, or their
lanes masked, in the blocks at the row's ends only). The operand x is either R rows
(one per kernel row; its row stride, given at call time, folds in the vertical stride
and dilation) or, with row_ptrs, R addresses of rows (a caller points rows of the
top/bottom padding at one zero row instead of copying the image). A row's memory starts
at its first pixel past the left padding. W is R*S rows of c f32 weights, the bias one
row of c f32 values; x, the residual and out are f32 or bf16 (computed in f32, rounded
once at the store).

Two ways to put the row in vectors (c decides, nothing at run time):
- c > 1 (the blocked NCHWc layout): lanes run along channels. Per chunk of `lanes`
  channels the R*S weight vectors are loaded once and stay in registers; output
  pixels are taken in blocks of `qb` accumulators, and within a block each input
  pixel a kernel row touches is loaded once and feeds every (output, tap) pair it
  belongs to (stride 1, 3 taps, 7 outputs: 9 loads for 21 FMAs). So the loop is
  FMA-bound: R*S FMAs per output vector, R*(qb*stride + (S-1)*dil)/qb loads.
- c == 1 (a plain NCHW channel): lanes run along the pixels of the row. x, out and
  the residual are then single rows (1 x Q), the weights R*S scalars kept as splats.
  At stride 1 each tap window is one unaligned load (masked at the row's ends) that
  the FMA takes as its memory operand; at larger strides each kernel row's input span
  is loaded as consecutive vectors once per block and the windows (every stride-th
  element) are cut from them with shuffles. (Cutting stride-1 windows by shuffles
  too was ~4-8% slower: on Zen 4 the shuffles share the FMA pipes, loads do not.)

Taps are summed in (i, t) order from the bias, each an FMA: both ways give the same
bits for the same pixel. The output is written for exactly Q x c (masks on the
remainders); inputs are read only inside the x operand.
"""
from __future__ import annotations

import numpy as np
from llvmlite import ir

from ..jit.loops import I64, Loop, i64
from ..jit.targets import Target
from ..jit.types import DType
from ..jit.vec import F32, I1, I32, PTR, VecBuilder
from . import depthwise_plane, epilogue, fields
from . import unary as unary_k
from .errors import DescriptorError
from .family import Family, Lowering
from .operands import Bcast, Operand, define_kernel, element_ptr, load_element, unpack_args

FLOATS = frozenset({DType.F32, DType.BF16})
QB_MAX = 8          # output vectors per block (c > 1): past this the loads per FMA barely fall
PIXEL_VECTORS = 4   # output vectors per block (c == 1)
SPARE = 3           # registers besides weights and accumulators: an input and the address math
ACT_SPARE = 6       # more while a transcendental activation runs on an accumulator
CHEAP = frozenset({"relu", "leaky_relu", "abs", "negate", "square", "reciprocal"})   # a temporary or two


def extent(d) -> int:
    """Input pixels of a row, padding included: those the last output's last tap reads."""
    return (d.q - 1) * d.stride + (d.s - 1) * d.dilation + 1


def input_rows(d) -> int:
    """Rows of x: the R of each of the m output rows, row_step apart (c == 1)."""
    return d.r + (d.m - 1) * d.row_step


def stored(d) -> int:
    """Pixels of a row in memory: the extent less its padding."""
    return extent(d) - d.pad[0] - d.pad[1]


def plane_rows(d) -> int:
    """Rows of x in memory (plane): the input rows less the vertical padding."""
    return input_rows(d) - d.vpad[0] - d.vpad[1]


# ---- the family record -----------------------------------------------------------------
def _validate(d) -> None:
    what = "depthwise_row"
    fields.dtype_check(what, d.dtype, FLOATS)
    fields.dtype_check(f"{what} out_dtype", d.out_dtype, FLOATS)
    fields.put(d, "bias", fields.flag(what, "bias", d.bias))
    fields.put(d, "residual", fields.flag(what, "residual", d.residual))
    fields.put(d, "row_ptrs", fields.flag(what, "row_ptrs", d.row_ptrs))
    if d.m > 1 and d.c != 1:
        raise DescriptorError(f"tpp {what}: m > 1 output rows need c == 1 (pixels in the lanes), got c={d.c}")
    pad = tuple(fields.integer(what, "pad", p) for p in d.pad) if isinstance(d.pad, tuple) else ()
    if len(pad) != 2 or min(pad) < 0 or sum(pad) >= extent(d):
        raise DescriptorError(f"tpp {what}: pad must be (left, right) >= 0 leaving at least one of the row's "
                              f"{extent(d)} pixels in memory, got {d.pad!r}")
    fields.put(d, "pad", pad)
    fields.put(d, "plane", fields.flag(what, "plane", d.plane))
    vpad = tuple(fields.integer(what, "vpad", p) for p in d.vpad) if isinstance(d.vpad, tuple) else ()
    if len(vpad) != 2 or min(vpad) < 0 or sum(vpad) >= input_rows(d):
        raise DescriptorError(f"tpp {what}: vpad must be (top, bottom) >= 0 leaving at least one of the "
                              f"{input_rows(d)} input rows in memory, got {d.vpad!r}")
    fields.put(d, "vpad", vpad)
    if vpad != (0, 0) and not d.plane:
        raise DescriptorError(f"tpp {what}: vpad needs plane=True (rows by address skip the padding rows)")
    if d.plane and (d.c != 1 or d.stride != 1 or d.row_step != 1 or d.row_ptrs or stored(d) != d.q):
        raise DescriptorError(f"tpp {what}: plane=True needs c == 1, stride 1, row_step 1, no row_ptrs and "
                              f"rows of q pixels in memory (pad summing to (s-1)*dilation), got c={d.c} "
                              f"stride={d.stride} row_step={d.row_step} row_ptrs={d.row_ptrs} pad={pad}")
    if d.activation is not None:
        name = unary_k.ALIASES.get(d.activation, d.activation) if isinstance(d.activation, str) else d.activation
        if name not in epilogue.activation_kinds():
            raise DescriptorError(f"tpp {what}: activation must be None or one of "
                                  f"{', '.join(epilogue.activation_kinds())}, got {d.activation!r}")
        fields.put(d, "activation", name)


def _operands(d) -> list[Operand]:
    """x, w, [bias], [residual], out. c == 1: x, residual and out are rows of pixels."""
    f32, wx = DType.F32, stored(d)
    rows = input_rows(d)
    x = Operand("x", DType.I64, 1, rows) if d.row_ptrs else Operand("x", d.dtype, rows, wx * d.c)
    if d.plane:
        x = Operand("x", d.dtype, 1, plane_rows(d) * d.q)
    if d.c == 1:
        ops = [x, Operand("w", f32, d.r * d.s, 1)]
        bias = Operand("bias", f32, 1, 1, Bcast.SCALAR)
        tile = (1, d.m * d.q) if d.plane else (d.m, d.q)
    else:
        ops = [x, Operand("w", f32, d.r * d.s, d.c)]
        bias = Operand("bias", f32, 1, d.c, Bcast.ROW)
        tile = (d.q, d.c)
    if d.bias:
        ops.append(bias)
    if d.residual:
        ops.append(Operand("residual", d.dtype, *tile))
    return ops + [Operand("out", d.out_dtype, *tile, output=True)]


def read_rows(d, addresses) -> np.ndarray:
    """The rows a row_ptrs kernel reads, from their addresses (the reference is called
    like the kernel): (R, stored pixels * c) in the input dtype."""
    import ctypes
    count = stored(d) * d.c          # (R rows' worth of addresses: input_rows(d))
    rows = [np.frombuffer(bytes((ctypes.c_char * (count * d.dtype.itemsize)).from_address(int(a))),
                          d.dtype.numpy) for a in np.asarray(addresses, np.int64).reshape(-1)]
    return np.stack(rows)


def _reference(d, x, w, *rest):
    rest = list(rest)
    bias = rest.pop(0) if d.bias else None
    res = rest.pop(0) if d.residual else None
    if d.row_ptrs:
        x = read_rows(d, x)
    (left, right), (top, bottom) = d.pad, d.vpad
    x = np.asarray(x, np.float64).reshape(input_rows(d) - top - bottom, stored(d), d.c)
    x = np.pad(x, ((top, bottom), (left, right), (0, 0)))
    w = np.asarray(w, np.float64).reshape(d.r, d.s, d.c)
    out = np.zeros((d.m, d.q, d.c))
    span = (d.q - 1) * d.stride + 1
    for mi in range(d.m):
        for i in range(d.r):
            for t in range(d.s):
                o = t * d.dilation
                out[mi] += x[mi * d.row_step + i, o:o + span:d.stride] * w[i, t]
    if bias is not None:
        out += np.asarray(bias, np.float64).reshape(1, 1, d.c)
    if res is not None:
        out += np.asarray(res, np.float64).reshape(d.m, d.q, d.c)
    if d.activation is not None:
        out = epilogue.reference((d.activation,), out, {})
    if d.plane:
        return out.reshape(1, d.m * d.q)
    return out.reshape(d.m, d.q) if d.c == 1 else out.reshape(d.q, d.c)


# ---- code ------------------------------------------------------------------------------
def _spare(d) -> int:
    heavy = d.activation is not None and d.activation not in CHEAP
    return SPARE + (ACT_SPARE if heavy else 0)


def channel_block(d, target: Target) -> tuple[int, bool]:
    """(accumulators per block, whether the weights stay in registers) for c > 1: as many
    accumulators as fit beside the R*S weights, up to QB_MAX, evened out over Q (Q=28 by
    7s, not 8+8+8+4). Too many taps to hold: the weights are read at each use."""
    regs, taps = target.vector_registers, d.r * d.s
    hold = taps + 2 + _spare(d) <= regs
    room = regs - _spare(d) - (taps if hold else 2)
    qb = max(1, min(QB_MAX, room, d.q))
    blocks = -(-d.q // qb)
    return -(-d.q // blocks), hold


def emit_simd(module: ir.Module, name: str, target: Target, d) -> ir.Function:
    ops = _operands(d)
    fn, b = define_kernel(module, name, target)
    v = VecBuilder(b, target.lanes(32), target)
    args = dict(zip((op.name for op in ops), unpack_args(b, fn.args[0], len(ops))))
    x, ldx = args["x"]
    if d.plane:
        depthwise_plane.emit(v, d, args, x, target)
        b.ret_void()
        return fn
    if d.row_ptrs:
        rows = [b.inttoptr(b.load(element_ptr(b, x, DType.I64, i64(i)), typ=I64), PTR) for i in range(input_rows(d))]
    else:
        rows = [element_ptr(b, x, d.dtype, b.mul(i64(i), ldx)) for i in range(input_rows(d))]
    # each row's logical pixel 0 (the first of the left padding): only ever offset back
    # into memory by pixels >= pad[0]
    rows = [element_ptr(b, row, d.dtype, i64(-d.pad[0] * d.c)) for row in rows]
    (_pixel_row if d.c == 1 else _channel_row)(v, d, args, rows, target)
    b.ret_void()
    return fn


def _finish(v: VecBuilder, d, acc, res_ptr, out_ptr, mask) -> None:
    """Residual, activation (the GEMM epilogue's steps, one vector), store."""
    steps = (("residual",) if res_ptr is not None else ()) + ((d.activation,) if d.activation else ())
    if steps:
        acc = epilogue.apply_epilogue(v, steps, {"residual": (res_ptr, i64(0))}, d.dtype, [acc], i64(0), i64(0),
                                      1, 1, [mask])[0]
    v.store(acc, out_ptr, d.out_dtype, mask)


def _runs(d, first: int, last: int, size: int) -> tuple[list, tuple]:
    """Split outputs [0, Q) into blocks of `size`: those inside [first, last) (their reads
    are all in memory) as one loop (start, count of blocks), the others as constant-
    positioned (start, length) blocks that check each read."""
    lo = -(-first // size) * size if first > 0 else 0
    count = max(0, (last - lo) // size) if last > lo else 0
    edges, j = [], 0
    while j < lo:
        edges.append((j, min(size, d.q - j)))
        j += size
    j = lo + count * size
    while j < d.q:
        edges.append((j, min(size, d.q - j)))
        j += size
    return edges, (lo, count)


def _channel_row(v: VecBuilder, d, args: dict, rows: list, target: Target) -> None:
    b, f32, dt, lanes = v.b, DType.F32, d.dtype, v.lanes
    (w, ldw), (out, ldo) = args["w"], args["out"]
    taps, (left, right) = d.r * d.s, d.pad
    hi = extent(d) - right
    qb, hold = channel_block(d, target)
    # outputs whose taps all read memory: from the first past the left padding to the
    # last before the right padding
    first = -(-left // d.stride)
    last = max(first, (hi - 1 - (d.s - 1) * d.dilation) // d.stride + 1)
    edges, (lo, count) = _runs(d, first, min(last, d.q), qb)

    def chunk(j, mask) -> None:
        """Channels [j, j + lanes) of every output pixel."""
        def weight(k: int):
            return v.load(element_ptr(b, w, f32, b.add(b.mul(i64(k), ldw), j)), f32, mask)
        held = [weight(k) for k in range(taps)] if hold else None
        start = v.load(element_ptr(b, args["bias"][0], f32, j), f32, mask) if d.bias else v.const(0.0)
        bases = [element_ptr(b, row, dt, j) for row in rows]

        def block(q0, nq: int, known: int | None) -> None:
            """Outputs [q0, q0 + nq); known: q0 as a constant where reads are checked."""
            accs = [start] * nq
            # which (output, tap) pairs each input pixel of a kernel row feeds, relative to q0
            uses: dict[int, list] = {}
            for u in range(nq):
                for t in range(d.s):
                    uses.setdefault(u * d.stride + t * d.dilation, []).append((u, t))
            if known is not None:      # padding pixels: their taps add zero, skipped
                uses = {p: pairs for p, pairs in uses.items() if left <= known * d.stride + p < hi}
            for i in range(d.r):
                row = element_ptr(b, bases[i], dt, b.mul(q0, i64(d.stride * d.c)))
                ws = held[i * d.s:(i + 1) * d.s] if hold else [weight(i * d.s + t) for t in range(d.s)]
                for p in sorted(uses):
                    xv = v.load(element_ptr(b, row, dt, i64(p * d.c)), dt, mask)
                    for u, t in uses[p]:
                        accs[u] = v.fma(xv, ws[t], accs[u])
            for u, acc in enumerate(accs):
                qi = b.add(q0, i64(u))
                res = None
                if d.residual:
                    rp, ldr = args["residual"]
                    res = element_ptr(b, rp, dt, b.add(b.mul(qi, ldr), j))
                _finish(v, d, acc, res, element_ptr(b, out, d.out_dtype, b.add(b.mul(qi, ldo), j)), mask)

        if count:
            with Loop(b, lo, lo + count * qb, qb, name="qblock") as lp:
                block(lp.i, qb, None)
        for q0, nq in edges:
            block(i64(q0), nq, q0)

    whole, tail = divmod(d.c, lanes)
    if whole:
        with Loop(b, 0, whole * lanes, lanes, name="chunk") as lp:
            chunk(lp.i, None)
    if tail:
        chunk(i64(whole * lanes), v.tail_mask(i64(tail)))


def _window(v: VecBuilder, vecs: list, first: int, stride: int):
    """Elements first + l*stride (l < lanes) of the concatenated vectors `vecs`: one
    shuffle per pair of source vectors it spans (one for stride 1 or 2 from an offset
    within the first two lanes)."""
    b, lanes = v.b, v.lanes
    picks = [first + lane * stride for lane in range(lanes)]
    k0, k1 = picks[0] // lanes, picks[-1] // lanes
    if k0 == k1 and stride == 1 and first % lanes == 0:
        return vecs[k0]
    vty = ir.VectorType(I32, lanes)
    if k0 == k1:
        return b.shuffle_vector(vecs[k0], vecs[k0], ir.Constant(vty, [e - k0 * lanes for e in picks]))
    # lanes from vectors k0 and k0 + 1 first, then each later vector's lanes merged in
    idx = [e - k0 * lanes if e // lanes <= k0 + 1 else 0 for e in picks]
    acc = b.shuffle_vector(vecs[k0], vecs[k0 + 1], ir.Constant(vty, idx))
    for k in range(k0 + 2, k1 + 1):
        idx = [lanes + e - k * lanes if e // lanes == k else lane for lane, e in enumerate(picks)]
        acc = b.shuffle_vector(acc, vecs[k], ir.Constant(vty, idx))
    return acc


def _pixel_row(v: VecBuilder, d, args: dict, rows: list, target: Target) -> None:
    b, f32, dt, lanes = v.b, DType.F32, d.dtype, v.lanes
    (w, ldw), (out, ldo) = args["w"], args["out"]
    taps, (left, right) = d.r * d.s, d.pad
    hi = extent(d) - right
    weights = [v.splat(load_element(b, element_ptr(b, w, f32, b.mul(i64(k), ldw)), f32)) for k in range(taps)]
    start = v.splat(load_element(b, args["bias"][0], f32)) if d.bias else v.const(0.0)
    nv = max(1, min(PIXEL_VECTORS, (target.vector_registers - taps - _spare(d) - 3) // (2 * d.m)))

    def span_vectors(count: int) -> int:
        """Input vectors the windows of `count` output vectors span."""
        return ((count * lanes - 1) * d.stride + (d.s - 1) * d.dilation) // lanes + 1

    def block(j0, count: int, known: int | None) -> None:
        """Output vectors [j0, j0 + count*lanes); `known`: j0 as a constant, for a block
        at the row's ends (masked loads and stores), None in the loop (all in memory)."""
        accs = [[start] * count for _ in range(d.m)]
        e0 = b.mul(j0, i64(d.stride))
        # input row k feeds output row mi through kernel row k - mi*row_step: its vectors
        # are loaded once for all of them
        for k_row, row0 in enumerate(rows):
            feeds = [(mi, k_row - mi * d.row_step) for mi in range(d.m) if 0 <= k_row - mi * d.row_step < d.r]
            if not feeds:
                continue
            row = element_ptr(b, row0, dt, e0)
            if d.stride == 1:
                # each tap window is one unaligned load, which the FMA takes as its memory
                # operand (cheaper than the shuffles that cut windows from aligned vectors:
                # those share the FMA pipes); at the row's ends masked to the pixels in memory
                for u in range(count):
                    for t in range(d.s):
                        first = u * lanes + t * d.dilation
                        on = None if known is None else [left <= known + first + lane < hi for lane in range(lanes)]
                        if on is not None and not any(on):
                            continue                    # all padding: adds nothing
                        mask = None if on is None or all(on) else ir.Constant(v.vty(I1), on)
                        xv = v.load(element_ptr(b, row, dt, i64(first)), dt, mask)
                        for mi, i in feeds:
                            accs[mi][u] = v.fma(xv, weights[i * d.s + t], accs[mi][u])
                continue
            vecs = []
            for k in range(span_vectors(count)):
                on = None if known is None else \
                    [left <= known * d.stride + k * lanes + lane < hi for lane in range(lanes)]
                if on is not None and not any(on):
                    vecs.append(v.const(0.0))           # all padding: zeros, read nothing
                    continue
                mask = None if on is None or all(on) else ir.Constant(v.vty(I1), on)
                vecs.append(v.load(element_ptr(b, row, dt, i64(k * lanes)), dt, mask))
            for u in range(count):
                for t in range(d.s):
                    xv = _window(v, vecs, u * lanes * d.stride + t * d.dilation, d.stride)
                    for mi, i in feeds:
                        accs[mi][u] = v.fma(xv, weights[i * d.s + t], accs[mi][u])
        for mi in range(d.m):
            for u, acc in enumerate(accs[mi]):
                at = b.add(j0, i64(u * lanes))
                rest = None if known is None else d.q - known - u * lanes
                mask = None if rest is None or rest >= lanes else v.tail_mask(i64(rest))
                res = None
                if d.residual:
                    rp, ldr = args["residual"]
                    res = element_ptr(b, rp, dt, b.add(b.mul(i64(mi), ldr), at))
                _finish(v, d, acc, res, element_ptr(b, out, d.out_dtype, b.add(b.mul(i64(mi), ldo), at)), mask)

    # blocks whose loads all lie in memory run in a loop; the others are constant-
    # positioned blocks with masks (for rows up to a few vectors: all of them)
    step = nv * lanes
    reach = span_vectors(nv) * lanes
    lo = -(-left // (step * d.stride))
    safe = min(d.q // step, (hi - reach) // (step * d.stride) + 1 if hi >= reach else 0)
    if safe > lo:
        with Loop(b, lo * step, safe * step, step, name="pblock") as lp:
            block(lp.i, nv, None)
    else:
        lo = safe = 0
    spans = [(0, lo * step), (safe * step, d.q)]
    for j, end in spans:
        while j < end:
            count = min(nv, -(-(end - j) // lanes))
            block(i64(j), count, j)
            j += count * lanes


FAMILY = Family("depthwise_row", "depthwise_row", ("depthwise_row",), _validate, _operands, _reference,
                {"simd": Lowering(emit_simd)},
                unsupported={"simt": "the depthwise row is written for vector CPUs (register-held weights "
                                     "and sliding input windows); GPU convolutions take the GEMM path"})
