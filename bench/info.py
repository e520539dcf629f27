"""`tpp-bench info`: what tpp sees on this machine, and its measured peaks."""
from __future__ import annotations

import os

import tpp
from tpp import config
from tpp.jit.targets import Target, names

from . import peak, report


def cache_usage(path) -> tuple[int, int]:
    """(files, bytes) under the kernel cache directory (0, 0 if it does not exist)."""
    files = size = 0
    for root, _, entries in os.walk(path):
        for name in entries:
            try:
                size += os.path.getsize(os.path.join(root, name))
                files += 1
            except OSError:
                pass
    return files, size


def targets() -> list[dict]:
    """Every named target, and whether this machine runs its code."""
    out = []
    for name in names():
        try:
            t = Target.named(name)
            out.append({"name": name, "runs_here": t.runs_on_host, "vector_bits": t.vector_bits})
        except Exception as exc:         # a target that cannot even be described here
            out.append({"name": name, "runs_here": False, "error": str(exc)})
    return out


def gather(opts) -> dict:
    cfg = config.get()
    t = tpp.current_target()
    files, size = cache_usage(cfg.cache_dir)
    info = {**report.machine(None), "target": t.name, "triple": t.triple, "llvm_cpu": t.cpu,
            "vector_bits": t.vector_bits, "vector_registers": t.vector_registers,
            "features": sorted(f[1:] for f in t.features.split(",") if f.startswith("+")),
            "threads": cfg.num_threads, "cache_dir": str(cfg.cache_dir), "cache_enabled": cfg.cache,
            "cache_files": files, "cache_bytes": size, "targets": targets(), "peaks": []}
    info["peaks"] = [peak.measure(dtype, repeat=opts.repeat, min_time=opts.min_time) for dtype in ("f32", "bf16", "u8s8")]
    return info


def text(info: dict) -> str:
    interesting = ("avx512f", "avx512bw", "avx512vl", "avx512bf16", "avx512vnni", "avxvnni", "avx2", "fma",
                   "amx-bf16", "amx-int8", "f16c")
    lines = [f"tpp {info['tpp']} | numpy {info['numpy']}, llvmlite {info['llvmlite']}, LLVM {info['llvm']}",
             f"CPU:       {info['cpu']} (LLVM cpu {info['llvm_cpu']}), {info['cores_visible']} CPUs visible",
             f"target:    {info['target']} ({info['triple']}), {info['vector_bits']}-bit vectors, "
             f"{info['vector_registers']} vector registers",
             f"features:  {', '.join(f for f in interesting if f in info['features'])}",
             f"threads:   {info['threads']} (TPP_NUM_THREADS)",
             f"cache:     {info['cache_dir']} ({'on' if info['cache_enabled'] else 'off: TPP_CACHE=0'}), "
             f"{info['cache_files']} files, {info['cache_bytes'] / 2**20:.1f} MiB",
             "targets:   " + ", ".join(f"{t['name']} ({'runs here' if t['runs_here'] else 'code only'})"
                                      for t in info["targets"])]
    for pk in info["peaks"]:
        if pk.get("available"):
            lines.append(f"peak:      {pk['what']} {pk['dtype']}: {pk['gflops']:.1f} {pk['unit']} ({pk['loop']})")
        else:
            lines.append(f"peak:      {pk['what']} {pk['dtype']}: not on this target ({pk['reason']})")
    return "\n".join(lines)
