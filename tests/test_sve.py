"""AArch64 SVE: the catalog compiled ahead of time for each vector length, linked into a
static aarch64 program and run under qemu-user at 128, 256, 512 and 2048 bits,
against numpy (odd remainders, strided rows); code built for one length traps on
another; the asm is SVE (z registers, whilelo, fmla)."""
from __future__ import annotations

import re
import subprocess
from collections import Counter

import ml_dtypes
import numpy as np
import pytest

import tpp
from tpp.descriptors import BINARY_KINDS, UNARY_KINDS
from tpp.dtypes import to_numpy
from tpp.kernels import reduce as reduce_k

import sve_harness
from targets import SVE_BITS

pytestmark = pytest.mark.skipif(sve_harness.MISSING is not None, reason=sve_harness.MISSING or "")
BF16 = ml_dtypes.bfloat16
ELTWISE = sorted(k for k in UNARY_KINDS if k not in reduce_k.KINDS and k not in ("transpose", "vnni_pack"))


class Cases:
    """Kernels to run, their inputs (with row strides) and what their outputs must be."""

    def __init__(self, rng):
        self.rng, self.cases, self.expect = rng, [], []

    def _input(self, shape, dtype, ld, lo=-2.0, hi=2.0):
        rows, cols = shape
        if np.dtype(dtype).kind in "iu":
            full = self.rng.integers(lo, hi, (rows, ld)).astype(dtype)
        else:
            full = self.rng.uniform(lo, hi, (rows, ld)).astype(dtype)
        return full, full[:, :cols]

    def add(self, name, desc, inputs, expected, tol):
        ops = desc.operands()
        outs = [op for op in ops if op.output]
        self.cases.append((name, desc, inputs, [((op.rows, op.ld or op.cols), to_numpy(op.dtype), op.ld or op.cols)
                                                for op in outs]))
        self.expect.append((expected, tol, [op.cols for op in outs]))

    def unary(self, kind, dtype, m, n, ld, **kw):
        d = tpp.unary_desc(kind, m, n, dtype, **kw)
        n_in = sum(not op.output for op in d.operands())
        lo = 0.1 if kind in ("log", "sqrt", "rsqrt", "reciprocal") else -2.0
        ins = [self._input((op.rows, op.cols), to_numpy(op.dtype), ld if op.rows > 1 else op.cols, lo)
               for op in d.operands()[:n_in]]
        ref = d.reference(*[view for _, view in ins])
        self.add(f"u_{kind}_{dtype}_{len(self.cases)}", d, [(full, full.shape[1]) for full, _ in ins],
                 ref if isinstance(ref, tuple) else (ref,), 2e-2 if "bf16" in (dtype, kw.get("out_dtype")) else 3e-5)

    def binary(self, kind, bcast, m, n, ld):
        d = tpp.binary_desc(kind, m, n, broadcast=bcast)
        shapes = {"none": (m, n), "row": (1, n), "col": (m, 1), "scalar": (1, 1)}
        a_full, a = self._input((m, n), np.float32, ld, 0.5)
        b_full, b = self._input(shapes[bcast], np.float32, shapes[bcast][1], 0.5)
        self.add(f"b_{kind}_{bcast}_{len(self.cases)}", d, [(a_full, ld), (b_full, b_full.shape[1])],
                 (d.reference(a, b),), 1e-6)

    def gemm(self, m, n, k, dtype="f32", lda=None, **kw):
        d = tpp.gemm_desc(m, n, k, dtype, lda=lda, **kw)
        ops = d.operands()
        ins = []
        for op in ops[:-1]:
            lo, hi = (0, 256) if op.dtype.value == "u8" else (-128, 128) if op.dtype.value == "i8" else (-3, 4)
            full, view = self._input((op.rows, op.cols), to_numpy(op.dtype), op.ld or op.cols, lo, hi)
            if op.dtype.is_float:
                full[...] = np.round(full.astype(np.float64))          # small integers: exact sums
            ins.append((full, view))
        c_op = ops[-1]
        c0 = np.zeros((c_op.rows, c_op.cols))
        ref = d.reference(*[v for _, v in ins], c0)
        self.add(f"g_{len(self.cases)}", d, [(full, full.shape[1]) for full, _ in ins], (ref,), 0.0)


