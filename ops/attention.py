"""tpp.ops.attention: softmax(Q K^T * scale + mask) V, flash-style, with the semantics of
torch.nn.functional.scaled_dot_product_attention.

ONE composite on the layer, two phases:
  pack:    K^T of every (batch, kv head) key block into D x Bt blocks (row stride Bt: a
           block's rows are whole vectors for the S GEMM, not rows Sk apart); for bf16
           the K^T and V blocks are VNNI-2 packed for the dot kernels.
  compute: over (batch, head, block of Bt queries), the parallel range; per query block
           ONE loop over its key blocks keeps the output accumulator O (Bt x D, f32), the
           running row max m and sum l in per-thread buffers and never forms the Sq x Sk
           scores:
               S  = Q_blk K_blk^T                       GEMM
               T  = (S scale + mask) log2 e              (inside the next two equations)
               m' = max(m, rowmax(T))                   equation (one value per row)
               P  = exp2(T - m')                        equation, in S's place
               l  = l exp2(m - m') + rowsum(P)          reduce + equation
               O  = O exp2(m - m') + P V_blk            binary mul (col) + GEMM (beta 1)
           then out = O / l (an equation, cast to the output dtype). The first key block
           starts m, l and O instead of rescaling them.
Causal (top-left aligned like torch: query i sees keys j <= i) uses query and key blocks
of the same Bt on one grid: key blocks past the query block's diagonal are skipped, the
one on it adds a lower-triangular 0 / -inf tile. A row whose keys are all masked gives
NaN (0 / 0), as torch does.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import compose
from .. import expr as eq
from ..descriptors import BinaryDesc, GemmDesc, UnaryDesc
from ..dtypes import parse as parse_dtype
from ..errors import DTypeError, ShapeError
from ..expr import EquationDesc, equation_desc
from ..jit.loops import i64
from ..jit.types import DType
from ..kernels.operands import Bcast
from ..kernels.vmath import LOG2E
from .args import element_strides, output

WHAT = "tpp.ops.attention"
# the plan (measured, B=1 H=12 D=64 on Zen 4): causal, 64 queries per block (the diagonal
# wastes half a 64 x 64 tile per block) and 128 keys, 256 where Sk >= LONG_KEYS (S=2048
# +3% f32, +5% bf16); otherwise 128 queries x 256 keys (S=512 +4% f32 on 1 thread over
# 64 x 128, S=2048 equal to 64 x 256)
BLOCK = 64                              # queries per block, causal
KEY_BLOCK = 128                         # keys per block (a multiple of the query block), causal
LONG_KEY_BLOCK = 256                    # ... where Sk >= LONG_KEYS, and every non-causal plan
LONG_KEYS = 1024
WIDE_BLOCK = 128                        # queries per block, not causal
LOWEST = -float(np.finfo(np.float32).max)   # m's floor: exp2(m - m') stays finite for masked rows


@dataclass(frozen=True)
class AttentionDesc(compose.CompositeDesc):
    batch: int
    heads: int
    kv_heads: int
    sq: int
    sk: int
    d: int
    dtype: DType
    scale: float
    causal: bool
    q_strides: tuple[int, ...]
    k_strides: tuple[int, ...]
    v_strides: tuple[int, ...]
    out_strides: tuple[int, ...]
    mask_strides: tuple[int, ...] | None = None     # an additive f32 mask, broadcast (stride 0)
    block: int = BLOCK                              # queries per block
    key_block: int = BLOCK                          # keys per block (a multiple of block)
    kind = "attention"

    def __post_init__(self) -> None:
        if self.key_block % self.block:
            raise ValueError(f"{WHAT}: key_block {self.key_block} must be a multiple of block {self.block}")

    # ---- geometry ---------------------------------------------------------------------
    @property
    def key_blocks(self) -> int:
        return -(-self.sk // self.key_block)

    @property
    def vnni(self) -> bool:
        return self.dtype is DType.BF16

    def kt_block(self) -> int:
        """Elements of one packed K^T block (D x Bk; VNNI pairs of D rows for bf16)."""
        return (-(-self.d // 2) * 2 if self.vnni else self.d) * self.key_block

    def v_block(self) -> int:
        return self.key_block * self.d        # bf16: Bk/2 pairs x 2D

    def _mask_mode(self) -> Bcast:
        sq_stride, sk_stride = self.mask_strides[2], self.mask_strides[3]
        return {(False, False): Bcast.FULL, (True, False): Bcast.ROW, (False, True): Bcast.COL,
                (True, True): Bcast.SCALAR}[(sq_stride == 0 or self.sq == 1, sk_stride == 0 or self.sk == 1)]

    # ---- the equations of one (query block, key block) step -----------------------------
    def _scores(self, tri: bool) -> tuple[eq.Expr, list[str]]:
        """(S scale (+ mask) (+ the causal triangle)) log2 e, and the inputs it reads after S:
        the softmax runs in base 2 (m and m' too), where exp2 needs no range split."""
        e, names = eq.arg(0) * (self.scale * LOG2E), []
        if self.mask_strides is not None:
            e = e + eq.arg(1, self._mask_mode().value) * LOG2E
            names.append("mask")
        if tri:
            e = e + eq.arg(1 + len(names))
            names.append("tri")
        return e, names

    def composite(self, target) -> compose.Composite:
        dt, f32, d, bq, bk = self.dtype, DType.F32, self.d, self.block, self.key_block
        tensors = [compose.Tensor("q", dt, (self.batch, self.heads, self.sq, d), self.q_strides),
                   compose.Tensor("k", dt, (self.batch, self.kv_heads, self.sk, d), self.k_strides),
                   compose.Tensor("v", dt, (self.batch, self.kv_heads, self.sk, d), self.v_strides)]
        if self.mask_strides is not None:
            tensors.append(compose.Tensor("mask", f32, (self.batch, self.heads, self.sq, self.sk),
                                          self.mask_strides))
        if self.causal:
            tensors.append(compose.Tensor("tri", f32, (bk, bk)))
        tensors.append(compose.Tensor("out", dt, (self.batch, self.heads, self.sq, d), self.out_strides,
                                      output=True))
        blocks = self.batch * self.kv_heads * self.key_blocks
        scratch = [compose.Scratch("kt", dt, blocks * self.kt_block(), "call", "K^T blocks"),
                   compose.Scratch("s", f32, bq * bk, "thread", "a block of scores"),
                   compose.Scratch("o", f32, bq * d, "thread", "the output accumulator"),
                   compose.Scratch("m", f32, bq, "thread", "the running row max"),
                   compose.Scratch("m_new", f32, bq, "thread", "the new row max"),
                   compose.Scratch("l", f32, bq, "thread", "the running row sum"),
                   compose.Scratch("rs", f32, bq, "thread", "a block's row sums"),
                   compose.Scratch("alpha", f32, bq, "thread", "exp2(m - m')")]
        if self.vnni:
            scratch += [compose.Scratch("vp", dt, blocks * self.v_block(), "call", "VNNI-packed V blocks"),
                        compose.Scratch("p16", dt, bq * bk, "thread", "P in bf16"),
                        compose.Scratch("kt_rows", dt, d * bk, "thread", "a K^T block before VNNI packing")]
        pack = compose.Loop("pb", self.batch, (compose.Loop("ph", self.kv_heads, (
            compose.Loop("pk", self.sk, (self._pack,), tile=bk, parallel=True),), parallel=True),), parallel=True)
        compute = compose.Loop("b", self.batch, (compose.Loop("h", self.heads, (
            compose.Loop("qb", self.sq, (self._query_block,), tile=bq, parallel=True),), parallel=True),),
            parallel=True)
        return compose.Composite(tuple(tensors), (pack, compose.BARRIER, compute), tuple(scratch))

    # ---- pack phase ---------------------------------------------------------------------
    def _block_index(self, ctx, b_idx, kvh, kb):
        b = ctx.b
        return b.add(b.mul(b.add(b.mul(b_idx, i64(self.kv_heads)), kvh), i64(self.key_blocks)), kb)

    def _pack(self, ctx) -> None:
        b, dt, d, bt = ctx.b, self.dtype, self.d, self.key_block
        rows = ctx.size["pk"]
        at = (ctx.start["pb"], ctx.start["ph"], ctx.start["pk"])
        blk = self._block_index(ctx, ctx.start["pb"], ctx.start["ph"], ctx.index["pk"])
        kt = b.gep(ctx.buffer("kt"), [b.mul(blk, i64(self.kt_block()))], source_etype=dt.storage)
        transpose = ctx.primitive(UnaryDesc("transpose", rows, d, dt, dt))
        if not self.vnni:
            ctx.call(transpose, [ctx.tensor("k").arg(*at), (kt, bt)])
            return
        staged = (ctx.buffer("kt_rows"), bt)
        ctx.call(transpose, [ctx.tensor("k").arg(*at), staged])
        ctx.call(ctx.primitive(UnaryDesc("vnni_pack", d, rows, dt, dt)), [staged, (kt, 2 * bt)])
        vp = b.gep(ctx.buffer("vp"), [b.mul(blk, i64(self.v_block()))], source_etype=dt.storage)
        ctx.call(ctx.primitive(UnaryDesc("vnni_pack", rows, d, dt, dt)), [ctx.tensor("v").arg(*at), (vp, 2 * d)])

    # ---- compute phase --------------------------------------------------------------------
    def _query_block(self, ctx) -> None:
        b, bq = ctx.b, ctx.size["qb"]
        kvh = b.sdiv(ctx.start["h"], i64(self.heads // self.kv_heads))
        bk = self.key_block
        full = self.sk // bk                            # whole key blocks
        edge = self.sk - full * bk                      # keys in the short last one
        # the key block holding this query block's diagonal (query i sees keys j <= i)
        diag = b.sdiv(ctx.start["qb"], i64(bk))

        def step(kb, keys: int, first: bool, tri: bool):
            return lambda ctx: self._key_block(ctx, kvh, kb(ctx), bq, keys, first, tri)
        if not self.causal:
            if full:
                ctx.run(step(lambda ctx: i64(0), bk, True, False))
                if full > 1:
                    ctx.run(compose.Loop("kb", start=lambda ctx: i64(1), stop=lambda ctx: i64(full),
                                         body=(step(lambda ctx: ctx.index["kb"], bk, False, False),)))
            if edge:
                ctx.run(step(lambda ctx: i64(full), edge, not full, False))
        else:
            # whole key blocks before the diagonal one, the diagonal one (whole, or the short
            # last one where Sk ends in it) with the triangle, and a short last block wholly
            # before the diagonal where Sq > Sk
            before = b.select(b.icmp_signed("<", diag, i64(full)), diag, i64(full))
            has_first = b.icmp_signed(">", before, i64(0))
            with b.if_then(has_first):
                ctx.run(step(lambda ctx: i64(0), bk, True, False))
                ctx.run(compose.Loop("kb", start=lambda ctx: i64(1), stop=lambda ctx: before,
                                     body=(step(lambda ctx: ctx.index["kb"], bk, False, False),)))
            # in the diagonal key block, keys past this query block's last row are all masked:
            # its offset there (a multiple of the query block) picks a version that stops
            # at the block's last query
            offset = b.sub(ctx.start["qb"], b.mul(diag, i64(bk)))
            cases = []
            for t in range(bk // self.block):
                at = b.icmp_signed("==", offset, i64(t * self.block))
                stop = t * self.block + bq
                cases.append((min(bk, stop), b.and_(at, b.icmp_signed("<", diag, i64(full))), True))
                if edge:
                    cases.append((min(edge, stop), b.and_(at, b.icmp_signed("==", diag, i64(full))), True))
            if edge:
                cases.append((edge, b.icmp_signed(">", diag, i64(full)), False))
            for keys, cond, tri in cases:
                kb = (lambda ctx: diag) if tri else (lambda ctx: i64(full))
                with b.if_then(cond):
                    with b.if_else(has_first) as (then, otherwise):
                        with then:
                            ctx.run(step(kb, keys, False, tri))
                        with otherwise:
                            ctx.run(step(kb, keys, True, tri))
        self._finish(ctx, bq)

    def _key_block(self, ctx, kvh, kb, bq: int, keys: int, first: bool, tri: bool) -> None:
        b, dt, f32, d, bt = ctx.b, self.dtype, DType.F32, self.d, self.key_block
        bi, h, q0 = ctx.start["b"], ctx.start["h"], ctx.start["qb"]
        blk = self._block_index(ctx, bi, kvh, kb)
        s, o = (ctx.buffer("s"), bt), (ctx.buffer("o"), d)
        # S = Q K^T
        kt = b.gep(ctx.buffer("kt"), [b.mul(blk, i64(self.kt_block()))], source_etype=dt.storage)
        ctx.call(ctx.primitive(GemmDesc(bq, keys, d, dt, beta=0.0, lda=self.q_strides[2], ldb=2 * bt if self.vnni
                                        else bt, ldc=bt, out_dtype=f32, b_vnni=self.vnni)),
                 [ctx.tensor("q").arg(bi, h, q0), (kt, 2 * bt if self.vnni else bt), s])
        scores, names = self._scores(tri)
        extra = []
        for name in names:
            # the triangle's rows from this query block's offset in its diagonal key block
            extra.append(ctx.tensor("mask").arg(bi, h, q0, b.mul(kb, i64(bt))) if name == "mask"
                         else ctx.tensor("tri").arg(b.sub(q0, b.mul(kb, i64(bt)))))
        # one equation over the tile, a pass pair per row: m' = max(m, rowmax(scores)) (the
        # first block from the floor), P = exp2(scores - m') stored while its row sum rs
        # accumulates; then one over the block's rows as vectors: alpha = exp2(m - m'),
        # l = l alpha + rs, m = m' (per-row work in the tile's equation would run a whole
        # vector of exp2 for each row's one alpha)
        c = self.scale * LOG2E
        if names or c <= 0:
            row_max = eq.max(scores)
        else:
            row_max = eq.max(eq.arg(0)) * c        # = max(S c): rounding is monotonic
        m_new = eq.maximum(LOWEST if first else eq.arg(1 + len(names), "col"), row_max)
        p_expr = eq.exp2(scores - m_new)
        p = (ctx.buffer("p16"), bt) if self.vnni else s
        col = {name: (ctx.buffer(name), 1) for name in ("m", "m_new", "l", "rs", "alpha")}
        modes = (Bcast.FULL, *(self._mask_mode() if n == "mask" else Bcast.FULL for n in names),
                 *((Bcast.COL,) if not first else ()))
        tree = ("outputs", "native", p_expr.node, m_new.node, eq.sum(p_expr).node)
        desc = EquationDesc(bq, keys, tree, tuple((f32, mode) for mode in modes), dt)
        outs = [p, col["m"], col["l"]] if first else [p, col["m_new"], col["rs"]]
        ctx.call(ctx.primitive(desc), [s, *extra, *([col["m"]] if not first else []), *outs])
        if not first:
            m_old, m_cur, l_old, rs = eq.arg(0), eq.arg(1), eq.arg(2), eq.arg(3)
            alpha = eq.exp2(m_old - m_cur)
            tree = ("outputs", "exact", alpha.node, (l_old * alpha + rs).node, m_cur.node)
            rows = tuple((f32, Bcast.FULL) for _ in range(4))
            vecs = [(ctx.buffer(name), bq) for name in ("m", "m_new", "l", "rs", "alpha", "l", "m")]
            ctx.call(ctx.primitive(EquationDesc(1, bq, tree, rows, f32)), vecs)
            ctx.call(ctx.primitive(BinaryDesc("mul", bq, d, f32, Bcast.FULL, Bcast.COL)), [o, col["alpha"], o])
        # O (+)= P V
        if self.vnni:
            vp = b.gep(ctx.buffer("vp"), [b.mul(blk, i64(self.v_block()))], source_etype=dt.storage)
            v_arg = (vp, 2 * d)
        else:
            v_arg = ctx.tensor("v").arg(bi, kvh, b.mul(kb, i64(bt)))
        ctx.call(ctx.primitive(GemmDesc(bq, d, keys, dt, beta=0.0 if first else 1.0, lda=bt,
                                        ldb=2 * d if self.vnni else self.v_strides[2], ldc=d, out_dtype=f32,
                                        b_vnni=self.vnni)), [p, v_arg, o])

    def _finish(self, ctx, bq: int) -> None:
        """out = O / l for the query block (NaN where every key was masked)."""
        o = (ctx.buffer("o"), self.d)
        out = ctx.tensor("out").arg(ctx.start["b"], ctx.start["h"], ctx.start["qb"])
        desc = equation_desc(eq.arg(0) / eq.arg(1, "col"), bq, self.d, dtypes=(DType.F32, DType.F32),
                             out_dtype=self.dtype)
        ctx.call(ctx.primitive(desc), [o, (ctx.buffer("l"), 1), out])


def plan(sk: int, causal: bool) -> tuple[int, int]:
    """(queries, keys) per block."""
    if causal:
        return BLOCK, LONG_KEY_BLOCK if sk >= LONG_KEYS else KEY_BLOCK
    return WIDE_BLOCK, LONG_KEY_BLOCK


def triangle(block: int) -> np.ndarray:
    """The causal tile of a diagonal block: 0 where key j <= query i, -inf above."""
    return np.where(np.tri(block, block, dtype=bool), 0.0, -np.inf).astype(np.float32)


_memo = compose.Memo()


def attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, mask: np.ndarray | None = None, *,
              causal: bool = False, scale: float | None = None, out: np.ndarray | None = None,
              threads: int | None = None) -> np.ndarray:
    """softmax(q k^T * scale + mask) v like torch.nn.functional.scaled_dot_product_attention:
    q (B, H, Sq, D), k and v (B, Hkv, Sk, D) with H a multiple of Hkv (grouped-query
    attention; (H, S, D) without a batch axis works too), float32 or bfloat16 (computed
    in f32, bf16 products through the dot instructions where the CPU has them). mask: bool
    (True keeps) or an additive float mask, broadcastable to (B, H, Sq, Sk); causal: query
    i sees keys j <= i (top-left aligned, like torch; not together with a mask). scale
    defaults to 1/sqrt(D). A row whose keys are all masked gives NaN, as in torch. out: an
    array of q's shape and dtype to write (any strides with unit stride along D, e.g. the
    (B, H, S, D) view of a (B, S, H*D) buffer)."""
    threads = compose.threads_arg(WHAT, threads)
    for name, x in (("q", q), ("k", k), ("v", v)):
        if not isinstance(x, np.ndarray):
            raise TypeError(f"{WHAT}: argument '{name}' must be a numpy array, got {type(x).__name__}")
        if x.ndim not in (3, 4):
            raise ShapeError(f"{WHAT}: argument '{name}' must be (B, H, S, D) or (H, S, D), got shape {x.shape}")
    if not (q.ndim == k.ndim == v.ndim):
        raise ShapeError(f"{WHAT}: q, k and v must have the same number of axes, got {q.shape}, {k.shape}, {v.shape}")
    if q.ndim == 3:
        return attention(q[None], k[None], v[None], mask, causal=causal, scale=scale, threads=threads,
                         out=None if out is None else out[None])[0]
    dtype = parse_dtype(q.dtype, "q.dtype")
    if dtype not in (DType.F32, DType.BF16) or k.dtype != q.dtype or v.dtype != q.dtype:
        raise DTypeError(f"{WHAT}: q, k and v must all be float32 or all bfloat16, got {q.dtype}, {k.dtype}, "
                         f"{v.dtype}")
    (bsz, heads, sq, d), (bk, kv_heads, sk, dk) = q.shape, k.shape
    if v.shape != k.shape:
        raise ShapeError(f"{WHAT}: k and v must have the same shape, got {k.shape} and {v.shape}")
    if bk != bsz or dk != d:
        raise ShapeError(f"{WHAT}: k must be (B={bsz}, Hkv, Sk, D={d}) like q's batch and head size, got {k.shape}")
    if kv_heads == 0 or heads % kv_heads:
        raise ShapeError(f"{WHAT}: q's {heads} heads must be a multiple of k's {kv_heads} (grouped-query attention)")
    if not isinstance(causal, (bool, np.bool_)):
        raise TypeError(f"{WHAT}: causal must be a bool, got {causal!r}")
    if causal and mask is not None:
        raise ValueError(f"{WHAT}: give a mask or causal=True, not both (as torch)")
    if scale is None:
        scale = 1.0 / float(np.sqrt(d)) if d else 1.0
    if isinstance(scale, bool) or not isinstance(scale, (int, float, np.floating, np.integer)) \
            or not np.isfinite(scale):
        raise ValueError(f"{WHAT}: scale must be a finite number, got {scale!r}")
    out = output(WHAT, out, q.shape, q.dtype)
    if out.size == 0:
        return out
    if sk == 0:
        out[...] = 0
        return out
    add_mask = None if mask is None else _additive(mask, (bsz, heads, sq, sk))
    for name, x in (("q", q), ("k", k), ("v", v), ("out", out)):
        if d > 1 and x.strides[-1] != x.itemsize:
            raise ShapeError(f"{WHAT}: argument '{name}' must have unit element stride along D, got strides "
                             f"{x.strides}")
    desc = AttentionDesc(bsz, heads, kv_heads, sq, sk, d, dtype, float(scale), bool(causal), element_strides(q),
                         element_strides(k), element_strides(v), element_strides(out),
                         None if add_mask is None else tuple(s // 4 for s in add_mask.strides), *plan(sk, causal))
    arrays = [q, k, v, *([add_mask] if add_mask is not None else []), *([triangle(desc.key_block)] if causal else []),
              out]
    compose.run_checked(None, None, compose.program(WHAT, desc), arrays, threads)
    return out


def _additive(mask, shape: tuple[int, ...]) -> np.ndarray:
    """The mask as additive float32, broadcast to `shape` (stride 0 on broadcast axes,
    unit stride along the keys): a bool mask's False becomes -inf."""
    if not isinstance(mask, np.ndarray):
        raise TypeError(f"{WHAT}: mask must be a numpy array or None, got {type(mask).__name__}")
    if mask.dtype == np.bool_:
        mask = np.where(mask, np.float32(0), np.float32(-np.inf))
    elif mask.dtype != np.float32:
        if parse_dtype(mask.dtype, "mask.dtype") not in (DType.BF16, DType.F64):
            raise DTypeError(f"{WHAT}: mask must be bool or a float array, got {mask.dtype}")
        mask = mask.astype(np.float32)
    try:
        full = np.broadcast_to(mask, shape)
    except ValueError:
        raise ShapeError(f"{WHAT}: mask of shape {mask.shape} does not broadcast to (B, H, Sq, Sk) = {shape}") from None
    if shape[-1] > 1 and full.strides[-1] not in (0, 4):
        full = np.broadcast_to(np.ascontiguousarray(mask), shape)
    return full
