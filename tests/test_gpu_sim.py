"""GPU kernels run on the CPU through the PTX interpreter (tests/ptxsim.py), against
the CPU kernels and numpy: the tensor-core bf16 GEMM/BRGEMM (mma.sync, ldmatrix,
cp.async stages), the shared-memory SIMT GEMM for the other dtypes, and the
elementwise, reduction and transpose kernels are checked on every machine, not
only where a GPU is lent. The interpreter itself is
checked to notice a kernel that reads the wrong fragment or leaves out a wait or a
barrier of its cp.async stage ring."""
from __future__ import annotations

import re

import ml_dtypes
import numpy as np
import pytest

import tpp
from tpp.descriptors import BINARY_KINDS, UNARY_KINDS
from tpp.kernels import gemm as gemm_k
from tpp.kernels import gemm_mma
from tpp.kernels import reduce as reduce_k

import ptxsim
import ptxsim_isa

BF16 = ml_dtypes.bfloat16
TARGET = "nvptx-sm80"


def _ptx(kernel) -> str:
    return kernel.asm if isinstance(kernel.asm, str) else kernel.asm.decode()


def _bits(x: np.ndarray) -> np.ndarray:
    return x.view(np.uint16) if x.dtype == BF16 else x


def run(kernel, arrays: list[np.ndarray], aux: list[tuple] = (), grid: int | None = None,
        ptx: str | None = None, **schedule) -> list[np.ndarray]:
    """Launch `kernel` (an NVPTX GEMM/BRGEMM; or `ptx` in its place) on the interpreter
    with (array, ld) operands in the kernel's order and BRGEMM's (pointer or array,
    count) entries, `schedule` passed to ptxsim.launch; returns the arrays as the
    kernel left them."""
    mem = ptxsim.Memory()
    params, where = [], []
    for x, ld in arrays:
        address = mem.alloc(_bits(x))
        where.append((address, x))
        params += [address, ld]
    for ptr, count in aux:
        params += [mem.alloc(ptr) if isinstance(ptr, np.ndarray) else ptr, count]
    d = kernel.descriptor
    tiled = gemm_k.simt_kernel(d.dtype, d.trans_a, d.trans_b, d.b_vnni)
    blocks = grid or -(-tiled.launch_threads(d.m, d.n) // tiled.THREADS)
    ptxsim.launch(ptx or _ptx(kernel), mem, params, grid=blocks, block=tiled.THREADS, **schedule)
    return [mem.array(address, x.shape, _bits(x).dtype).view(x.dtype) for address, x in where]


def ints(rng, shape, dtype=BF16, low=-3, high=4):
    """Small integers: every product and sum is exact in f32, so results compare exactly."""
    return rng.integers(low, high, shape).astype(dtype)


@pytest.mark.parametrize("m,n,k", [(37, 70, 29), (16, 8, 16), (130, 260, 70)])
def test_tensor_core_gemm(m, n, k, rng):
    kern = tpp.gemm(m, n, k, "bf16", beta=0.0, target=TARGET)
    assert _ptx(kern).count("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32") >= 16
    a, b = ints(rng, (m, k)), ints(rng, (k, n))
    c = np.full((m, n), np.nan, np.float32)
    grid = 2 if m * n > 128 * 128 else None         # fewer blocks than tiles: the grid-stride loop
    got = run(kern, [(a, k), (b, n), (c, n)], grid=grid)[-1]
    np.testing.assert_array_equal(got, a.astype(np.float64) @ b.astype(np.float64))


def test_unaligned_rows_and_the_epilogue(rng):
    # lda 35 and ldb 77: rows start off 16-byte boundaries, so staging goes element by
    # element; C is bf16 with beta 1, a bias, a residual and relu
    m, n, k = 50, 72, 33
    kern = tpp.gemm(m, n, k, "bf16", beta=1.0, lda=35, ldb=77, out_dtype="bf16",
                    epilogue=("bias", "residual", "relu"), target=TARGET)
    a = ints(rng, (m, 35))
    b = ints(rng, (k, 77))
    bias = ints(rng, (n,), BF16)
    residual = ints(rng, (m, n), BF16)
    c = ints(rng, (m, n), BF16)
    ref = np.maximum(c.astype(np.float64) + a[:, :k].astype(np.float64) @ b[:, :n].astype(np.float64)
                     + bias.astype(np.float64) + residual.astype(np.float64), 0)
    got = run(kern, [(a, 35), (b, 77), (bias, n), (residual, n), (c, n)])[-1]
    np.testing.assert_array_equal(got.astype(np.float64), ref.astype(BF16).astype(np.float64))


@pytest.mark.parametrize("variant", ["stride", "offset", "address"])
def test_tensor_core_brgemm(variant, rng):
    m, n, k, batch = 40, 24, 20, 3
    kern = tpp.brgemm(m, n, k, "bf16", variant=variant, beta=0.0, target=TARGET)
    a, b = ints(rng, (batch, m, k)), ints(rng, (batch, k, n))
    want = sum(a[i].astype(np.float64) @ b[i].astype(np.float64) for i in range(batch))
    c = np.zeros((m, n), np.float32)
    if variant == "stride":
        got = run(kern, [(a, k), (b, n), (c, n)], aux=[(0, batch)])[-1]
    elif variant == "offset":
        # the blocks in reverse order inside the buffers
        offsets_a = np.array([(batch - 1 - i) * m * k for i in range(batch)], np.int64)
        offsets_b = np.array([(batch - 1 - i) * k * n for i in range(batch)], np.int64)
        got = run(kern, [(a[::-1].copy(), k), (b[::-1].copy(), n), (c, n)],
                  aux=[(offsets_a, batch), (offsets_b, batch)])[-1]
    else:
        mem = ptxsim.Memory()
        pa = [mem.alloc(a[i].view(np.uint16)) for i in range(batch)]
        pb = [mem.alloc(b[i].view(np.uint16)) for i in range(batch)]
        table_a, table_b = mem.alloc(np.array(pa, np.int64)), mem.alloc(np.array(pb, np.int64))
        pc = mem.alloc(c)
        ptxsim.launch(_ptx(kern), mem, [table_a, k, table_b, n, pc, n, 0, batch], grid=1,
                      block=gemm_mma.THREADS)
        got = mem.array(pc, (m, n), np.float32)
    np.testing.assert_array_equal(got, want)


# The orders a GPU may run the stage ring in: cp.async's bytes landing at the wait
# that retires them or at once, the warps in lockstep or one running ahead to each
# barrier (ptxsim.launch).
SCHEDULES = [{"cp_async_lands": "at_wait", "schedule": "lockstep"},
             {"cp_async_lands": "at_issue", "schedule": "greedy"},
             {"cp_async_lands": "at_wait", "schedule": "greedy"}]


def ring_case(rng):
    """A BRGEMM whose K loop wraps the ring (4 slices through 3 stages) twice over,
    on a tile every warp has a share of (rows past 64, columns past 96)."""
    m, n, k, batch = 72, 100, 100, 2
    kern = tpp.brgemm(m, n, k, "bf16", variant="stride", beta=0.0, target=TARGET)
    a, b = ints(rng, (batch, m, k)), ints(rng, (batch, k, n))
    want = sum(a[i].astype(np.float64) @ b[i].astype(np.float64) for i in range(batch))
    return kern, [(a, k), (b, n), (np.zeros((m, n), np.float32), n)], [(0, batch)], want


@pytest.mark.parametrize("schedule", SCHEDULES, ids=lambda s: "-".join(s.values()))
def test_the_stage_ring_under_every_schedule(schedule, rng):
    kern, arrays, aux, want = ring_case(rng)
    np.testing.assert_array_equal(run(kern, arrays, aux, **schedule)[-1], want)


def test_the_interpreter_notices_each_missing_wait_or_barrier(rng):
    # drop one synchronisation of the K loop at a time: the late-landing, greedy
    # schedule must give a wrong product or see two copies in flight to one stage
    kern, arrays, aux, want = ring_case(rng)
    ptx = _ptx(kern)
    syncs = list(re.finditer(r"(cp\.async\.wait_group|bar\.sync)[^;]*;", ptx))
    assert len(syncs) >= 3
    for sync in syncs:
        broken = ptx[:sync.start()] + ptx[sync.end():]
        try:
            got = run(kern, arrays, aux, ptx=broken, **SCHEDULES[2])[-1]
        except RuntimeError as error:
            assert "unwaited copy" in str(error)
        else:
            assert not np.array_equal(got, want), f"the ring works without {sync.group(0)!r}"


def test_the_interpreter_notices_a_wrong_fragment(rng, monkeypatch):
    # swap the two n8 tiles an ldmatrix.x4.trans returns: the product must come out wrong
    m, n, k = 32, 32, 16
    a, b = ints(rng, (m, k)), ints(rng, (k, n))
    original = ptxsim_isa._ldmatrix

    def swapped(blk, lanes, ins):
        original(blk, lanes, ins)
        if "trans" in ins.op:
            regs = ptxsim_isa._vector(ins.args[0])
            for lane in lanes:
                r = [lane.regs.get(x, 0) for x in regs]
                for x, val in zip(regs, r[2:] + r[:2]):
                    lane.regs[x] = val
    monkeypatch.setitem(ptxsim_isa.WARP_OPS, "ldmatrix", swapped)
    kern = tpp.gemm(m, n, k, "bf16", beta=0.0, target=TARGET)
    got = run(kern, [(a, k), (b, n), (np.zeros((m, n), np.float32), n)])[-1]
    assert not np.array_equal(got, a.astype(np.float64) @ b.astype(np.float64))


@pytest.mark.parametrize("kw", [{}, {"beta": 0.0, "epilogue": ("bias", "relu")}, {"trans_a": True},
                                {"trans_b": True, "beta": 0.0}, {"dtype": "bf16", "b_vnni": True},
                                {"dtype": "bf16", "trans_a": True, "out_dtype": "bf16"},
                                {"dtype": "u8s8"}, {"dtype": "f64"}])
def test_shared_memory_simt_gemm(kw, rng):
    # the other dtypes and layouts: 64 x 64 tiles staged through shared memory (no mma)
    m, n, k = 70, 75, 21
    cpu = tpp.gemm(m, n, k, **kw)
    kern = tpp.gemm(m, n, k, target=TARGET, **kw)
    assert "mma.sync" not in _ptx(kern) and ".shared" in _ptx(kern)
    ops = cpu.descriptor.operands()
    args = []
    for op in ops:
        shape = (op.rows, op.cols) if op.rows > 1 else (op.cols,)
        args.append(ints(rng, shape, tpp.dtypes.to_numpy(op.dtype), 0 if op.dtype.value == "u8" else -3))
    want = cpu(*[a.copy() for a in args])
    grid = 2                                     # 4 tiles on 2 blocks: the grid-stride loop
    lds = [op.ld or (op.cols if op.rows > 1 else op.cols) for op in ops]
    got = run(kern, list(zip(args, lds)), grid=grid)[-1]
    np.testing.assert_array_equal(np.asarray(got, np.float64), np.asarray(want, np.float64))


def test_shared_memory_simt_brgemm(rng):
    m, n, k, batch = 33, 20, 18, 2
    kern = tpp.brgemm(m, n, k, "f32", variant="offset", target=TARGET)
    a, b = ints(rng, (batch, m, k), np.float32), ints(rng, (batch, k, n), np.float32)
    c = ints(rng, (m, n), np.float32)
    want = c.astype(np.float64) + sum(a[i].astype(np.float64) @ b[i] for i in range(batch))
    offsets_a = np.arange(batch, dtype=np.int64) * m * k
    offsets_b = np.arange(batch, dtype=np.int64) * k * n
    got = run(kern, [(a, k), (b, n), (c, n)], aux=[(offsets_a, batch), (offsets_b, batch)])[-1]
    np.testing.assert_array_equal(got, want)


# ---- the rest of the catalog: grid-stride kernels, one thread per element or result ----
ELTWISE_UNARY = sorted(k for k in UNARY_KINDS if k not in reduce_k.KINDS and k not in ("transpose", "vnni_pack"))


def run_plain(kernel, inputs: list[np.ndarray], lds: list[int] | None = None, offset: int = 0,
              grid: int = 1) -> list[np.ndarray]:
    """Launch a kernel whose parameters are one (pointer, ld) pair per operand; outputs
    are allocated here (zeros). `offset` bytes shift every buffer off its 256-byte
    boundary (the kernels' unaligned path)."""
    mem = ptxsim.Memory()
    ops = kernel.descriptor.operands()
    params, outs, it = [], [], iter(inputs)
    for k_, op in enumerate(ops):
        dt = tpp.dtypes.to_numpy(op.dtype)
        ld = lds[k_] if lds else op.cols
        x = np.zeros((op.rows, ld), dt) if op.output else next(it)
        raw = np.zeros(x.nbytes + offset, np.uint8)
        raw[offset:] = np.frombuffer(np.ascontiguousarray(x).tobytes(), np.uint8)
        address = mem.alloc(raw) + offset
        params += [address, ld]
        if op.output:
            outs.append((address, op, ld, dt))
    ptxsim.launch(_ptx(kernel), mem, params, grid=grid, block=256)
    return [mem.array(a, (op.rows, ld), dt)[:, :op.cols] for a, op, ld, dt in outs]


@pytest.mark.parametrize("kind", ELTWISE_UNARY)
@pytest.mark.parametrize("dtype", ["f32", "bf16"])
def test_unary_kernels(kind, dtype, rng):
    m, n = 3, 70
    extra = {"out_dtype": "bf16" if dtype == "f32" else "f32"} if kind == "cast" else {}
    try:
        kern = tpp.unary(kind, m, n, dtype, target=TARGET, **extra)
    except tpp.DTypeError:
        pytest.skip(f"{kind} has no {dtype}")
    ops = kern.descriptor.operands()
    ins = [rng.uniform(0.1, 2.0, (op.rows, op.cols)).astype(tpp.dtypes.to_numpy(op.dtype))
           for op in ops if not op.output]
    want = tpp.unary(kind, m, n, dtype, **extra)(*ins)
    want = want if isinstance(want, tuple) else (want,)
    tol = 1e-6 if dtype == "f32" else 1e-2
    for got, w in zip(run_plain(kern, ins), want):
        np.testing.assert_allclose(np.asarray(got, np.float64), np.asarray(w, np.float64), rtol=tol, atol=tol)


@pytest.mark.parametrize("kind", sorted(BINARY_KINDS))
@pytest.mark.parametrize("bc", ["none", "row", "col", "scalar"])
def test_binary_kernels(kind, bc, rng):
    m, n = 3, 45
    kern = tpp.binary(kind, m, n, broadcast=bc, target=TARGET)
    shapes = {"none": (m, n), "row": (1, n), "col": (m, 1), "scalar": (1, 1)}
    a = rng.uniform(0.5, 2, (m, n)).astype(np.float32)
    b = rng.uniform(0.5, 2, shapes[bc]).astype(np.float32)
    want = tpp.binary(kind, m, n, broadcast=bc)(a, b.reshape({"none": (m, n), "row": (1, n), "col": (m, 1),
                                                             "scalar": ()}[bc]))
    np.testing.assert_array_equal(run_plain(kern, [a, b])[0], want)


@pytest.mark.parametrize("lds,offset", [([57, 60], 0), (None, 4)])
def test_strided_and_unaligned_elementwise(lds, offset, rng):
    # row strides past the width (the row/column path) and buffers off 16 bytes (the
    # scalar path) next to the vector path of the tests above
    m, n = 4, 50
    kern = tpp.unary("relu", m, n, target=TARGET)
    x = rng.uniform(-1, 1, (m, lds[0] if lds else n)).astype(np.float32)
    got = run_plain(kern, [x], lds=lds, offset=offset, grid=2)[0]
    np.testing.assert_array_equal(got, np.maximum(x[:, :n], 0))


@pytest.mark.parametrize("kind,axis", [("reduce_sum", 0), ("reduce_sum", 1), ("reduce_max", 1), ("reduce_min", 0)])
def test_reductions_and_transpose(kind, axis, rng):
    m, n = 9, 40
    x = rng.integers(-50, 50, (m, n)).astype(np.float32)
    argidx = kind != "reduce_sum"
    kern = tpp.unary(kind, m, n, axis=axis, argidx=argidx, target=TARGET)
    want = tpp.unary(kind, m, n, axis=axis, argidx=argidx)(x)
    for got, w in zip(run_plain(kern, [x]), want if argidx else (want,)):
        np.testing.assert_array_equal(got.reshape(np.shape(w)), w)
    xt = run_plain(tpp.unary("transpose", m, n, "bf16", target=TARGET), [x.astype(BF16)])[0]
    np.testing.assert_array_equal(xt, x.T.astype(BF16))