def catalog(rng) -> Cases:
    c = Cases(rng)
    for kind in ELTWISE:
        for dtype in ("f32", "bf16"):
            try:
                c.unary(kind, dtype, 7, 37, 41, **({"out_dtype": "bf16" if dtype == "f32" else "f32"}
                                                     if kind == "cast" else {}))
            except tpp.DTypeError:
                pass
    for kind in ("reduce_sum", "reduce_max", "reduce_min"):
        c.unary(kind, "f32", 9, 35, 40, axis=1)
        c.unary(kind, "f32", 9, 35, 40, axis=0)
    c.unary("reduce_max", "f32", 6, 19, 19, axis=1, argidx=True)
    c.unary("transpose", "f32", 13, 29, 31)
    c.unary("transpose", "bf16", 5, 40, 40)
    for kind in sorted(BINARY_KINDS):
        for bcast in ("none", "row", "col", "scalar"):
            c.binary(kind, bcast, 9, 45, 47)
    c.gemm(13, 35, 17, beta=0.0)
    c.gemm(20, 50, 33, lda=40, ldc=56, beta=0.0)
    c.gemm(11, 19, 23, trans_a=True, beta=0.0)
    c.gemm(11, 19, 23, trans_b=True, beta=0.0)
    c.gemm(16, 40, 9, beta=0.0, epilogue=("bias", "relu"))
    c.gemm(10, 21, 15, "bf16", beta=0.0)
    c.gemm(10, 21, 15, "u8s8", beta=0.0)
    c.gemm(12, 40, 22, "bf16", b_vnni=True, beta=0.0)
    c.gemm(12, 40, 23, "u8s8", b_vnni=True, beta=0.0)
    c.gemm(9, 17, 13, "bf16", trans_a=True, trans_b=True, beta=0.0)
    return c


@pytest.mark.parametrize("bits", SVE_BITS)
def test_catalog_under_qemu(bits, tmp_path, rng):
    c = catalog(rng)
    results = sve_harness.run(c.cases, f"aarch64-sve{bits}", bits, tmp_path)
    for (name, desc, _, _), outs, (expected, tol, widths) in zip(c.cases, results, c.expect):
        for got, want, cols in zip(outs, expected, widths):
            got = got[:, :cols].astype(np.float64).reshape(np.shape(want))
            if tol == 0.0:
                np.testing.assert_array_equal(got, want, err_msg=f"{name}: {desc}")
            else:
                np.testing.assert_allclose(got, want, rtol=tol, atol=tol * 1e-2, err_msg=f"{name}: {desc}")


def test_brgemm_under_qemu(tmp_path, rng):
    m, n, k, batch = 7, 33, 12, 3
    d = tpp.brgemm_desc(m, n, k, beta=0.0)
    a = np.round(rng.uniform(-3, 3, (batch, m, k))).astype(np.float32)
    b = np.round(rng.uniform(-3, 3, (batch, k, n))).astype(np.float32)
    case = ("br", d, [(a.reshape(-1, k), k), (b.reshape(-1, n), n)], [((m, n), np.float32, n)])
    exe = sve_harness.build([case], "aarch64-sve512", tmp_path)
    src = (tmp_path / "main.c").read_text().replace("{out_0_0, 33}", f"{{out_0_0, 33}}, {{0, {batch}}}")
    (tmp_path / "main.c").write_text(src)
    subprocess.run([sve_harness.CROSS, "-O1", "-static", f"-I{tmp_path}", str(tmp_path / "main.c"),
                    str(tmp_path / "libsvek.a"), "-o", str(exe)], check=True)
    out = subprocess.run(sve_harness.qemu_command(exe, 512), capture_output=True, timeout=120)
    assert out.returncode == 0, out.stderr
    got = np.frombuffer(out.stdout, np.float32).reshape(m, n)
    np.testing.assert_array_equal(got, np.einsum("bik,bkj->ij", a.astype(np.float64), b))


