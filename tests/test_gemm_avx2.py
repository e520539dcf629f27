"""The GEMM's register blocks and B prefetch on 16 ymm registers (AVX2), where broadcasts
are loads of their own (vbroadcastss) and masks live in vector registers: numerics at
shapes that take every strip (2 and 3 vectors, masked last vectors, 1-vector narrow
tiles), K loops with the prefetch, padded strides and the BRGEMM; the asm of the blocks
(no accumulator on the stack); the prefetch distance from the L1 geometry."""
from __future__ import annotations

import re

import numpy as np
import pytest

import tpp
from tpp.jit import host
from tpp.kernels import gemm as gemm_k

from targets import require
from test_gemm import check, operands

AVX2 = "x86-avx2"
SPILL = re.compile(r"vmov\w*\s+%ymm\d+, -?\d*\(%rsp\)|\(%rsp\), %ymm")


def k_loop(asm: str, fmas: int) -> str:
    """The body of the loop (a block ending in a backward jump) with `fmas` FMAs."""
    for body in re.findall(r"^(\.LBB\d+_\d+:.*?^\s+j\w+\s+\.LBB\d+_\d+)$", asm, re.S | re.M):
        if body.count("vfmadd") == fmas:
            return body
    raise AssertionError(f"no loop with {fmas} FMAs")


@pytest.mark.parametrize("trans_a,trans_b", [(False, False), (True, False), (False, True)])
@pytest.mark.parametrize("beta", [0.0, 1.0])
@pytest.mark.parametrize("m,n,k", [(24, 24, 24), (7, 20, 33), (64, 20, 80), (13, 40, 70), (5, 56, 129),
                                   (30, 17, 3), (64, 4, 100), (14, 8, 65), (9, 72, 16), (31, 23, 200)])
def test_strips_match_reference(m, n, k, beta, trans_a, trans_b, rng):
    g = require(tpp.gemm(m, n, k, beta=beta, trans_a=trans_a, trans_b=trans_b, target=AVX2))
    a, b, c = operands(rng, m, n, k, np.float32, trans_a, trans_b)
    check(g, a, b, c, beta, trans_a, trans_b, np.float32)


@pytest.mark.parametrize("m,n,k", [(24, 24, 130), (17, 40, 300), (64, 64, 96)])
def test_padded_strides_and_f64(m, n, k, rng):
    a, b, c = operands(rng, m, n, k, np.float32, view=True)
    check(require(tpp.gemm(m, n, k, target=AVX2)), a, b, c, 1.0, False, False, np.float32)
    a, b, c = operands(rng, m, n, k, np.float64)
    check(require(tpp.gemm(m, n, k, np.float64, target=AVX2)), a, b, c, 1.0, False, False, np.float64)


@pytest.mark.parametrize("n", [24, 20, 40])
def test_brgemm_and_epilogue(n, rng):
    m, k, batch = 12, 70, 3
    br = require(tpp.brgemm(m, n, k, variant="stride", beta=0.0, epilogue=("bias", "relu"), target=AVX2))
    a = rng.uniform(-1, 1, (batch, m, k)).astype(np.float32)
    b = rng.uniform(-1, 1, (batch, k, n)).astype(np.float32)
    bias = rng.uniform(-1, 1, n).astype(np.float32)
    want = np.maximum(np.einsum("bik,bkj->ij", a.astype(np.float64), b.astype(np.float64)) + bias, 0)
    c = np.full((m, n), np.nan, np.float32)            # beta = 0: C is not read
    np.testing.assert_allclose(br(a, b, bias, c), want, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("m,n,k,fmas", [
    (64, 64, 64, 2 * 12),       # 6 x 2 blocks, K unrolled twice
    (24, 24, 24, 2 * 12),       # one 3-vector strip: 4 x 3 blocks
    (64, 20, 64, 2 * 9),        # ... its last vector masked (the mask takes a register): 3 x 3
    (64, 8, 64, 13),            # one vector: 13 x 1, K not unrolled
])
def test_blocks_keep_accumulators_in_registers(m, n, k, fmas):
    asm = tpp.gemm(m, n, k, beta=0.0, target=AVX2).asm
    loop = k_loop(asm, fmas)
    assert not SPILL.search(loop), f"{m}x{n}x{k}: the K loop reads or writes the stack"
    assert "zmm" not in asm


def test_a_three_vector_strip_replaces_the_one_vector_tail():
    asm = tpp.gemm(24, 24, 24, beta=0.0, target=AVX2).asm
    assert asm.count("vfmadd") == 24, "24 columns are one 3-vector strip (was 16 + 8)"
    loop = k_loop(asm, 24)
    assert loop.count("vbroadcastss") == 8 and loop.count("vmovups") == 6   # 4 rows, 3 vectors, 2 k


def test_prefetch_once_per_line():
    for target, lines in ((AVX2, 1), ("x86-avx512", 2)):          # a 64- and a 128-byte strip row
        asm = tpp.gemm(96, 128, 200, beta=0.0, target=target).asm  # 512-byte rows: 8 ahead
        loop = k_loop(asm, 24 if target == AVX2 else 56)           # two k per turn
        assert loop.count("prefetcht0") == 2 * lines, target
        assert re.search(r"prefetcht0\s+4096\(", loop), "8 rows of 512 bytes ahead"


def test_prefetch_distance_from_the_l1_sets():
    l1 = host.CacheGeometry(sets=64, ways=8, line=64)
    distance = {ld: gemm_k.prefetch_distance(l1, 1000, 4 * ld) for ld in (32, 96, 128, 256, 512, 1024)}
    # 32 rows ahead while they put at most one line in any set; a power-of-two stride puts
    # rows on few sets (1 KB: 4 of 64) and gets fewer; 2 KB and more: none
    assert distance == {32: 32, 96: 32, 128: 8, 256: 4, 512: 0, 1024: 0}
    assert gemm_k.prefetch_distance(l1, 64, 4 * 32) == 0          # a short K loop keeps B in L1
    assert gemm_k.prefetch_distance(host.CacheGeometry(64, 16, 64), 1000, 4 * 256) == 8
