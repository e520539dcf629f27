"""Descriptors: what a kernel computes, as frozen dataclasses. They are
validated on construction, hashable, and are the kernel cache keys.

Each descriptor holds its family's record (kernels/family.py: kinds, checks,
operands, emitter per backend, numpy reference) and offers what the descriptor
protocol (tpp/protocol.py) lists; dispatch and Kernel need nothing else.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
from llvmlite import ir

from .errors import DescriptorError
from .jit.targets import Target
from .jit.types import DType
from .kernels import binary as binary_k
from .kernels import gemm_family
from .kernels import reduce as reduce_k
from .kernels import transpose as transpose_k
from .kernels import unary as unary_k
from .kernels import vnni as vnni_k
from .kernels.family import Family
from .kernels.fields import MAX_BYTES, check_dims, check_extent, dtype_names, flag, put  # noqa: F401
from .kernels.operands import Bcast, Operand

# The catalog's family records; a unary kind belongs to one of the first four.
UNARY_RECORDS = (unary_k.FAMILY, reduce_k.FAMILY, transpose_k.FAMILY, vnni_k.FAMILY)
RECORDS = UNARY_RECORDS + (binary_k.FAMILY, gemm_family.GEMM, gemm_family.BRGEMM)
_UNARY_RECORDS: dict[str, Family] = {kind: record for record in UNARY_RECORDS for kind in record.kinds}
UNARY_KINDS = tuple(_UNARY_RECORDS)
BINARY_KINDS = tuple(binary_k.KINDS)
_BCAST_NAMES = {"none": Bcast.FULL, "full": Bcast.FULL, "row": Bcast.ROW, "col": Bcast.COL,
                "scalar": Bcast.SCALAR}


class Primitive:
    """The descriptor protocol (tpp/protocol.py) over a family record: every method
    asks `self.record`, so no descriptor branches on its family or kind."""

    positional_output = False      # the output is passed last, positionally: g(a, b, c)
    output_required = False        # a call must pass the output (it is read)
    native_python_entry = True     # arguments are a fixed list of 2-D arrays

    record: Family

    @property
    def family(self) -> str:
        return self.record.family

    @property
    def elementwise(self) -> bool:
        """Output element (i, j) depends only on input elements (i, j): in-place is safe."""
        return self.record.elementwise

    def operands(self) -> list[Operand]:
        return self.record.operands(self)

    def emit(self, module: ir.Module, name: str, target: Target) -> None:
        self.record.emit(module, name, target, self)

    def reference(self, *inputs: np.ndarray):
        """float64 result(s) of the numpy reference for these inputs."""
        return self.record.reference(self, *inputs)

    def with_lds(self, *lds: int):
        """The same primitive compiled for other row strides (one per operand whose ld is
        compiled in); only descriptors with such operands have siblings."""
        raise DescriptorError(f"tpp {self.kind}: no row stride is compiled into this kernel")


@dataclass(frozen=True)
class UnaryDesc(Primitive):
    """A unary TPP: elementwise kinds, reductions (axis, argidx), transpose and vnni_pack."""
    kind: str
    m: int
    n: int
    dtype: DType
    out_dtype: DType
    alpha: float | None = None
    axis: int | None = None          # reductions: 1 = over each row, 0 = over each column
    argidx: bool = False             # reduce_max / reduce_min: also return indices

    def __post_init__(self) -> None:
        k = self.kind
        record = _UNARY_RECORDS.get(k) if isinstance(k, str) else None
        if record is None:
            raise DescriptorError(f"tpp.unary: unknown kind {k!r}; known kinds: {', '.join(UNARY_KINDS)}")
        check_dims(self, k, "m", "n")
        put(self, "argidx", flag(k, "argidx", self.argidx))
        record.validate(self)
        # every unary operand is at most an m x n tile (vnni_pack pads k to its group: 3 rows)
        itemsize = max(self.dtype.itemsize, self.out_dtype.itemsize)
        check_extent(k, "x", "m, n", self.m + 3, self.n, self.n, itemsize)

    @property
    def record(self) -> Family:
        return _UNARY_RECORDS[self.kind]

    def alpha_value(self) -> float | None:
        return unary_k.alpha_value(self) if self.kind in unary_k.KINDS else None


@dataclass(frozen=True)
class BinaryDesc(Primitive):
    """A binary TPP with a broadcast mode per input."""
    kind: str
    m: int
    n: int
    dtype: DType
    bcast_a: Bcast = Bcast.FULL
    bcast_b: Bcast = Bcast.FULL

    record = binary_k.FAMILY

    def __post_init__(self) -> None:
        if self.kind not in BINARY_KINDS:
            raise DescriptorError(f"tpp.binary: unknown kind {self.kind!r}; known kinds: "
                                  f"{', '.join(BINARY_KINDS)}")
        check_dims(self, self.kind, "m", "n")
        self.record.validate(self)
        check_extent(self.kind, "a", "m, n", self.m, self.n, self.n, self.dtype.itemsize)

    @property
    def out_dtype(self) -> DType:
        return binary_k.out_dtype(self)


@dataclass(frozen=True)
class GemmDesc(Primitive):
    """C = beta * C + op(A) op(B) with C m x n, op(A) m x k, op(B) k x n (row-major)."""
    m: int
    n: int
    k: int
    dtype: DType
    trans_a: bool = False
    trans_b: bool = False
    beta: float = 1.0
    lda: int | None = None         # row strides in elements; None: tight (the shape's width)
    ldb: int | None = None
    ldc: int | None = None
    out_dtype: DType | None = None  # C's dtype: bf16 inputs accumulate in f32, store f32 or bf16
    b_vnni: bool = False            # bf16: B given VNNI-2 packed (tpp.unary("vnni_pack", k, n))
    epilogue: tuple[str, ...] = ()  # steps on the accumulators before the store (epilogue.py)
    # who the error messages name (a BRGEMM validates its GEMM part through this class);
    # not part of the descriptor's identity
    what: str = field(default="tpp gemm", compare=False, repr=False)

    kind = "gemm"
    record = gemm_family.GEMM
    positional_output = True        # g(a, b, c) updates c in place

    def __post_init__(self) -> None:
        self.record.validate(self)

    def tight_lds(self) -> tuple[int, int, int]:
        return gemm_family.tight_lds(self)

    def with_lds(self, lda: int, ldb: int, ldc: int) -> "GemmDesc":
        """The same GEMM compiled for other row strides."""
        return replace(self, lda=lda, ldb=ldb, ldc=ldc)

    @property
    def reads_output(self) -> bool:
        """beta = 1 accumulates into C, so a call must pass it."""
        return self.beta == 1.0

    @property
    def output_required(self) -> bool:
        return self.beta == 1.0


@dataclass(frozen=True)
class BrgemmDesc(Primitive):
    """C = beta * C + sum_i op(A_i) op(B_i), then the epilogue; the batch given at call
    time. variant: "stride" (A_i = A_0 + i*stride_a elements), "offset" (element offsets
    per i), "address" (a pointer per i). dtype, out_dtype, b_vnni and epilogue as GemmDesc."""
    m: int
    n: int
    k: int
    dtype: DType
    variant: str = "stride"
    trans_a: bool = False
    trans_b: bool = False
    beta: float = 1.0
    lda: int | None = None
    ldb: int | None = None
    ldc: int | None = None
    stride_a: int | None = None      # stride variant: elements between A_i (None: tight)
    stride_b: int | None = None
    out_dtype: DType | None = None
    b_vnni: bool = False
    epilogue: tuple[str, ...] = ()

    kind = "brgemm"
    record = gemm_family.BRGEMM
    what = "tpp brgemm"             # who the GEMM part's messages name
    # the arguments are stacks, lists or offset tables (tpp.brgemm.BatchReduceKernel checks
    # and calls them in Python), not a fixed list of 2-D arrays
    native_python_entry = False

    def __post_init__(self) -> None:
        self.record.validate(self)

    @property
    def gemm(self) -> GemmDesc:
        """One block product (A_i, B_i) as a GEMM with this epilogue."""
        return GemmDesc(self.m, self.n, self.k, self.dtype, self.trans_a, self.trans_b, self.beta, self.lda,
                        self.ldb, self.ldc, self.out_dtype, self.b_vnni, self.epilogue, "tpp brgemm")


def parse_bcast(value, kind: str) -> Bcast:
    if isinstance(value, Bcast):
        return value
    if value is None:
        return Bcast.FULL
    if isinstance(value, str) and value in _BCAST_NAMES:
        return _BCAST_NAMES[value]
    raise DescriptorError(f"tpp {kind}: broadcast mode {value!r} is not one of none, row, col, scalar")


__all__ = ["Primitive", "UnaryDesc", "BinaryDesc", "GemmDesc", "BrgemmDesc", "parse_bcast"]
