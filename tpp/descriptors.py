"""Descriptors: what a kernel computes, as frozen dataclasses. They are
validated on construction, hashable, and are the kernel cache keys.

Each descriptor knows its operands (kernels.operands.Operand), how to emit its
kernel, and its numpy reference; dispatch needs nothing else.
"""
from __future__ import annotations

import math
import operator
from dataclasses import dataclass, field, replace

import numpy as np
from llvmlite import ir

from .dtypes import to_numpy
from .errors import DescriptorError, DTypeError
from .jit.targets import Target
from .jit.types import DType
from .kernels import binary as binary_k
from .kernels import epilogue as epilogue_k
from .kernels import gemm as gemm_k
from .kernels import reduce as reduce_k
from .kernels import transpose as transpose_k
from .kernels import unary as unary_k
from .kernels import vnni as vnni_k
from .kernels.eltwise import emit_eltwise
from .kernels.operands import Bcast, Operand

UNARY_KINDS = tuple(unary_k.KINDS) + tuple(reduce_k.KINDS) + ("transpose", "vnni_pack")
BINARY_KINDS = tuple(binary_k.KINDS)
_BCAST_NAMES = {"none": Bcast.FULL, "full": Bcast.FULL, "row": Bcast.ROW, "col": Bcast.COL,
                "scalar": Bcast.SCALAR}


# No operand or batch stride spans more than this many bytes: 256 TiB, more than any
# machine's memory, and far enough below 2**63 that the kernels' int64 address arithmetic
# inside one operand (row index times row stride, in bytes) cannot wrap.
MAX_BYTES = 1 << 48


def _integer(what: str, name: str, value) -> int:
    """`value` as a Python int. Every size, stride and index field passes through here:
    numpy integers would compute in their own width inside the code generator
    (np.int16(200) * 200 wraps) and numpy bools print as `True` into the IR."""
    if isinstance(value, (bool, np.bool_)):
        raise DescriptorError(f"tpp {what}: {name} must be an integer, got the bool {value!r}")
    try:
        return operator.index(value)
    except TypeError:
        raise DescriptorError(f"tpp {what}: {name} must be an integer, got {type(value).__name__} "
                              f"{value!r}") from None


def _flag(what: str, name: str, value) -> bool:
    """A flag field as a Python bool (numpy bools included; ints and strings are refused)."""
    if not isinstance(value, (bool, np.bool_)):
        raise DescriptorError(f"tpp {what}: {name} must be True or False, got {type(value).__name__} "
                              f"{value!r}")
    return bool(value)


def _check_dims(desc, what: str, *names: str) -> None:
    """Set each named size field to a Python int in 1 .. 2**31 - 1, or raise naming it."""
    for name in names:
        value = getattr(desc, name)
        try:
            if isinstance(value, (bool, np.bool_)):
                raise TypeError
            number = operator.index(value)
        except TypeError:
            raise DescriptorError(f"tpp {what}: {name} must be an integer >= 1, got {value!r}") from None
        if number < 1:
            raise DescriptorError(f"tpp {what}: {name} must be an integer >= 1, got {number!r}")
        if number >= 2 ** 31:
            raise DescriptorError(f"tpp {what}: {name}={number} is too large (limit 2**31 - 1)")
        object.__setattr__(desc, name, number)


def _check_extent(what: str, operand: str, fields: str, rows: int, cols: int, ld: int, itemsize: int) -> None:
    """Refuse an operand of rows x cols elements, rows ld apart, that spans more than
    MAX_BYTES; the message names the fields that set its extent."""
    extent = ((rows - 1) * ld + cols) * itemsize
    if extent > MAX_BYTES:
        raise DescriptorError(f"tpp {what}: {fields} make operand '{operand}' span {extent} bytes, more "
                              f"than the limit of 2**48")


