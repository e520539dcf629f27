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
Vector-length-agnostic code (scalable vectors) is the next step.
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


def _sve(name: str, bits: int) -> Target:
    return Target(name, TRIPLE, "generic", FEATURES, vector_bits=bits, vector_registers=32,
                  intrinsics=_INTRINSICS, runs_on_host=False, fixed_vscale=bits // 128,
                  fma_memory_broadcast=False, codegen_flags=NO_LSR, unsupported=_UNSUPPORTED)


NAMED = {f"aarch64-sve{bits}": (lambda host, bits=bits: _sve(f"aarch64-sve{bits}", bits)) for bits in BITS}
NAMED["aarch64-sve"] = lambda host: _sve("aarch64-sve", DEFAULT_BITS)
