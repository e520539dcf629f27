"""NVIDIA GPU targets (NVPTX): kernels are PTX text for the CUDA driver to load.

`nvptx-sm80` (A100 and later) and `nvptx-sm90` (H100/H200). They never run on the
host CPU: dispatch returns a kernel whose .asm is the PTX; tpp.cuda loads and
launches it where a GPU is present.
"""
from __future__ import annotations

from . import Target

TRIPLE = "nvptx64-nvidia-cuda"
PTX_VERSION = "+ptx80"      # PTX ISA 8.0 (CUDA 12.0): accepted by sm_80 and sm_90 drivers

# The catalog families not emitted for GPUs yet, and why (the target-coverage test reads this).
_UNSUPPORTED = (
    ("vnni_pack", "VNNI layouts are a CPU dot-instruction format; GPUs take plain or mma fragments"),
)


def _gpu(name: str, sm: str) -> Target:
    # vector_bits 32: the elementwise code runs one element per thread (lanes = 1 for f32)
    return Target(name, TRIPLE, sm, PTX_VERSION, vector_bits=32, vector_registers=255,
                  runs_on_host=False, model="simt", output="assembly", unsupported=_UNSUPPORTED)


NAMED = {"nvptx-sm80": lambda host: _gpu("nvptx-sm80", "sm_80"),
         "nvptx-sm90": lambda host: _gpu("nvptx-sm90", "sm_90")}
