"""The Python fast path: one JIT-compiled CPython builtin per operand count.

A kernel call `k(x, out=y)` goes straight into native code as a METH_FASTCALL
builtin whose `self` is a small int64 table describing the kernel: the native
code checks each argument (exact numpy.ndarray, dtype, shape, strides, flags,
overlap), fills the kernel's tpp_tensor arguments, calls the kernel (releasing
the GIL for large tiles) and returns the last argument. If anything is off it
returns the table instead, and Python runs the checks in checks.py, which
raise a precise error or convert the arguments. Nothing here is per kernel, so
kernels compile as the bare kernel function.

It reads numpy's PyArrayObject fields, whose offsets are probed once at import
against a real array (`LAYOUT`); where the probe fails (another Python ABI)
`LAYOUT` is None and calls take the checked Python path instead.
"""
from __future__ import annotations

import ctypes
from dataclasses import dataclass

import numpy as np
from llvmlite import ir
from llvmlite.ir.types import _TypedPointerType

from .jit.loops import I64, i64
from .jit.vec import I32, PTR, declare
from .kernels.operands import TENSOR, Bcast, Operand

NPY_ALIGNED = 0x0100
NPY_WRITEABLE = 0x0400
METH_FASTCALL = 0x0080


@dataclass(frozen=True)
class Layout:
    ob_type: int
    data: int
    nd: int
    dims: int
    strides: int
    descr: int
    flags: int


def _probe() -> Layout | None:
    guess = Layout(ob_type=8, data=16, nd=24, dims=32, strides=40, descr=56, flags=64)
    try:
        a = np.zeros((3, 7), np.float32)[:, 1:4]
        base = id(a)

        def word(off):
            return ctypes.c_ssize_t.from_address(base + off).value

        dims, strides = word(guess.dims), word(guess.strides)
        ok = (word(guess.ob_type) == id(np.ndarray)
              and word(guess.data) == a.__array_interface__["data"][0]
              and ctypes.c_int.from_address(base + guess.nd).value == 2
              and (ctypes.c_ssize_t * 2).from_address(dims)[:] == [3, 3]
              and (ctypes.c_ssize_t * 2).from_address(strides)[:] == [28, 4]
              and word(guess.descr) == id(a.dtype)
              and ctypes.c_int.from_address(base + guess.flags).value == a.flags.num)
        ok = ok and hasattr(ctypes, "pythonapi") and hasattr(ctypes.pythonapi, "PyCFunction_NewEx")
    except Exception:   # any surprise means: do not trust the guess
        return None
    return guess if ok else None


LAYOUT = _probe()


# ---- what callers may pass ---------------------------------------------------------------
def accepted_shapes(op: Operand) -> list[tuple[int, ...]]:
    """The array shapes a caller may pass for an operand (at most two)."""
    if op.bcast is Bcast.ROW:
        return [(1, op.cols), (op.cols,)]
    if op.bcast is Bcast.SCALAR:
        return [()]
    if op.bcast is Bcast.VEC:
        return [(op.cols,)]
    return [(op.rows, op.cols)]


def min_row_stride(op: Operand) -> int:
    """Smallest row stride in elements: rows of an operand never overlap."""
    return op.cols


def default_ld(op: Operand) -> int:
    """The ld passed when the array has a single row (its row stride is meaningless)."""
    return 1 if op.bcast is Bcast.COL else op.cols


def same_tile(a: Operand, b: Operand) -> bool:
    """Two operands an elementwise kernel may run on in place of each other."""
    return (a.bcast is Bcast.FULL and b.bcast is Bcast.FULL and a.rows == b.rows
            and a.cols == b.cols and a.dtype.itemsize == b.dtype.itemsize and not b.output)


# ---- the table ---------------------------------------------------------------------------
# The table: a header, then FIELDS int64 per operand, in the order table() writes them.
H_NDARRAY, H_KERNEL, H_RELEASE_GIL, H_ELEMENTWISE = range(4)
HEADER = 4
(F_DESCR, F_ITEMSIZE, F_OUTPUT, F_ROWS, F_COLS, F_SINGLE_ROW_LD, F_MIN_ROW_STRIDE, F_FULL,
 F_SHAPE_A, _, _, F_SHAPE_B, _, _, F_REQUIRED_LD) = range(15)      # a shape is (nd, d0, d1)
FIELDS = 15


def table(operands: list[Operand], numpy_dtypes: list[np.dtype], kernel_address: int,
          elementwise: bool) -> np.ndarray:
    """The int64 table the native entry reads (it is the builtin's `self`)."""
    work = sum(op.rows * op.cols for op in operands)
    rows = [id(np.ndarray), kernel_address, int(work >= 1 << 16), int(elementwise)]
    for op, dt in zip(operands, numpy_dtypes):
        shapes = accepted_shapes(op) + [None]
        alt = []
        for shape in shapes[:2]:
            if shape is None:
                alt += [-1, 0, 0]
            else:
                alt += [len(shape)] + list(shape) + [0] * (2 - len(shape))
        rows += [id(dt), dt.itemsize, int(op.output), op.rows, op.cols, default_ld(op),
                 min_row_stride(op), int(op.bcast is Bcast.FULL)] + alt + [-1 if op.ld is None else op.ld]
    return np.array(rows, dtype=np.int64)


