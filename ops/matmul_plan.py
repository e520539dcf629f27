"""tpp.ops.matmul's plans: the blocking, loop order and layouts a matmul is compiled
with (data: re-tiling changes a MatmulPlan, not code), and the default plan for a
problem on this host and thread count, with the measurements behind each choice."""
from __future__ import annotations

import functools
from dataclasses import dataclass

from .. import pool
from ..jit import host
from ..dispatch import current_target
from ..errors import DescriptorError
from ..jit.types import DType
from ..kernels import fields

A_LAYOUTS = ("in_place", "blocks", "panels", "rows")
MAX_BLOCK = 1 << 20      # rows, columns or depth of a block: a panel of 2**40 elements is no plan


@dataclass(frozen=True)
class MatmulPlan:
    """Blocking and loop order: tuning changes this, not the code."""
    mb: int = 56          # 4 register tiles of 14 rows (AVX-512 f32)
    nb: int = 32          # one tile of 2 vectors: a packed B block is then one contiguous panel
                          # (two tiles side by side put its rows 256 B apart, on a quarter of
                          # the L1 sets; measured 0.84 vs 0.89-0.90x OpenBLAS at 1024)
    kb: int = 512
    order: tuple[str, str] = ("mb", "nb")     # outer, inner parallel loop
    # How the compute nest reads A:
    #   "in_place": A as given. Its MR rows are broadcast one element at a time, MR
    #       streams lda apart: on a 48 KB 12-way L1 (Emerald Rapids) this was 5-6% faster
    #       than a copy, but on Zen 4's 32 KB 8-way L1 the 14 rows of a 4 or 8 KB stride
    #       fall into one set and evict each other (2048: 77 GF/s vs 98 packed).
    #   "blocks": copied into Mb x Kb blocks (row stride Kb) by the pack nest.
    #   "panels": transposed into Kb x Mb blocks (A^T, row stride Mb) by the compute
    #       nest, per thread, when its block row changes: the MR values a K step
    #       broadcasts sit side by side (one stream per register tile) and the copy
    #       lands in L2 instead of going through memory twice. 2048 on Zen 4: 1.02-1.04x
    #       OpenBLAS packed ahead, as "blocks" 0.99-1.02x, in place 0.77x.
    #       The ("nb", "mb") order would transpose a block row per output block.
    #   "rows": copied, untransposed, into Mb x Kb blocks (row stride Kb) by the compute
    #       nest, per thread, when its block row changes, like "panels" (AVX2 at 2048:
    #       see _plan_for).
    #   (Copying the rows untransposed with a row stride padded by a cache line was
    #   cheaper to make but 1-2% slower to use at 2048 on AVX-512; dropped there.)
    a_layout: str = "panels"
    # rows of B per iteration of the pack nest (a divisor of kb): the strip is copied
    # along its length, an Nb-wide piece (b_strip x Nb, contiguous) into each panel.
    # Zen 4, ms for 1 / 2 / 4 / 8 / 16 / 32 rows: 2048^2 3.1 / 3.0 / 2.7 / 2.0 / 2.5 / 2.9
    # (a memcpy of B takes 0.95), 1024^2 0.49 / 0.26 / 0.18 / 0.19 / 0.19, 512^2 0.07 /
    # 0.03 / 0.03 / 0.03 / 0.03: one row at a time writes 128 bytes into each of N/Nb
    # panels 256 KB apart, a strip of 8 writes 1 KB pieces (default_plan takes 8).
    b_strip: int = 1

    def __post_init__(self) -> None:
        # Python ints: numpy integers would wrap in the scratch sizes (np.int8(16) * 512
        # gave a too-small panel buffer and a crash)
        for name in ("mb", "nb", "kb", "b_strip"):
            value = fields.integer("ops.matmul", f"MatmulPlan.{name}", getattr(self, name))
            if not 1 <= value <= MAX_BLOCK:
                raise DescriptorError(f"tpp ops.matmul: MatmulPlan.{name} must be in 1..{MAX_BLOCK}, got {value}")
            object.__setattr__(self, name, value)
        if not isinstance(self.order, tuple) or sorted(self.order) != ["mb", "nb"]:
            raise DescriptorError(f"tpp ops.matmul: MatmulPlan.order must be ('mb', 'nb') or ('nb', 'mb'), "
                                  f"got {self.order!r}")
        if not isinstance(self.a_layout, str) or self.a_layout not in A_LAYOUTS:
            raise DescriptorError(f"MatmulPlan.a_layout must be one of {A_LAYOUTS}, got {self.a_layout!r}")
        if self.kb % self.b_strip:
            raise DescriptorError(f"MatmulPlan.b_strip must divide kb={self.kb}, got {self.b_strip}")

    @property
    def a_ahead(self) -> bool:
        """Whether the pack nest copies A."""
        return self.a_layout == "blocks"


