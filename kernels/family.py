"""A family of the catalog as one record: its kinds, how a descriptor of it is
validated, its operands, its numpy reference and, per backend, its emitter.

Each kernels module defines its record (`unary.FAMILY`, `reduce.FAMILY`, ...);
the descriptors (tpp/descriptors.py) hold one and delegate to it, so no code
branches on the family or on the kind. The functions take the descriptor itself
(its fields by name: `d.m`, `d.dtype`, ...), never long positional lists.

Backends: a target names its backend in `Target.model` ("simd": one thread walks
the tile with vectors, called as `void f(const tpp_tensor *)`; "simt": a GPU grid
running PTX kernels that take (data, ld) pairs). `Family.lowerings` is the small
table backend -> Lowering; a backend without one is in `Family.unsupported` with
the reason, so a gap is never silent (tests/test_families.py checks both).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Callable, Mapping

from llvmlite import ir

from ..jit.targets import Target
from .operands import Operand

BACKENDS = ("simd", "simt")

# (module, symbol, target, descriptor) -> the kernel function it defined
Emitter = Callable[[ir.Module, str, Target, Any], ir.Function]


@dataclass(frozen=True)
class Lowering:
    """How one backend builds the family's kernels, and what its launches need."""
    emit: Emitter
    # simt: threads one launch should run (the kernels loop over their work with a grid
    # stride, so any grid is correct; this one fills the device). None on simd.
    threads: Callable[[Any], int] | None = None


def _frozen(table: Mapping) -> Mapping:
    return MappingProxyType(dict(table))


@dataclass(frozen=True)
class Family:
    name: str                     # the record (and its kernels module)
    family: str                   # the catalog family targets list (Target.unsupported)
    kinds: tuple[str, ...]
    # (descriptor) -> None: raises DescriptorError / DTypeError naming the field, and sets
    # fields to their normalised values (fields.put). Runs inside __post_init__.
    validate: Callable[[Any], None]
    operands: Callable[[Any], list[Operand]]
    reference: Callable[..., Any]          # (descriptor, *inputs) -> float64 result(s)
    lowerings: Mapping[str, Lowering] = field(default_factory=dict)
    unsupported: Mapping[str, str] = field(default_factory=dict)   # backend -> why none
    elementwise: bool = False     # output (i, j) depends only on inputs (i, j): in place is safe

    def __post_init__(self) -> None:
        object.__setattr__(self, "lowerings", _frozen(self.lowerings))
        object.__setattr__(self, "unsupported", _frozen(self.unsupported))

    def lowering(self, backend: str) -> Lowering:
        """The backend's lowering (LookupError with the reason where it has none)."""
        found = self.lowerings.get(backend)
        if found is None:
            raise LookupError(self.unsupported.get(backend, f"no {backend} emitter for {self.name}"))
        return found

    def unsupported_reason(self, backend: str) -> str | None:
        """Why this family has no emitter for the backend (None: it has one)."""
        if backend in self.lowerings:
            return None
        return self.unsupported.get(backend, f"no {backend} emitter for {self.name}")

    def emit(self, module: ir.Module, name: str, target: Target, desc) -> ir.Function:
        return self.lowering(target.model).emit(module, name, target, desc)


def elements(desc) -> int:
    """simt launch size of the grid-stride kernels: one thread per element of the tile."""
    return desc.m * desc.n