def test_another_vector_length_traps_instead_of_computing(tmp_path, rng):
    c = Cases(rng)
    c.unary("relu", "f32", 4, 40, 40)
    exe = sve_harness.build(c.cases, "aarch64-sve256", tmp_path)
    assert subprocess.run(sve_harness.qemu_command(exe, 256), capture_output=True).returncode == 0
    wrong = subprocess.run(sve_harness.qemu_command(exe, 512), capture_output=True)
    assert wrong.returncode != 0 and not wrong.stdout, "a 256-bit kernel ran on a 512-bit machine"


def test_dot_instructions():
    """bf16 and int8 GEMMs use SVE's bfdot and usdot (i8mm) at every vector length."""
    for bits in (128, 512):
        assert "bfdot" in tpp.gemm(32, 32, 32, "bf16", b_vnni=True, target=f"aarch64-sve{bits}").asm
        assert "usdot" in tpp.gemm(32, 32, 32, "u8s8", b_vnni=True, target=f"aarch64-sve{bits}").asm


def test_sve_asm():
    g = tpp.gemm(32, 32, 32, target="aarch64-sve512").asm
    assert "fmla" in g and re.search(r"\bz\d+\.s", g)
    r = tpp.unary("relu", 5, 37, target="aarch64-sve256").asm
    assert "whilelo" in r and "ld1w" in r
    for target in ("aarch64-sve", "aarch64-sve128", "aarch64-sve2048"):
        assert tpp.unary("exp", 3, 7, target=target).asm


def k_loop(asm: str) -> tuple[Counter, list[str]]:
    """Instruction counts and lines of the innermost loop that holds FMAs (a label, then
    a backward branch to it)."""
    lines = asm.splitlines()
    labels = {line.rstrip(":"): i for i, line in enumerate(lines) if re.match(r"^\.LBB\d+_\d+:", line)}
    best = None
    for i, line in enumerate(lines):
        m = re.match(r"^\s+b(\.\w+)?\s+(\.LBB\d+_\d+)", line)
        if m and labels.get(m.group(2), i) < i:
            text = [x for x in lines[labels[m.group(2)] + 1:i + 1] if x.startswith("\t") and not x.startswith("\t.")]
            body = [x.split()[0] for x in text]
            if sum(op in ("fmla", "fmad") for op in body) >= 2 and (best is None or len(body) < len(best[1])):
                best = (Counter(body), text)
    return best


@pytest.mark.parametrize("bits,most", [(128, 1.7), (512, 1.9), (2048, 2.5)])
def test_gemm_k_loop_instructions_per_fma(bits, most):
    """The K loop of the 64^3 SVE GEMM: FMAs, broadcast loads (one per row and k; from a
    transposed A, one pointer for the block), B loads and prefetches, and a handful of
    loop instructions; no spills."""
    counts, text = k_loop(tpp.gemm(64, 64, 64, target=f"aarch64-sve{bits}").asm)
    fmas = counts["fmla"] + counts["fmad"]
    total = sum(counts.values())
    print(f"sve{bits}: {total} instructions for {fmas} FMAs ({total / fmas:.2f} per FMA): {dict(counts)}")
    assert total / fmas <= most
    memory = ("ld1rw", "ld1r", "ldr", "ldp", "ld1b", "ld1w", "prfm")
    assert sum(n for op, n in counts.items() if op not in memory + ("fmla", "fmad")) <= 12
    assert not any("sp" in line.split("[", 1)[-1] for line in text if "[" in line), "spills in the K loop"
