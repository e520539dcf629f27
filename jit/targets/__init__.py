"""Targets are data: triple, CPU, features, vector length, registers, intrinsic table.

`Target.host()` is the only place that probes the CPU. Each ISA family lives in
its own module (`x86.py`, `nvptx.py`, `sve.py`) and lists its named targets in
its `NAMED` table. `set_host_limit` makes the probe see a lesser CPU (an AVX-512
machine standing in for an AVX2-only one); tpp.config sets it from
TPP_HOST_LIMIT, since this layer reads no environment.
"""
from __future__ import annotations

from dataclasses import dataclass, field


# Codegen options: loop strength reduction took 20-40% of the codegen time of a small x86
# kernel and made no measurable difference to its speed (the emitters address memory by
# index from bases hoisted out of the loops: relu 64x64 compile 24 -> 15 ms, run 1.34 vs
# 1.33 us); on SVE it picked negative offsets that ld1rw cannot encode (an extra sub per
# broadcast). The CPU targets switch it off around their codegen.
NO_LSR = (("-disable-lsr=true", "-disable-lsr=false"),)

# The best host target the probe may report (None: whatever the CPU has); see set_host_limit.
_host_limit: str | None = None


def set_host_limit(name: str | None) -> None:
    """Treat the host CPU as one that runs no target above `name` (an x86 target name,
    or None for no limit): Target.host() reports at most that target, and targets
    above it are not runnable here. For testing what an older CPU would do."""
    from . import x86

    if name is not None and name not in x86.LADDER:
        raise ValueError(f"tpp: host limit {name!r} is not one of {', '.join(x86.LADDER)}")
    global _host_limit
    _host_limit = name


def host_limit() -> str | None:
    return _host_limit


@dataclass(frozen=True)
class Target:
    name: str                 # e.g. "x86-avx512": what users pass as target=
    triple: str
    cpu: str
    features: str             # LLVM feature string, "+avx512f,+fma,..."
    vector_bits: int          # width of one vector register
    vector_registers: int     # how many the register allocator may use
    # Intrinsic/lowering table: op name -> how this target spells it. Shared
    # emitters look ops up here instead of asking which ISA they run on.
    intrinsics: tuple[tuple[str, str], ...] = field(default=())
    runs_on_host: bool = True
    # How kernels are shaped: "simd" (one thread walks the tile with vectors, called
    # as void f(const tpp_tensor *)) or "simt" (a GPU grid: one thread per element or
    # output tile, PTX kernels taking (data, ld) pairs). Emitters pick their driver by it.
    model: str = "simd"
    # What the compiler hands back: "object" code to link, or "assembly" (PTX, which the
    # GPU driver compiles).
    output: str = "object"
    # Families of the catalog this target does not offer yet, with the reason.
    unsupported: tuple[tuple[str, str], ...] = field(default=())
    # Scalable-vector ISAs compiled for one vector length: vscale (length / 128 bits),
    # which every function declares to LLVM and checks on entry (0: not such a target).
    fixed_vscale: int = 0
    # Whether an FMA can take its broadcast operand from memory (x86's {1to16}); where it
    # cannot (SVE: ld1rw into a register), register blocks leave room for broadcasts.
    fma_memory_broadcast: bool = True
    # Whether a broadcast load takes a register index (x86's vbroadcastss (base, index, 4));
    # where it takes an immediate offset only (SVE's ld1rw), the GEMM transposes A first.
    broadcast_indexed: bool = True
    # Width of the lanes within which its cheap shuffles move elements (x86: 128-bit;
    # unpack and in-lane shuffles take one cycle, lane-crossing permutes of two vectors
    # more); 0: shuffles of any pattern cost alike. The transpose TPP plans its rounds by it.
    shuffle_lane_bits: int = 0
    # LLVM command-line options for this target's codegen, as (on, off) pairs.
    codegen_flags: tuple[tuple[str, str], ...] = field(default=())
    # Textual IR of helper functions (for what llvmlite's builder cannot write, such as
    # scalable vectors); a module that declares one gets its definition instead.
    ir_helpers: str = ""
    # LLVM code model of code for the JIT (see compiler.target_machine). x86's default
    # ("small") reaches an object's constants through 32-bit offsets from its code, and
    # MCJIT maps the two in separate blocks: once large address ranges sit between them
    # (CUDA reserves hundreds of GB), the offset overflows and RuntimeDyldELF aborts the
    # process (`isInt<32>(RealOffset)`; tests/test_jit_placement.py). "large" addresses
    # them with 64-bit values.
    code_model: str = "default"

    def lanes(self, bits: int) -> int:
        """How many elements of `bits` width fill one vector register."""
        return self.vector_bits // bits

    def intrinsic(self, op: str) -> str | None:
        return dict(self.intrinsics).get(op)

    def unsupported_reason(self, family: str) -> str | None:
        """Why this target does not offer a family of the catalog (None: it does)."""
        return dict(self.unsupported).get(family)

    @staticmethod
    def host() -> "Target":
        """The best target the CPU this process runs on can execute."""
        from . import x86

        found = x86.probe_host(_host_limit)
        if found is None:
            raise RuntimeError("tpp: this CPU is not supported (needs x86-64 with AVX2+FMA or AVX-512)")
        return found

    @staticmethod
    def named(name: str) -> "Target":
        """A target by its public name, tuned to the host CPU where the host can run it."""
        from . import nvptx, sve, x86

        host = x86.probe_host(_host_limit)
        if host is not None and host.name == name:
            return host
        builders = {**x86.NAMED, **nvptx.NAMED, **sve.NAMED}
        if name not in builders:
            known = ", ".join(names())
            raise ValueError(f"tpp: unknown target {name!r}; known targets: {known}")
        return builders[name](host)


def names() -> list[str]:
    """Every target name users can pass as target=."""
    from . import nvptx, sve, x86

    return sorted({**x86.NAMED, **nvptx.NAMED, **sve.NAMED})
