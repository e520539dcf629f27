"""Kernel objects: a compiled primitive bound to its descriptor.

Call it like a function: `k(x)` allocates the output, `k(x, out=y)` writes y
and returns it. The hot path is one cffi call into the native wrapper (see
arrayabi.py), which checks the arguments itself; only a refused call runs the
Python checks, which either raise a clear error or convert the arguments
(Python numbers, ndarray subclasses) and call again.
"""
from __future__ import annotations

import cffi
import numpy as np

from . import arrayabi, checks
from .dtypes import to_numpy
from .errors import TargetError

_ffi = cffi.FFI()


class Kernel:
    """A JIT-compiled TPP. `address` is the C entry `void f(const tpp_tensor *args)`."""

    def __init__(self, descriptor, target, symbol: str, addresses: dict[str, int] | None,
                 source_ir: str | None = None):
        self.descriptor = descriptor
        self.target = target
        self.symbol = symbol
        self._ir = source_ir
        self._asm = None
        ops = descriptor.operands()
        self._operands = ops
        self._np = [to_numpy(op.dtype) for op in ops]
        self._nin = sum(not op.output for op in ops)
        self._outs = [(op, dt) for op, dt in zip(ops, self._np) if op.output]
        self._what = f"tpp {descriptor.kind}"
        self.address = (addresses or {}).get(symbol, 0)
        self._fast = None
        self._table = _ffi.new("int64_t[]", arrayabi.table_values(ops, self._np))
        if addresses and symbol + "_py" in addresses:
            sig = "int32_t(*)(int64_t *" + ", intptr_t" * len(ops) + ")"
            self._fast = _ffi.cast(sig, addresses[symbol + "_py"])
        self._single = len(self._outs) == 1
        out_op, out_dt = self._outs[0]
        self._out_shape = arrayabi.accepted_shapes(out_op)[0]
        self._out_dtype = out_dt

    # ---- calling ------------------------------------------------------------------
    def __call__(self, *args, out=None):
        fast = self._fast
        if fast is None:
            self._no_fast_path()
        if len(args) != self._nin:
            raise TypeError(f"{self._what}: expected {self._nin} input(s), got {len(args)}")
        if out is None:
            out = self._allocate()
        if self._single:
            if self._nin == 1:
                rc = fast(self._table, id(args[0]), id(out))
            elif self._nin == 2:
                rc = fast(self._table, id(args[0]), id(args[1]), id(out))
            else:
                rc = fast(self._table, *[id(a) for a in args], id(out))
        else:
            if not isinstance(out, tuple) or len(out) != len(self._outs):
                raise TypeError(f"{self._what}: out must be a tuple of {len(self._outs)} arrays")
            rc = fast(self._table, *[id(a) for a in args], *[id(o) for o in out])
        if rc:
            self._checked_call(args, out)
        return out

    def _allocate(self):
        if self._single:
            return np.empty(self._out_shape, self._out_dtype)
        return tuple(np.empty(arrayabi.accepted_shapes(op)[0], dt) for op, dt in self._outs)

    def _checked_call(self, args, out) -> None:
        outs = (out,) if self._single else tuple(out)
        values = list(args) + list(outs)
        arrays = [checks.as_array(self._what, op, val, dt)
                  for op, val, dt in zip(self._operands, values, self._np)]
        checks.check_overlap(self._what, self._operands, arrays, self.descriptor.elementwise)
        rc = self._fast(self._table, *[id(a) for a in arrays])
        if rc:
            raise RuntimeError(f"{self._what}: native argument check refused a call the Python "
                               f"checks accept (code {rc}); please report this")

    def _no_fast_path(self):
        if not self.target.runs_on_host:
            raise TargetError(f"{self._what}: kernel was built for target {self.target.name}, "
                              f"which this machine cannot run; read .asm or build it ahead of time")
        raise RuntimeError(f"{self._what}: this Python's numpy array layout was not recognised, "
                           f"so kernels cannot be called from it")

    # ---- inspection -----------------------------------------------------------------
    @property
    def ir(self) -> str:
        """The kernel's LLVM IR (before optimisation)."""
        if self._ir is None:
            from .dispatch import generate_ir
            self._ir = generate_ir(self.descriptor, self.target, self.symbol)
        return self._ir

    @property
    def asm(self) -> str:
        """The target assembly of the optimised kernel."""
        if self._asm is None:
            from .jit import compiler
            from . import config
            opt = config.get().opt_level
            self._asm = compiler.emit_assembly(compiler.optimise(self.ir, self.target, opt), self.target, opt)
        return self._asm

    def reference(self, *inputs):
        """The numpy float64 reference of this kernel for the same inputs."""
        return self.descriptor.reference(*inputs)

    def __repr__(self) -> str:
        return f"<tpp.Kernel {self.descriptor} on {self.target.name}>"