# ---- the native entry ----------------------------------------------------------------------
def emit_entry(module: ir.Module, count: int, layout: Layout, name: str) -> str:
    """`PyObject *name(PyObject *table, PyObject *const *args, Py_ssize_t n)` for `count` operands."""
    fn = ir.Function(module, ir.FunctionType(PTR, [PTR, PTR, I64]), name)
    self_obj, argv, nargs = fn.args
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    fail_block = fn.append_basic_block("refuse")
    incref = declare(module, "Py_IncRef", ir.VoidType(), [PTR])

    def field(ptr, off, typ):
        return b.load(b.gep(ptr, [i64(off)], source_etype=ir.IntType(8)), typ=typ)

    def at(ptr, index, typ=I64):
        return b.load(b.gep(ptr, [index if isinstance(index, ir.Value) else i64(index)],
                            source_etype=typ), typ=typ)

    def refuse_if(cond):
        ok = fn.append_basic_block("ok")
        b.cbranch(cond, fail_block, ok)
        b.position_at_end(ok)

    tab = field(self_obj, layout.data, PTR)
    refuse_if(b.icmp_signed("!=", nargs, i64(count)))
    args = b.inttoptr(b.ptrtoint(b.alloca(ir.ArrayType(TENSOR, count)), I64), PTR)
    extents = []
    for k in range(count):
        base = HEADER + k * FIELDS
        t = lambda f: at(tab, base + f)   # noqa: E731 - table field f of operand k
        obj = at(argv, k, PTR)
        refuse_if(b.icmp_unsigned("!=", b.ptrtoint(field(obj, layout.ob_type, PTR), I64), at(tab, H_NDARRAY)))
        refuse_if(b.icmp_unsigned("!=", b.ptrtoint(field(obj, layout.descr, PTR), I64), t(F_DESCR)))
        need = b.select(b.icmp_signed("!=", t(F_OUTPUT), i64(0)), ir.Constant(I32, NPY_ALIGNED | NPY_WRITEABLE),
                        ir.Constant(I32, NPY_ALIGNED))
        refuse_if(b.icmp_unsigned("!=", b.and_(field(obj, layout.flags, I32), need), need))
        ld = _check_shape(b, fn, obj, field, at, t, layout, refuse_if)
        data = field(obj, layout.data, PTR)
        for f, value in enumerate((data, ld)):
            b.store(value, b.gep(args, [i64(k), ir.Constant(I32, f)], source_etype=TENSOR))
        lo = b.ptrtoint(data, I64)
        elems = b.add(b.mul(b.sub(t(F_ROWS), i64(1)), ld), t(F_COLS))
        extents.append((lo, b.add(lo, b.mul(elems, t(F_ITEMSIZE))), ld))

    _check_overlap(b, count, extents, at, tab, refuse_if)
    # an indirect callee: llvmlite's call() wants a pointer that knows its function type
    kernel = b.inttoptr(at(tab, H_KERNEL), _TypedPointerType(ir.FunctionType(ir.VoidType(), [PTR])))
    release = b.icmp_signed("!=", at(tab, H_RELEASE_GIL), i64(0))
    with b.if_else(release) as (big, small):
        with big:
            save = declare(module, "PyEval_SaveThread", PTR, [])
            restore = declare(module, "PyEval_RestoreThread", ir.VoidType(), [PTR])
            state = b.call(save, [])
            b.call(kernel, [args])
            b.call(restore, [state])
        with small:
            b.call(kernel, [args])
    last = at(argv, count - 1, PTR)
    b.call(incref, [last])
    b.ret(last)

    b.position_at_end(fail_block)
    b.call(incref, [self_obj])
    b.ret(self_obj)
    return name


