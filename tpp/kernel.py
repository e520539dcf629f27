"""Kernel objects: a compiled primitive bound to its descriptor.

Call it like a function: `k(x)` allocates the output, `k(x, out=y)` writes y
and returns it. The hot path is one call of a native builtin (arrayabi.py)
that checks the arguments itself and returns `out`; when it refuses, the
Python checks (checks.py) raise a clear error or convert the arguments
(Python numbers, ndarray subclasses) and the raw kernel is called through cffi.
"""
from __future__ import annotations

import numpy as np

from . import arrayabi, cabi, checks, config
from .dtypes import to_numpy
from .errors import TargetError
from .irgen import generate_ir
from .jit import compiler


# Kernels whose raw address was handed out (C callers, BRGEMM's stride siblings, the
# bench's repeat loop): nothing says when such an address is last called, so their code
# is kept for the rest of the process.
_pinned: set = set()


class Kernel:
    """A JIT-compiled TPP. `address` is its C entry `void f(const tpp_tensor *args)`.
    `descriptor` follows the descriptor protocol (protocol.py); `dispatch(desc, target)`
    returns the kernel of another descriptor (tpp.dispatch.get_kernel: views with other
    row strides run siblings compiled for them). `code` (jit.compiler.Code) keeps the
    machine code mapped: it is freed with the last Kernel that refers to it."""

    def __init__(self, descriptor, target, symbol: str, address: int, entry: int,
                 source_ir: str | None = None, dispatch=None, code=None):
        self.descriptor = descriptor
        self._dispatch = dispatch
        self.target = target
        self.symbol = symbol
        self._address = address
        self._code = code
        self._ir = source_ir
        self._asm = None
        self.code: bytes | None = None    # what a loader elsewhere takes (PTX), for non-host targets
        ops = descriptor.operands()
        self._operands = ops
        self._np = [to_numpy(op.dtype) for op in ops]
        self._nin = sum(not op.output for op in ops)
        self._outs = [(op, dt) for op, dt in zip(ops, self._np) if op.output]
        self._what = f"tpp {descriptor.kind}"
        self._single = len(self._outs) == 1
        # GEMM-like kernels update C in place and take it as their last argument
        self._positional_out = descriptor.positional_output
        self._reads_output = descriptor.output_required
        self._out_shape = arrayabi.accepted_shapes(self._outs[0][0])[0]
        self._out_dtype = self._outs[0][1]
        self._raw = cabi.ffi.cast(cabi.KERNEL, address) if address else None
        self._native = self._methoddef = None
        if entry and address:
            tab = arrayabi.table(ops, self._np, address, descriptor.elementwise)
            self._native, self._methoddef = arrayabi.make_builtin(entry, tab)

    # ---- calling ------------------------------------------------------------------
    def __call__(self, *args, out=None):
        # The common cases return from the first native call; the branches are ordered so
        # that each does as little Python as possible (every line here costs ~20-60 ns).
        native = self._native
        if out is not None:
            if self._single and native is not None and native(*args, out) is out:
                return out
        elif self._positional_out and len(args) == self._nin + 1:     # g(a, b, c)
            if native is not None and native(*args) is args[-1]:
                return args[-1]
            out, args = args[-1], args[:-1]
        elif self._reads_output:
            raise TypeError(f"{self._what}: this kernel accumulates into its output "
                            f"(beta=1): pass it, e.g. g(a, b, c)")
        elif self._single:
            out = np.empty(self._out_shape, self._out_dtype)
            if native is not None and native(*args, out) is out:
                return out
        else:
            out = self._allocate()
        if not self._single and native is not None and isinstance(out, tuple) \
                and native(*args, *out) is out[-1]:
            return out
        self._checked_call(args, out)
        return out

    def _allocate(self):
        return tuple(np.empty(arrayabi.accepted_shapes(op)[0], dt) for op, dt in self._outs)

    def _checked_call(self, args, out) -> None:
        if self._raw is None:
            how = ("load it with tpp.cuda.load(kernel) where a GPU is present" if self.target.model == "simt"
                   else "build it ahead of time with tpp-aot")
            raise TargetError(f"{self._what}: kernel was built for target {self.target.name}, "
                              f"which this machine cannot run; read .asm, or {how}")
        if len(args) != self._nin:
            raise TypeError(f"{self._what}: expected {self._nin} input(s), got {len(args)}")
        if self._single:
            outs = (out,)
        elif isinstance(out, tuple) and len(out) == len(self._outs):
            outs = out
        else:
            raise TypeError(f"{self._what}: out must be a tuple of {len(self._outs)} arrays")
        arrays = [checks.as_array(self._what, op, val, dt)
                  for op, val, dt in zip(self._operands, list(args) + list(outs), self._np)]
        checks.check_overlap(self._what, self._operands, arrays, self.descriptor.elementwise)
        lds = [cabi.row_stride(a, None) for a in arrays]
        raw, sibling = self._raw, None
        if any(op.ld is not None and ld is not None and ld != op.ld for op, ld in zip(self._operands, lds)):
            sibling = self._sibling(lds)           # compiled for other row strides; held
            raw = sibling._raw                     # across the call (its code lives with it)
        raw(cabi.tensors([(cabi.data_address(a), arrayabi.default_ld(op) if ld is None else ld)
                          for op, a, ld in zip(self._operands, arrays, lds)]))   # cffi releases the GIL

    def _sibling(self, lds: list[int | None]) -> "Kernel":
        """The kernel for these row strides of the operands whose ld is compiled in;
        dispatch caches it."""
        fixed = [op.ld if ld is None else ld for op, ld in zip(self._operands, lds) if op.ld is not None]
        return self._dispatch(self.descriptor.with_lds(*fixed), self.target)

    # ---- inspection -----------------------------------------------------------------
    @property
    def address(self) -> int:
        """The C entry's address (0 for a target this machine cannot run). Reading it keeps
        the kernel's code for the rest of the process: a raw address has no lifetime."""
        if self._address:
            _pinned.add(self)
        return self._address

    @property
    def ir(self) -> str:
        """The kernel's LLVM IR (before optimisation)."""
        if self._ir is None:
            self._ir = generate_ir(self.descriptor, self.target, self.symbol)
        return self._ir

    @property
    def asm(self) -> str:
        """The target assembly of the optimised kernel."""
        if self._asm is None:
            opt = config.get().opt_level
            self._asm = compiler.emit_assembly(compiler.optimise(self.ir, self.target, opt), self.target, opt)
        return self._asm

    def reference(self, *inputs):
        """The numpy float64 reference of this kernel for the same inputs."""
        return self.descriptor.reference(*inputs)

    def __repr__(self) -> str:
        return f"<tpp.Kernel {self.descriptor} on {self.target.name}>"
