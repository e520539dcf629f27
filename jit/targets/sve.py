"""AArch64 SVE targets, for ahead-of-time builds (tpp-aot; tests run them under qemu).

The emitters write fixed-length vectors, so each target is compiled for one SVE
vector length: `aarch64-sve128`, `-sve256`, `-sve512`, `-sve2048`, and
`aarch64-sve` (= 256 bits, Graviton3 / Neoverse V1). LLVM is told the length
(vscale_range on every function) and then lowers the vectors to SVE z registers
with predicated loads and stores. Because such code would compute garbage on a
machine of another vector length, every kernel reads the running length on
entry (llvm.vscale in a helper compiled without the declared length, so it is
not folded away: rdvl) and traps if it differs: a SIGILL, never a wrong result. Remainder masks are
llvm.get.active.lane.mask, which SVE lowers to whilelo. The GEMM transposes A
into a buffer on these targets (ld1rw has no register offset: A^T gives all rows
of a block one pointer), and loop strength reduction is off as on x86: the 64^3
K loop at 512 bits went from 120 to 89 instructions per 48 FMAs.
bf16 and int8 GEMMs run on bfdot and usdot. Vector-length-agnostic code
(scalable vectors) is the next step.
"""
from __future__ import annotations

from . import NO_LSR, Target

TRIPLE = "aarch64-unknown-linux-gnu"
FEATURES = "+sve,+neon,+fp-armv8,+bf16,+i8mm,+fullfp16"
BITS = (128, 256, 512, 2048)
DEFAULT_BITS = 256

_UNSUPPORTED = ()
_INTRINSICS = (
    ("active_lane_mask", "llvm.get.active.lane.mask|plain"),     # remainder masks: whilelo
)


def _dot_helpers(bits: int) -> str:
    """IR helpers that run SVE's dot instructions on fixed-length vectors: bfdot (bf16
    pairs into f32) and usdot (u8 x s8 quads into i32, +i8mm). The SVE intrinsics take
    scalable vectors, which llvmlite's IR builder cannot write, so the kernels call these
    by name and the compiler appends them as text (Target.ir_helpers); inlined, the
    vector.insert/extract pairs cost nothing."""
    n, v = bits // 32, bits // 128
    return f"""
define internal <{n} x float> @"tpp.sve.bfdot.v{n}f32"(<{n} x float> %acc, <{2 * n} x bfloat> %a, <{2 * n} x bfloat> %b) alwaysinline vscale_range({v},{v}) {{
  %sacc = call <vscale x 4 x float> @llvm.vector.insert.nxv4f32.v{n}f32(<vscale x 4 x float> poison, <{n} x float> %acc, i64 0)
  %sa = call <vscale x 8 x bfloat> @llvm.vector.insert.nxv8bf16.v{2 * n}bf16(<vscale x 8 x bfloat> poison, <{2 * n} x bfloat> %a, i64 0)
  %sb = call <vscale x 8 x bfloat> @llvm.vector.insert.nxv8bf16.v{2 * n}bf16(<vscale x 8 x bfloat> poison, <{2 * n} x bfloat> %b, i64 0)
  %r = call <vscale x 4 x float> @llvm.aarch64.sve.bfdot(<vscale x 4 x float> %sacc, <vscale x 8 x bfloat> %sa, <vscale x 8 x bfloat> %sb)
  %f = call <{n} x float> @llvm.vector.extract.v{n}f32.nxv4f32(<vscale x 4 x float> %r, i64 0)
  ret <{n} x float> %f
}}
define internal <{n} x i32> @"tpp.sve.usdot.v{n}i32"(<{n} x i32> %acc, <{n} x i32> %a, <{n} x i32> %b) alwaysinline vscale_range({v},{v}) {{
  %sacc = call <vscale x 4 x i32> @llvm.vector.insert.nxv4i32.v{n}i32(<vscale x 4 x i32> poison, <{n} x i32> %acc, i64 0)
  %a8 = bitcast <{n} x i32> %a to <{4 * n} x i8>
  %b8 = bitcast <{n} x i32> %b to <{4 * n} x i8>
  %sa = call <vscale x 16 x i8> @llvm.vector.insert.nxv16i8.v{4 * n}i8(<vscale x 16 x i8> poison, <{4 * n} x i8> %a8, i64 0)
  %sb = call <vscale x 16 x i8> @llvm.vector.insert.nxv16i8.v{4 * n}i8(<vscale x 16 x i8> poison, <{4 * n} x i8> %b8, i64 0)
  %r = call <vscale x 4 x i32> @llvm.aarch64.sve.usdot(<vscale x 4 x i32> %sacc, <vscale x 16 x i8> %sa, <vscale x 16 x i8> %sb)
  %f = call <{n} x i32> @llvm.vector.extract.v{n}i32.nxv4i32(<vscale x 4 x i32> %r, i64 0)
  ret <{n} x i32> %f
}}
"""


def _sve(name: str, bits: int) -> Target:
    n = bits // 32
    dots = ((f"bf16_dot.v{n}f32", f"tpp.sve.bfdot.v{n}f32|plain"),      # bfdot: bf16 GEMM
            (f"u8s8_dot.v{n}i32", f"tpp.sve.usdot.v{n}i32|plain"))      # usdot: int8 GEMM
    return Target(name, TRIPLE, "generic", FEATURES, vector_bits=bits, vector_registers=32,
                  intrinsics=_INTRINSICS + dots, runs_on_host=False, fixed_vscale=bits // 128,
                  fma_memory_broadcast=False, broadcast_indexed=False, codegen_flags=NO_LSR,
                  unsupported=_UNSUPPORTED, ir_helpers=_dot_helpers(bits))


NAMED = {f"aarch64-sve{bits}": (lambda host, bits=bits: _sve(f"aarch64-sve{bits}", bits)) for bits in BITS}
NAMED["aarch64-sve"] = lambda host: _sve("aarch64-sve", DEFAULT_BITS)
