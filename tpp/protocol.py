"""The descriptor protocol: what dispatch (tpp/dispatch.py), Kernel (tpp/kernel.py),
tpp.cuda, tpp-aot and the C ABI read of a primitive's descriptor. Every primitive
descriptor (tpp/descriptors.py: UnaryDesc, BinaryDesc, GemmDesc, BrgemmDesc, all
over descriptors.Primitive) defines all of it, so nothing probes with getattr;
tests/test_families.py checks each descriptor against ATTRIBUTES.

Composite descriptors (tpp.ops) are another contract: they are compiled through
dispatch.get_functions and need only `emit`.
"""
from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np
from llvmlite import ir

from .jit.targets import Target
from .kernels.family import Family
from .kernels.operands import Operand


@runtime_checkable
class Descriptor(Protocol):
    """A primitive's descriptor: frozen, hashable (the kernel cache key), validated on
    construction."""

    kind: str                   # names the primitive in messages ("relu", "gemm")
    family: str                 # the catalog family targets list as not offered (Target.unsupported)
    record: Family              # the family record: operands, references, emitter per backend
    elementwise: bool           # output (i, j) depends only on inputs (i, j): in place is safe
    positional_output: bool     # the output is the last positional argument, g(a, b, c), updated in place
    output_required: bool       # a call must pass the output: the kernel reads it (GEMM, beta = 1)
    native_python_entry: bool   # the arguments are a fixed list of 2-D arrays (the native fast path)

    def operands(self) -> list[Operand]:
        """Inputs then outputs, in the kernel's argument order."""

    def emit(self, module: ir.Module, name: str, target: Target) -> None:
        """Define the kernel `void name(const tpp_tensor *)` (PTX: (data, ld) pairs) in module."""

    def reference(self, *inputs: np.ndarray):
        """The float64 numpy result(s) for the kernel's inputs."""

    def with_lds(self, *lds: int) -> "Descriptor":
        """The same primitive compiled for other row strides, one per operand whose ld is
        compiled in (Operand.ld), in operand order; refused where there are none."""


ATTRIBUTES = ("kind", "family", "record", "elementwise", "positional_output", "output_required",
              "native_python_entry", "operands", "emit", "reference", "with_lds")