def _check_shape(b, fn, obj, field, at, t, layout: Layout, refuse_if) -> ir.Value:
    """Accept either of the operand's shapes; returns its ld in elements."""
    nd = b.sext(field(obj, layout.nd, I32), I64)
    dims = field(obj, layout.dims, PTR)
    strides = field(obj, layout.strides, PTR)
    ok = ir.Constant(ir.IntType(1), 0)
    # dims are read only as far as nd goes: a 0-d array may have no dims array, so
    # absent dims read the table object's first word instead (always readable).
    readable = fn.args[0]
    for alt in (F_SHAPE_A, F_SHAPE_B):
        match = b.icmp_signed("==", nd, t(alt))
        for i in range(2):
            has = b.icmp_signed(">", nd, i64(i))
            dim = at(b.select(has, dims, readable), b.select(has, i64(i), i64(0)))
            match = b.and_(match, b.or_(b.not_(has), b.icmp_signed("==", dim, t(alt + 1 + i))))
        ok = b.or_(ok, match)
    refuse_if(b.not_(ok))
    isz = t(F_ITEMSIZE)
    # unit element stride where the last dimension has more than one element
    last = b.sub(nd, i64(1))
    has_elems = b.icmp_signed(">", nd, i64(0))
    last_i = b.select(has_elems, last, i64(0))
    with b.if_then(has_elems):
        wide = b.icmp_signed(">", at(dims, last_i), i64(1))
        refuse_if(b.and_(wide, b.icmp_signed("!=", at(strides, last_i), isz)))
    # a row stride when there are several rows
    two = b.icmp_signed("==", nd, i64(2))
    single_row_ld = t(F_SINGLE_ROW_LD)
    block_pre = b.block
    rows_block = fn.append_basic_block("rows")
    done = fn.append_basic_block("ld")
    b.cbranch(two, rows_block, done)
    b.position_at_end(rows_block)
    several = b.icmp_signed(">", at(dims, 0), i64(1))
    s0 = at(strides, 0)
    bad = b.or_(b.icmp_signed("<", s0, b.mul(t(F_MIN_ROW_STRIDE), isz)), b.icmp_signed("!=", b.srem(s0, isz), i64(0)))
    refuse_if(b.and_(several, bad))
    ld_rows = b.select(several, b.sdiv(s0, isz), single_row_ld)
    required = t(F_REQUIRED_LD)       # a kernel compiled for one row stride takes no other
    refuse_if(b.and_(several, b.and_(b.icmp_signed(">=", required, i64(0)),
                                     b.icmp_signed("!=", ld_rows, required))))
    block_rows = b.block
    b.branch(done)
    b.position_at_end(done)
    ld = b.phi(I64)
    ld.add_incoming(single_row_ld, block_pre)
    ld.add_incoming(ld_rows, block_rows)
    return ld


def _check_overlap(b, count, extents, at, tab, refuse_if) -> None:
    """An output may overlap nothing, except an input it is exactly (elementwise kernels)."""
    elementwise = b.icmp_signed("!=", at(tab, H_ELEMENTWISE), i64(0))

    def fld(k: int, f: int) -> ir.Value:
        return at(tab, HEADER + k * FIELDS + f)

    for o in range(count):
        is_out = b.icmp_signed("!=", fld(o, F_OUTPUT), i64(0))
        o_lo, o_hi, o_ld = extents[o]
        for p in range(count):
            if p == o:
                continue
            p_lo, p_hi, p_ld = extents[p]
            p_out = b.icmp_signed("!=", fld(p, F_OUTPUT), i64(0))
            if p < o:   # a pair of outputs is checked once
                p_relevant = b.not_(p_out)
            else:
                p_relevant = ir.Constant(ir.IntType(1), 1)
            overlap = b.and_(b.icmp_unsigned("<", o_lo, p_hi), b.icmp_unsigned("<", p_lo, o_hi))
            same = b.and_(b.icmp_unsigned("==", o_lo, p_lo), b.icmp_signed("==", o_ld, p_ld))
            same_shape = b.and_(b.icmp_signed("==", fld(o, F_ROWS), fld(p, F_ROWS)),
                                b.icmp_signed("==", fld(o, F_COLS), fld(p, F_COLS)))
            full = b.and_(b.icmp_signed("!=", fld(o, F_FULL), i64(0)),
                          b.icmp_signed("!=", fld(p, F_FULL), i64(0)))
            same_size = b.icmp_signed("==", fld(o, F_ITEMSIZE), fld(p, F_ITEMSIZE))
            alias_ok = b.and_(b.and_(elementwise, b.not_(p_out)), b.and_(b.and_(same, same_shape),
                                                                           b.and_(full, same_size)))
            refuse_if(b.and_(b.and_(is_out, p_relevant), b.and_(overlap, b.not_(alias_ok))))


# ---- turning the entry into a Python builtin ---------------------------------------------
class _MethodDef(ctypes.Structure):
    _fields_ = [("ml_name", ctypes.c_char_p), ("ml_meth", ctypes.c_void_p),
                ("ml_flags", ctypes.c_int), ("ml_doc", ctypes.c_char_p)]


def make_builtin(address: int, self_table: np.ndarray, name: bytes = b"tpp_kernel"):
    """A builtin function calling the native entry with `self_table` as self.
    Returns (builtin, methoddef); keep the methoddef alive as long as the builtin."""
    new = ctypes.pythonapi.PyCFunction_NewEx
    new.restype = ctypes.py_object
    new.argtypes = [ctypes.c_void_p, ctypes.py_object, ctypes.c_void_p]
    md = _MethodDef(name, address, METH_FASTCALL, None)
    return new(ctypes.addressof(md), self_table, None), md