def _real(what: str, name: str, value) -> float:
    """A finite real parameter (alpha, beta) as a Python float."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise DescriptorError(f"tpp {what}: {name} must be a real number, got {type(value).__name__} "
                              f"{value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise DescriptorError(f"tpp {what}: {name} must be finite, got {value}")
    return value


def dtype_names(dtypes) -> list[str]:
    return sorted(d.value for d in dtypes)


def _dtype_check(kind: str, dtype: DType, allowed) -> None:
    if not isinstance(dtype, DType):
        raise DTypeError(f"tpp {kind}: dtype must be a tpp DType (tpp.unary etc. parse names), got {dtype!r}")
    if dtype not in allowed:
        raise DTypeError(f"tpp {kind}: dtype {dtype.value} is not supported (supported: "
                         f"{', '.join(dtype_names(allowed))})")


@dataclass(frozen=True)
class UnaryDesc:
    """A unary TPP: elementwise kinds, reductions (axis, argidx) and transpose."""
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
        if k not in UNARY_KINDS:
            raise DescriptorError(f"tpp.unary: unknown kind {k!r}; known kinds: {', '.join(UNARY_KINDS)}")
        _check_dims(self, k, "m", "n")
        object.__setattr__(self, "argidx", _flag(k, "argidx", self.argidx))
        if k in reduce_k.KINDS:
            _dtype_check(k, self.dtype, unary_k.ARITH)
            axis = None if self.axis is None else _integer(k, "axis", self.axis)
            if axis not in (0, 1):
                raise DescriptorError(f"tpp {k}: axis must be 0 (over rows) or 1 (over columns), "
                                      f"got {self.axis!r}")
            object.__setattr__(self, "axis", axis)
            if self.argidx and reduce_k.KINDS[k].arg_reference is None:
                raise DescriptorError(f"tpp {k}: argidx is only offered by reduce_max and reduce_min")
        elif self.axis is not None or self.argidx:
            raise DescriptorError(f"tpp {k}: axis/argidx are only for reduce_* kinds")
        if k == "transpose":
            _dtype_check(k, self.dtype, unary_k.ARITH)
        elif k == "vnni_pack":
            _dtype_check(k, self.dtype, vnni_k.DTYPES)
        elif k in unary_k.KINDS:
            _dtype_check(k, self.dtype, unary_k.KINDS[k].dtypes)
        if k == "cast":
            if self.out_dtype not in unary_k.KINDS["cast"].dtypes or self.out_dtype == self.dtype:
                raise DTypeError(f"tpp cast: out_dtype must be the other of f32/bf16, "
                                 f"got {self.dtype.value} -> {self.out_dtype.value}")
        elif self.out_dtype != self.dtype:
            raise DTypeError(f"tpp {k}: out_dtype must equal dtype ({self.dtype.value}); use kind 'cast'")
        default = unary_k.KINDS[k].default_alpha if k in unary_k.KINDS else None
        if default is None and self.alpha is not None:
            raise DescriptorError(f"tpp {k}: takes no alpha")
        if self.alpha is not None:
            object.__setattr__(self, "alpha", _real(k, "alpha", self.alpha))
        # every unary operand is at most an m x n tile (vnni_pack pads k to its group: 3 rows)
        _check_extent(k, "x", "m, n", self.m + 3, self.n, self.n,
                      max(self.dtype.itemsize, self.out_dtype.itemsize))

    @property
    def family(self) -> str:
        if self.kind in reduce_k.KINDS:
            return "reduce"
        return self.kind if self.kind in ("transpose", "vnni_pack") else "eltwise"

    @property
    def elementwise(self) -> bool:
        """Output element (i, j) depends only on input elements (i, j): in-place is safe."""
        return self.family == "eltwise"

    def alpha_value(self) -> float | None:
        if self.alpha is not None:
            return float(self.alpha)
        return unary_k.KINDS[self.kind].default_alpha if self.kind in unary_k.KINDS else None

    def operands(self) -> list[Operand]:
        if self.family == "reduce":
            return reduce_k.operands(self.kind, self.m, self.n, self.dtype, self.axis, self.argidx)
        if self.family == "transpose":
            return transpose_k.operands(self.m, self.n, self.dtype)
        if self.family == "vnni_pack":
            return vnni_k.operands(self.m, self.n, self.dtype)
        ins = [Operand(nm, self.dtype, self.m, self.n) for nm in unary_k.KINDS[self.kind].inputs]
        return ins + [Operand("out", self.out_dtype, self.m, self.n, output=True)]

    def emit(self, module: ir.Module, name: str, target: Target) -> None:
        if self.family == "reduce":
            reduce_k.emit_reduce(module, name, target, self.kind, self.m, self.n, self.dtype,
                                 self.axis, self.argidx)
        elif self.family == "transpose":
            transpose_k.emit_transpose(module, name, target, self.m, self.n, self.dtype)
        elif self.family == "vnni_pack":
            vnni_k.emit_vnni_pack(module, name, target, self.m, self.n, self.dtype)
        else:
            ops = self.operands()
            params = unary_k.Params(self.dtype.compute.storage, self.alpha_value())
            uk = unary_k.KINDS[self.kind]
            emit_eltwise(module, name, target, self.m, self.n, ops[:-1], ops[-1:],
                         lambda v, xs: uk.body(v, xs, params))

    def reference(self, *inputs: np.ndarray):
        """float64 result(s) of the numpy reference for these inputs."""
        xs = [np.asarray(x, dtype=np.float64) for x in inputs]
        if self.family == "reduce":
            rk = reduce_k.KINDS[self.kind]
            values = rk.reference(xs[0], self.axis)
            return (values, rk.arg_reference(xs[0], axis=self.axis)) if self.argidx else values
        if self.family == "transpose":
            return transpose_k.transpose(xs[0])
        if self.family == "vnni_pack":       # groups follow the element size: pack in the dtype
            return vnni_k.vnni_pack(np.asarray(inputs[0], dtype=to_numpy(self.dtype))).astype(np.float64)
        fn = unary_k.KINDS[self.kind].reference
        if self.kind == "zero":
            return np.zeros((self.m, self.n))
        return fn(*xs, self.alpha_value()) if unary_k.KINDS[self.kind].default_alpha is not None \
            else fn(*xs)


@dataclass(frozen=True)
class BinaryDesc:
    """A binary TPP with a broadcast mode per input."""
    kind: str
    m: int
    n: int
    dtype: DType
    bcast_a: Bcast = Bcast.FULL
    bcast_b: Bcast = Bcast.FULL

    family = "eltwise"

    def __post_init__(self) -> None:
        if self.kind not in BINARY_KINDS:
            raise DescriptorError(f"tpp.binary: unknown kind {self.kind!r}; known kinds: "
                                  f"{', '.join(BINARY_KINDS)}")
        _check_dims(self, self.kind, "m", "n")
        _dtype_check(self.kind, self.dtype, binary_k.FLOATS)
        for b in (self.bcast_a, self.bcast_b):
            if b not in (Bcast.FULL, Bcast.ROW, Bcast.COL, Bcast.SCALAR):
                raise DescriptorError(f"tpp {self.kind}: broadcast {b!r} is not an input mode")
        _check_extent(self.kind, "a", "m, n", self.m, self.n, self.n, self.dtype.itemsize)

    elementwise = True

    @property
    def out_dtype(self) -> DType:
        return DType.BOOL if binary_k.KINDS[self.kind].compare else self.dtype

    def operands(self) -> list[Operand]:
        def op(name, bc):
            rows = 1 if bc in (Bcast.ROW, Bcast.SCALAR) else self.m
            cols = 1 if bc in (Bcast.COL, Bcast.SCALAR) else self.n
            return Operand(name, self.dtype, rows, cols, bc)
        return [op("a", self.bcast_a), op("b", self.bcast_b),
                Operand("out", self.out_dtype, self.m, self.n, output=True)]

    def emit(self, module: ir.Module, name: str, target: Target) -> None:
        ops = self.operands()
        body = binary_k.KINDS[self.kind].body
        emit_eltwise(module, name, target, self.m, self.n, ops[:2], ops[2:],
                     lambda v, xs: [body(v, xs[0], xs[1])])

    def reference(self, a: np.ndarray, b: np.ndarray):
        ra = np.asarray(a, dtype=np.float64).reshape(self._ref_shape(self.bcast_a))
        rb = np.asarray(b, dtype=np.float64).reshape(self._ref_shape(self.bcast_b))
        return np.broadcast_to(binary_k.KINDS[self.kind].reference(ra, rb), (self.m, self.n))

    def _ref_shape(self, bc: Bcast) -> tuple[int, int]:
        return {Bcast.FULL: (self.m, self.n), Bcast.ROW: (1, self.n), Bcast.COL: (self.m, 1),
                Bcast.SCALAR: (1, 1)}[bc]


@dataclass(frozen=True)
class GemmDesc:
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
    family = "gemm"            # the catalog family (targets list the ones they lack)
    elementwise = False

    def __post_init__(self) -> None:
        what = self.what.removeprefix("tpp ")
        _check_dims(self, what, "m", "n", "k")
        for name in ("trans_a", "trans_b", "b_vnni"):
            object.__setattr__(self, name, _flag(what, name, getattr(self, name)))
        _dtype_check(what, self.dtype, gemm_k.DTYPES)
        allowed = gemm_k.OUT_DTYPES[self.dtype]
        if self.out_dtype is not None and not isinstance(self.out_dtype, DType):
            raise DTypeError(f"{self.what}: out_dtype must be a tpp DType or None, got {self.out_dtype!r}")
        if self.out_dtype is None:
            object.__setattr__(self, "out_dtype", gemm_k.ACCUMULATOR.get(self.dtype, self.dtype))
        elif self.out_dtype not in allowed:
            raise DTypeError(f"{self.what}: out_dtype {self.out_dtype.value} with {self.dtype.value} inputs "
                             f"(supported: {', '.join(sorted(d.value for d in allowed))})")
        if self.b_vnni and self.trans_b:
            raise DescriptorError(f"{self.what}: b_vnni and trans_b exclude each other (a VNNI packed B "
                                  "is already in the layout the kernel reads)")
        if self.b_vnni and self.dtype not in (DType.BF16, DType.U8):
            raise DescriptorError(f"{self.what}: b_vnni (a VNNI packed B) is for bf16 and int8 inputs")
        if _real(what, "beta", self.beta) not in (0.0, 1.0):
            raise DescriptorError(f"{self.what}: beta must be 0 or 1, got {self.beta!r}")
        object.__setattr__(self, "beta", float(self.beta))
        if isinstance(self.epilogue, str) or not isinstance(self.epilogue, (tuple, list)):
            raise DescriptorError(f"{self.what}: epilogue must be a tuple of step names, "
                                  f"got {self.epilogue!r}")
        object.__setattr__(self, "epilogue", tuple(self.epilogue))
        known = epilogue_k.INPUT_STEPS + epilogue_k.activation_kinds()
        for step in self.epilogue:
            if step not in known:
                raise DescriptorError(f"{self.what}: epilogue step {step!r} is not one of: {', '.join(known)}")
        if self.epilogue and self.dtype is DType.U8:
            raise DescriptorError(f"{self.what}: epilogues are for float GEMMs (int8 accumulates in int32)")
        acc = gemm_k.ACCUMULATOR.get(self.dtype, self.dtype)       # what the activations compute in
        for step in self.epilogue:
            if step in unary_k.KINDS and acc not in unary_k.KINDS[step].dtypes:
                raise DTypeError(f"{self.what}: epilogue step {step!r} is not offered for {acc.value} "
                                 f"(supported: {', '.join(dtype_names(unary_k.KINDS[step].dtypes))})")
        if len(epilogue_k.epilogue_inputs(self.epilogue)) != len(set(epilogue_k.epilogue_inputs(self.epilogue))):
            raise DescriptorError(f"{self.what}: each of bias/residual may appear once in an epilogue")
        tight = self.tight_lds()
        for name, value, least in zip(("lda", "ldb", "ldc"), (self.lda, self.ldb, self.ldc), tight):
            if value is not None:
                value = _integer(what, name, value)
                if value < least:
                    raise DescriptorError(f"{self.what}: {name} must be an integer >= {least}, got {value!r}")
            object.__setattr__(self, name, least if value is None else value)
        a_rows, a_cols = (self.k, self.m) if self.trans_a else (self.m, self.k)
        b_rows, b_cols = gemm_k.b_shape(self.n, self.k, self.trans_b, self.b_vnni, self.dtype)
        _check_extent(what, "a", "m, k, lda", a_rows, a_cols, self.lda, self.dtype.itemsize)
        _check_extent(what, "b", "n, k, ldb", b_rows, b_cols, self.ldb, gemm_k.B_DTYPE[self.dtype].itemsize)
        _check_extent(what, "c", "m, n, ldc", self.m, self.n, self.ldc, self.out_dtype.itemsize)

    def tight_lds(self) -> tuple[int, int, int]:
        b_cols = gemm_k.b_shape(self.n, self.k, self.trans_b, self.b_vnni, self.dtype)[1]
        return (self.m if self.trans_a else self.k, b_cols, self.n)

    def with_lds(self, lda: int, ldb: int, ldc: int) -> "GemmDesc":
        """The same GEMM compiled for other row strides."""
        return replace(self, lda=lda, ldb=ldb, ldc=ldc)

    @property
    def reads_output(self) -> bool:
        """beta = 1 accumulates into C, so a call must pass it."""
        return self.beta == 1.0

    def operands(self) -> list[Operand]:
        return gemm_k.operands(self.m, self.n, self.k, self.dtype, self.trans_a, self.trans_b,
                               self.lda, self.ldb, self.ldc, self.out_dtype, self.b_vnni, self.epilogue)

    def emit(self, module: ir.Module, name: str, target: Target) -> None:
        gemm_k.emit_gemm(module, name, target, self.m, self.n, self.k, self.dtype,
                         self.trans_a, self.trans_b, self.beta, self.lda, self.ldb, self.ldc,
                         out_dtype=self.out_dtype, b_vnni=self.b_vnni, epilogue=self.epilogue)

    def reference(self, a: np.ndarray, b: np.ndarray, *rest: np.ndarray):
        """float64 result for g(a, b, [bias], [residual], [c])."""
        names = epilogue_k.epilogue_inputs(self.epilogue)
        inputs = dict(zip(names, rest))
        c = rest[len(names)] if len(rest) > len(names) else None
        c64 = np.zeros((self.m, self.n)) if c is None else np.asarray(c, dtype=np.float64)
        b64 = np.asarray(b, np.float64)
        if self.b_vnni:     # unpack: B[g p + t, j] = Bp[p, g j + t]
            g = b64.shape[1] // self.n
            b64 = b64.reshape(b64.shape[0], self.n, g).transpose(0, 2, 1).reshape(-1, self.n)[: self.k]
        acc = gemm_k.gemm(np.asarray(a, np.float64), b64, c64, self.beta, self.trans_a, self.trans_b)
        return epilogue_k.reference(self.epilogue, acc, inputs)


@dataclass(frozen=True)
class BrgemmDesc:
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
    family = "brgemm"
    elementwise = False
    native_python_entry = False

    def __post_init__(self) -> None:
        if self.variant not in gemm_k.BATCH_VARIANTS[1:]:
            raise DescriptorError(f"tpp brgemm: variant must be stride, offset or address, got {self.variant!r}")
        plain = self.gemm                       # validates the GEMM part and fills its defaults
        for name in ("m", "n", "k", "trans_a", "trans_b", "beta", "lda", "ldb", "ldc", "out_dtype", "b_vnni",
                     "epilogue"):
            object.__setattr__(self, name, getattr(plain, name))
        a_rows = self.k if self.trans_a else self.m
        b_rows = gemm_k.b_shape(self.n, self.k, self.trans_b, self.b_vnni, self.dtype)[0]
        for name, value, least in (("stride_a", self.stride_a, a_rows * self.lda),
                                   ("stride_b", self.stride_b, b_rows * self.ldb)):
            if self.variant != "stride":
                if value is not None:
                    raise DescriptorError(f"tpp brgemm: {name} is only for the stride variant")
                object.__setattr__(self, name, 0)
            elif value is None:
                object.__setattr__(self, name, least)
            else:
                value = _integer("brgemm", name, value)
                if value < 0:
                    raise DescriptorError(f"tpp brgemm: {name} must be an integer >= 0, got {value!r}")
                itemsize = (self.dtype, gemm_k.B_DTYPE[self.dtype])[name == "stride_b"].itemsize
                if value * itemsize > MAX_BYTES:
                    raise DescriptorError(f"tpp brgemm: {name}={value} puts blocks {value * itemsize} bytes "
                                          f"apart, more than the limit of 2**48")
                object.__setattr__(self, name, value)

    @property
    def gemm(self) -> GemmDesc:
        """One block product (A_i, B_i) as a GEMM with this epilogue."""
        return GemmDesc(self.m, self.n, self.k, self.dtype, self.trans_a, self.trans_b, self.beta,
                        self.lda, self.ldb, self.ldc, self.out_dtype, self.b_vnni, self.epilogue, "tpp brgemm")

    def operands(self) -> list[Operand]:
        """One block of each operand: A_i, B_i, the epilogue's inputs, C."""
        return self.gemm.operands()

    def emit(self, module: ir.Module, name: str, target: Target) -> None:
        gemm_k.emit_gemm(module, name, target, self.m, self.n, self.k, self.dtype, self.trans_a,
                         self.trans_b, self.beta, self.lda, self.ldb, self.ldc, self.variant,
                         self.stride_a, self.stride_b, self.out_dtype, self.b_vnni, self.epilogue)

    def reference(self, a_blocks, b_blocks, *rest: np.ndarray):
        """float64 result for lists of A_i and B_i blocks, then the epilogue's inputs and C."""
        names = epilogue_k.epilogue_inputs(self.epilogue)
        inputs = dict(zip(names, rest))
        acc = self.beta * np.asarray(rest[len(names)], np.float64)
        block = replace(self.gemm, beta=1.0, epilogue=())
        for a, b in zip(a_blocks, b_blocks):
            acc = block.reference(a, b, acc)
        return epilogue_k.reference(self.epilogue, acc, inputs)


def parse_bcast(value, kind: str) -> Bcast:
    if isinstance(value, Bcast):
        return value
    if value is None:
        return Bcast.FULL
    if isinstance(value, str) and value in _BCAST_NAMES:
        return _BCAST_NAMES[value]
    raise DescriptorError(f"tpp {kind}: broadcast mode {value!r} is not one of none, row, col, scalar")


__all__ = ["UnaryDesc", "BinaryDesc", "GemmDesc", "BrgemmDesc", "parse_bcast"]
