"""x86-64 targets: AVX-512 (with BF16 and VNNI where present) and AVX2+FMA."""
from __future__ import annotations

from llvmlite import binding as llvm

from . import NO_LSR, Target

TRIPLE = "x86_64-unknown-linux-gnu"
_AVX512_NEEDS = ("avx512f", "avx512bw", "avx512vl", "avx512dq")
_AVX2_NEEDS = ("avx2", "fma", "f16c")

# Features switched off when an AVX-512 host is asked for AVX2 code, so that no
# zmm (or EVEX ymm16-31) register can appear in the result.
_AVX512_FAMILY = ("avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512cd", "avx512bf16",
                  "avx512vnni", "avx512fp16", "avx512ifma", "avx512vbmi", "avx512vbmi2",
                  "avx512bitalg", "avx512vpopcntdq", "evex512", "amx-tile", "amx-bf16",
                  "amx-int8", "avx10.1-256", "avx10.1-512", "avx10.2-256", "avx10.2-512")

# op.shape -> "intrinsic|calling convention" (conventions: see jit/vec.py); an estimate
# instruction adds "|bits", its correct bits, from which jit/vec.py takes the number of
# Newton steps.
_AVX512_INTRINSICS = (
    ("rcp.v16f32", "llvm.x86.avx512.rcp14.ps.512|passthru_mask|14"),      # vrcp14ps: 2^-14
    ("scalef.v16f32", "llvm.x86.avx512.mask.scalef.ps.512|passthru_mask_round"),   # vscalefps
    ("store_fence", "llvm.x86.sse.sfence|plain"),                         # after movnt stores
    ("spin_pause", "llvm.x86.sse2.pause|plain"),                          # in spin-wait loops
)
_AVX2_INTRINSICS = (
    ("rcp.v8f32", "llvm.x86.avx.rcp.ps.256|plain|11"),                    # vrcpps: 1.5 * 2^-12
    ("store_fence", "llvm.x86.sse.sfence|plain"),
    ("spin_pause", "llvm.x86.sse2.pause|plain"),
)


def _host_features() -> dict[str, bool]:
    return dict(llvm.get_host_cpu_features())


def _flatten(feats: dict[str, bool]) -> str:
    return ",".join(("+" if on else "-") + k for k, on in sorted(feats.items()))


def _avx512(cpu: str, feats: dict[str, bool]) -> Target:
    table = _AVX512_INTRINSICS
    if feats.get("avx512bf16"):
        table += (("bf16_dot.v16f32", "llvm.x86.avx512bf16.dpbf16ps.512|plain"),)   # vdpbf16ps
    if feats.get("avx512vnni"):
        table += (("u8s8_dot.v16i32", "llvm.x86.avx512.vpdpbusd.512|plain"),)       # vpdpbusd
    return Target("x86-avx512", TRIPLE, cpu, _flatten(feats), 512, 32, table, codegen_flags=NO_LSR,
                  code_model="large", shuffle_lane_bits=128)


def _avx2(cpu: str, feats: dict[str, bool]) -> Target:
    feats = {**feats, **{k: False for k in _AVX512_FAMILY if k in feats}}
    table = _AVX2_INTRINSICS
    if feats.get("avxvnni"):       # VEX-encoded vpdpbusd (AVX-VNNI)
        table += (("u8s8_dot.v8i32", "llvm.x86.avx512.vpdpbusd.256|plain"),)
    return Target("x86-avx2", TRIPLE, cpu, _flatten(feats), 256, 16, table, codegen_flags=NO_LSR,
                  code_model="large", fma_memory_broadcast=False, shuffle_lane_bits=128)


# The x86 targets from least to most capable: a host limit (set_host_limit) names one.
LADDER = ("x86-avx2", "x86-avx512")


def probe_host(limit: str | None = None) -> Target | None:
    """Target for this machine's CPU, at most `limit` (a LADDER name), or None when it
    is not a usable x86-64."""
    if not llvm.get_process_triple().startswith("x86_64"):
        return None
    feats = _host_features()
    cpu = llvm.get_host_cpu_name()
    avx512_allowed = limit is None or LADDER.index(limit) >= LADDER.index("x86-avx512")
    if avx512_allowed and all(feats.get(f) for f in _AVX512_NEEDS):
        return _avx512(cpu, feats)
    if all(feats.get(f) for f in _AVX2_NEEDS):
        return _avx2(cpu, feats)
    return None


def _named_avx512(host: Target | None) -> Target:
    feats = {f: True for f in _AVX512_NEEDS + ("avx512cd", "avx512bf16", "avx512vnni", "evex512",
                                               "avx2", "fma", "f16c", "bmi", "bmi2")}
    tgt = _avx512("sapphirerapids", feats)
    return _with_runs(tgt, host is not None and host.name == "x86-avx512")


def _named_avx2(host: Target | None) -> Target:
    if host is not None:   # an AVX-512 host runs AVX2 code: keep its CPU tuning
        return _avx2(host.cpu, _host_features())
    return _with_runs(_avx2("haswell", {f: True for f in _AVX2_NEEDS + ("bmi", "bmi2")}), False)


def _with_runs(t: Target, runs: bool) -> Target:
    from dataclasses import replace

    return replace(t, runs_on_host=runs)


NAMED = {"x86-avx512": _named_avx512, "x86-avx2": _named_avx2}