def default_plan(dtype: DType, m: int, n: int, k: int, lda: int, threads: int, trans_a: bool = False,
                 trans_b: bool = False) -> MatmulPlan:
    """trans_a / trans_b: the operand is stored transposed (A^T, B^T row-major, lda / ldb
    their row strides)."""
    return _plan_for(current_target(), host.l1d(), dtype, m, n, k, lda, threads, trans_a, trans_b)


# With several threads and A up to this size, the threads split B's columns instead of
# A's rows, so each reads its share of B and all of A (512, 1024 on 2 threads: speed-up
# 1.75 -> 1.90, 1.80 -> 1.87); one thread going down B's columns re-reads all of A per
# panel, which at 2048 (16 MB) ran at 0.84x OpenBLAS.
SPLIT_COLUMNS_MAX_A = 4 << 20
BLOCK_ROW_BYTES = 2048          # the longest row of a packed A block
AVX2_CHUNK = 256                # K chunk where A is read in place without embedded broadcasts
AVX2_ROW_BYTES = 4096           # longer rows of A are copied per thread on AVX2 (a_layout "rows")
AVX2_ROWS_CHUNK = 512           # the K chunk of those copies


@functools.lru_cache(maxsize=256)
def _plan_for(target, l1d: host.CacheGeometry, dtype: DType, m: int, n: int, k: int, lda: int,
              threads: int, trans_a: bool, trans_b: bool) -> MatmulPlan:
    lanes = target.lanes(32)                             # f32 accumulators (bf16 computes in f32)
    rows = min(16, (target.vector_registers - 3) // 2)   # the GEMM microkernel's MR for 2 vectors
    if dtype is DType.F64:
        lanes //= 2
    nb = 2 * lanes
    # A is read in place where the rows of a register tile, lda apart, fit in the L1's
    # sets with a way to spare for B (512 on Zen 4: 2 sets of 7 rows, 1.07x OpenBLAS in
    # place vs 1.035x as panels); at a 4 or 8 KB stride they would share one set (1024,
    # 2048: 0.87x, 0.78x in place) and A goes into blocks (row stride Kb, 2 KB) ahead, or,
    # when the threads split the rows, into per-thread panels. bf16's dot kernels
    # broadcast k-pairs of one A row, contiguous in A but not in A^T: blocks. An A stored
    # transposed (A^T) is the panels' layout already, but read in place its K rows, lda
    # apart, alias the same way (1024 / 2048 on Zen 4: 1.06 / 1.03-1.06x numpy in place,
    # 1.09-1.10 / 1.06-1.07x copied into panels; 512 the same either way), so the same
    # rule decides; its panels are copies of A^T's rows.
    in_place = dtype is not DType.BF16 and l1d.most_lines_in_one_set(rows, lda * dtype.itemsize) < l1d.ways
    # AVX2 (no embedded broadcasts: a register tile's 6 rows are 6 broadcast streams)
    # with rows longer than AVX2_ROW_BYTES: each thread copies its block row of A into
    # Kb-wide blocks (a_layout "rows"), 16 tiles high, Kb 512. TPP_TARGET=x86-avx2 on
    # Zen 4, 2048^2, pinned, interleaved with np.matmul (15-21 repetitions, five runs):
    # in place (Mb 48, Kb 256) 0.75-0.95x, "rows" 0.93-1.02x (best of each run 1.00-1.04x
    # against 0.93-0.99x); Mb 48 / 72 0.85 / 0.87x, Kb 1024 / 2048 0.87 / 1.0x, A copied
    # ahead ("blocks") 0.95-0.99x, A^T panels 0.88x. At 1024 (4 KB rows) in place stays
    # ahead (1.06x against 1.04x).
    avx2_rows = (not target.fma_memory_broadcast and dtype is not DType.BF16 and not trans_a
                 and lda * dtype.itemsize > AVX2_ROW_BYTES)
    if threads > 1 and m * k * dtype.itemsize <= SPLIT_COLUMNS_MAX_A:
        order = ("nb", "mb")
        layout = "in_place" if in_place else "blocks"
    else:
        order = ("mb", "nb")
        layout = ("rows" if avx2_rows else "in_place" if in_place else "blocks" if dtype is DType.BF16
                  else "panels")
    # Mb: whole register tiles (1024 with Mb 103, a 5-row tile per block, ran at 1.03x
    # OpenBLAS, Mb 112 at 1.08x), up to 4 of them, 8 from M = 1024 on (each block reads
    # its B panel from L3: 2048 went from 1.04 to 1.056x), chosen so that the threads'
    # shares of the output come out even (a last block row is short: 1024 with Mb 112
    # split by rows gave one thread 560 rows, the other 464, a 1.83x speed-up on 2)
    tiles = 16 if layout == "rows" else 8 if m >= 1024 else 4
    if m <= tiles * rows:
        mb = m
    else:
        def imbalance(mb: int) -> float:
            heights = [min(mb, m - i) for i in range(0, m, mb)]
            columns = -(-n // nb)
            per_block = ([h for _ in range(columns) for h in heights] if order[0] == "nb"
                         else [h for h in heights for _ in range(columns)])
            return max(sum(per_block[s:e]) for s, e in pool.shares(len(per_block), threads)) * threads / m
        sizes = [t * rows for t in range(max(1, tiles // 2), tiles + 1)]
        cost = {mb: imbalance(mb) for mb in sizes}
        mb = max(mb for mb in sizes if cost[mb] <= min(cost.values()) + 0.02)
    # One K chunk where A's layout does not depend on Kb: each block is then a single
    # GEMM, not a BRGEMM over the first chunks plus a GEMM that reloads C for the last
    # (1024 on Zen 4: 1.055 -> 1.077x OpenBLAS, interleaved; 2048 unchanged). "blocks"
    # has Kb for its row stride: one chunk while that is at most 2 KB (bf16 1024^2: 198
    # -> 207-212 GF/s), else 2 KB (a 4 KB stride puts a tile's rows on one L1 set: bf16
    # 2048^2 with Kb 2048 ran at 154 GF/s, with 512 or 1024 at 198-207).
    # The single chunk's Kb is K rounded up to the B strip of 8 rows (a chunk past K is
    # never read: its block rows are padding).
    # A transposed B is packed by transposing strips of its columns: 16 of them read a
    # whole cache line of each B^T row.
    strip = 16 if trans_b else 8
    one_chunk = -(-k // strip) * strip
    if layout == "rows":
        kb = min(one_chunk, AVX2_ROWS_CHUNK)
    elif layout == "blocks" and one_chunk * dtype.itemsize > BLOCK_ROW_BYTES:
        kb = BLOCK_ROW_BYTES // dtype.itemsize
    elif layout == "in_place" and not target.fma_memory_broadcast:
        # AVX2 (broadcasts are loads of their own, 6 per 12 FMAs): K chunks of 256 keep
        # a B chunk (16 KB at Nb 16) in L1 beside A's rows; one chunk streams a 64 KB B
        # panel from L2 per register tile. TPP_TARGET=x86-avx2 on Zen 4, pinned,
        # interleaved with np.matmul: 1024 1.00 -> 1.05x, 2048 0.84 -> 0.94x, 512 1.0x
        kb = min(one_chunk, AVX2_CHUNK)
    else:
        kb = one_chunk
    return MatmulPlan(mb=mb, nb=nb, kb=kb, order=order, a_layout=layout, b_strip=strip)
