"""Vector IR helpers: typed splats, iota, remainder masks, (masked) loads and
stores with element conversion, and the math intrinsics the emitters use.

One `VecBuilder` works at a fixed lane count chosen by the caller from the
target's vector width; it never asks which ISA it is for.
"""
from __future__ import annotations

from llvmlite import ir

from .loops import I64
from .types import BFLOAT, DType

F32 = ir.FloatType()
F64 = ir.DoubleType()
I1 = ir.IntType(1)
I8 = ir.IntType(8)
I16 = ir.IntType(16)
I32 = ir.IntType(32)
PTR = ir.PointerType()


def _suffix(t: ir.Type) -> str:
    """LLVM's overloaded-intrinsic name suffix for a type (v16f32, f32, p0...)."""
    if isinstance(t, ir.VectorType):
        return f"v{t.count}{_suffix(t.element)}"
    if isinstance(t, ir.PointerType):
        return "p0"
    if t == F32:
        return "f32"
    if t == F64:
        return "f64"
    if t == BFLOAT:
        return "bf16"
    if isinstance(t, ir.IntType):
        return f"i{t.width}"
    raise TypeError(f"no intrinsic suffix for {t}")


def _like(t: ir.Type, elem: ir.Type) -> ir.Type:
    """`elem`, or a vector of it shaped like t."""
    return ir.VectorType(elem, t.count) if isinstance(t, ir.VectorType) else elem


def _splat_const(t: ir.Type, elem: ir.Type, value) -> ir.Constant:
    if isinstance(t, ir.VectorType):
        return ir.Constant(ir.VectorType(elem, t.count), [ir.Constant(elem, value)] * t.count)
    return ir.Constant(elem, value)


# bf16 values travel as their i16 bit patterns: LLVM legalises bfloat-typed
# operations on targets without AVX512-BF16 through __truncsfbf2 calls (which a JIT
# cannot link), so bfloat never appears in the IR of a memory access or conversion.

def bf16_to_f32(b: ir.IRBuilder, bits: ir.Value) -> ir.Value:
    """Widen bf16 bits (i16 scalar or vector) to float: they become the top half."""
    t = bits.type
    wide = b.zext(bits, _like(t, I32))
    return b.bitcast(b.shl(wide, _splat_const(t, I32, 16)), _like(t, F32))


def f32_to_bf16(b: ir.IRBuilder, value: ir.Value) -> ir.Value:
    """Round float to bf16 bits (i16), nearest-even, bit-equal to ml_dtypes: every NaN
    becomes the quiet NaN of its sign (0x7FC0 / 0xFFC0, payload dropped, as ml_dtypes
    does), subnormals are kept (vcvtneps2bf16 would flush them to zero)."""
    return b.trunc(f32_to_bf16_wide(b, value), _like(value.type, I16))


def f32_to_bf16_wide(b: ir.IRBuilder, value: ir.Value) -> ir.Value:
    """f32_to_bf16 before the narrowing: the bf16 bits in the low half of i32 lanes."""
    t = value.type
    c = lambda k: _splat_const(t, I32, k)   # noqa: E731
    bits = b.bitcast(value, _like(t, I32))
    lsb = b.and_(b.lshr(bits, c(16)), c(1))
    rounded = b.lshr(b.add(bits, b.add(c(0x7FFF), lsb)), c(16))
    quiet_nan = b.or_(b.and_(b.lshr(bits, c(16)), c(0x8000)), c(0x7FC0))
    return b.select(b.fcmp_unordered("uno", value, value), quiet_nan, rounded)


def _significand_bits(t: ir.Type) -> int:
    """Precision of a float type in bits, the implicit one included."""
    return {F32: 24, F64: 53}[t]


def declare(module: ir.Module, name: str, ret: ir.Type, args: list[ir.Type]) -> ir.Function:
    fn = module.globals.get(name)
    if fn is None:
        fn = ir.Function(module, ir.FunctionType(ret, args), name)
    return fn


def native_bf16(target) -> bool:
    """The target converts f32 to bf16 in one instruction (fptrunc to bfloat lowers to
    vcvtneps2bf16): its table has the bf16 dot product (AVX512-BF16 gives both)."""
    return any(op.startswith("bf16_dot.") for op, _ in target.intrinsics)


class VecBuilder:
    """Builds vector code of `lanes` elements on top of an IRBuilder."""

    def __init__(self, b: ir.IRBuilder, lanes: int, target=None):
        self.b = b
        self.lanes = lanes
        self.module = b.module
        self.target = target      # consulted for its intrinsic table only

    # ---- types and constants -------------------------------------------------
    def vty(self, elem: ir.Type) -> ir.VectorType:
        return ir.VectorType(elem, self.lanes)

    def const(self, value, elem: ir.Type = F32) -> ir.Constant:
        return ir.Constant(self.vty(elem), [ir.Constant(elem, value)] * self.lanes)

    def splat(self, scalar: ir.Value) -> ir.Value:
        vt = self.vty(scalar.type)
        v = self.b.insert_element(ir.Constant(vt, ir.Undefined), scalar, ir.Constant(I32, 0))
        return self.b.shuffle_vector(v, ir.Constant(vt, ir.Undefined),
                                     ir.Constant(ir.VectorType(I32, self.lanes), [0] * self.lanes))

    def iota(self, elem: ir.Type = I64) -> ir.Constant:
        return ir.Constant(self.vty(elem), [ir.Constant(elem, k) for k in range(self.lanes)])

    def tail_mask(self, remaining: ir.Value) -> ir.Value:
        """Lanes [0, remaining) on: the mask of a remainder vector (remaining < lanes).
        A constant count gives a constant mask (store() relies on seeing it)."""
        if isinstance(remaining, ir.Constant):
            return ir.Constant(self.vty(I1), [k < remaining.constant for k in range(self.lanes)])
        if self.target is not None and self.target.intrinsic("active_lane_mask"):
            # LangRef: llvm.get.active.lane.mask (lanes i with 0 + i < remaining): SVE's whilelo
            fn = declare(self.module, f"llvm.get.active.lane.mask.v{self.lanes}i1.i64", self.vty(I1), [I64, I64])
            return self.b.call(fn, [ir.Constant(I64, 0), remaining])
        return self.b.icmp_unsigned("<", self.iota(I64), self.splat(remaining))

    # ---- memory --------------------------------------------------------------
    def load_raw(self, ptr: ir.Value, elem: ir.Type, align: int, mask: ir.Value | None = None):
        """`lanes` elements of IR type `elem`; masked-off lanes read nothing (they are zero)."""
        vt = self.vty(elem)
        if mask is None:
            return self.b.load(ptr, typ=vt, align=align)
        # LangRef: llvm.masked.load (the i32 alignment operand is auto-upgraded by LLVM 22)
        fn = declare(self.module, f"llvm.masked.load.{_suffix(vt)}.p0", vt, [PTR, I32, self.vty(I1), vt])
        return self.b.call(fn, [ptr, ir.Constant(I32, align), mask, ir.Constant(vt, None)])

    def store_raw(self, value: ir.Value, ptr: ir.Value, align: int, mask: ir.Value | None = None,
                  streaming: bool = False):
        """Store a vector; `streaming` marks it non-temporal (the caller guarantees the
        pointer is aligned to the whole vector), bypassing the caches."""
        if mask is None:
            st = self.b.store(value, ptr, align=align)
            if streaming:
                st.set_metadata("nontemporal", self.module.add_metadata([ir.Constant(I32, 1)]))
            return
        vt = value.type
        fn = declare(self.module, f"llvm.masked.store.{_suffix(vt)}.p0",
                     ir.VoidType(), [vt, PTR, I32, self.vty(I1)])
        self.b.call(fn, [value, ptr, ir.Constant(I32, align), mask])

    def gather(self, base: ir.Value, index: ir.Value, dtype: DType, mask: ir.Value | None = None):
        """Elements base[index[l]] for an i64 index vector (f32/f64 only); masked-off
        lanes read nothing. LangRef: llvm.masked.gather."""
        vt = self.vty(dtype.storage)
        pvt = ir.VectorType(PTR, self.lanes)
        offsets = self.b.mul(index, self.splat(ir.Constant(I64, dtype.itemsize)))
        addrs = self.b.inttoptr(self.b.add(self.splat(self.b.ptrtoint(base, I64)), offsets), pvt)
        if mask is None:
            mask = ir.Constant(self.vty(I1), [1] * self.lanes)
        fn = declare(self.module, f"llvm.masked.gather.{_suffix(vt)}.v{self.lanes}p0", vt,
                     [pvt, I32, self.vty(I1), vt])
        return self.b.call(fn, [addrs, ir.Constant(I32, dtype.itemsize), mask, ir.Constant(vt, None)])

    def load(self, ptr: ir.Value, dtype: DType, mask: ir.Value | None = None, aligned: bool = False) -> ir.Value:
        """Load `lanes` elements of `dtype` from ptr, converted to dtype.compute; `aligned`:
        the caller guarantees ptr is aligned to the whole vector (one wide load on GPUs)."""
        align = self.lanes * dtype.itemsize if aligned else dtype.itemsize
        if dtype is DType.BF16:
            return bf16_to_f32(self.b, self.load_raw(ptr, I16, align, mask))
        return self.load_raw(ptr, dtype.storage, align, mask)

    def native_bf16(self) -> bool:
        return self.target is not None and native_bf16(self.target)

    def store(self, value: ir.Value, ptr: ir.Value, dtype: DType, mask: ir.Value | None = None,
              streaming: bool = False, aligned: bool = False, native: bool = False) -> None:
        """Store a dtype.compute vector (or an i1 vector for BOOL) as dtype. native: bf16
        through the target's conversion instruction where it has one (nearest-even as
        f32_to_bf16, but subnormal results flushed to zero and a NaN's top payload bits
        kept: a GEMM's outputs, where it is one instruction instead of ten)."""
        if dtype is DType.BF16 and native and not isinstance(mask, ir.Constant) and self.native_bf16():
            bits = self.b.bitcast(self.b.fptrunc(value, self.vty(DType.BF16.storage)), self.vty(I16))
            self.store_raw(bits, ptr, dtype.itemsize, mask)
            return
        if dtype is DType.BF16:
            wide = f32_to_bf16_wide(self.b, value)
            if isinstance(mask, ir.Constant):
                # LLVM 22's x86 backend turns a vector truncate feeding a constant-mask
                # store into 4-byte stores, past the end of the array. Store the lanes
                # singly, narrowing each scalar (that pattern compiles to 2-byte stores).
                for k, on in enumerate(mask.constant):
                    if on.constant:
                        lane = self.b.trunc(self.b.extract_element(wide, ir.Constant(I32, k)), I16)
                        self.b.store(lane, self.b.gep(ptr, [ir.Constant(I64, k)], source_etype=I16),
                                     align=2)
                return
            value = self.b.trunc(wide, self.vty(I16))
        elif dtype is DType.BOOL:
            value = self.b.zext(value, self.vty(dtype.storage))
        align = self.lanes * dtype.itemsize if streaming or aligned else dtype.itemsize
        self.store_raw(value, ptr, align, mask, streaming and mask is None)

    def store_fence(self) -> bool:
        """Order earlier streaming stores before later stores, where the target has
        streaming stores at all (its table lists a fence); False if it has none."""
        spec = self.target.intrinsic("store_fence") if self.target else None
        if spec is None:
            return False
        self.b.call(declare(self.module, spec.partition("|")[0], ir.VoidType(), []), [])
        return True

    # ---- intrinsics (LangRef: Standard C/C++ Library Intrinsics) --------------
    def intrinsic(self, name: str, *args: ir.Value) -> ir.Value:
        t = args[0].type
        fn = declare(self.module, f"llvm.{name}.{_suffix(t)}", t, [a.type for a in args])
        return self.b.call(fn, list(args))

    def fma(self, a, b, c):
        return self.intrinsic("fma", a, b, c)

    def sqrt(self, a):
        return self.intrinsic("sqrt", a)

    def fabs(self, a):
        return self.intrinsic("fabs", a)

    def rint(self, a):
        return self.intrinsic("rint", a)

    def maximum(self, a, b):
        """NaN-propagating max (numpy's np.maximum)."""
        return self.intrinsic("maximum", a, b)

    def minimum(self, a, b):
        return self.intrinsic("minimum", a, b)

    def copysign(self, mag, sign):
        return self.intrinsic("copysign", mag, sign)

    def reduce(self, op: str, v: ir.Value) -> ir.Value:
        """Horizontal reduction: op in fmax/fmin (NaN-propagating: fmaximum/fminimum) or add."""
        et = v.type.element
        if op == "fadd":
            fn = declare(self.module, f"llvm.vector.reduce.fadd.{_suffix(v.type)}", et, [et, v.type])
            call = self.b.call(fn, [ir.Constant(et, -0.0), v])
            call.fastmath.add("reassoc")
            return call
        fn = declare(self.module, f"llvm.vector.reduce.{op}.{_suffix(v.type)}", et, [v.type])
        return self.b.call(fn, [v])

    # ---- target instructions, looked up in the target's intrinsic table ----------
    def prefetch(self, ptr: ir.Value) -> None:
        """A read prefetch into L1 (LangRef: llvm.prefetch; rw=0, locality=3, data cache)."""
        fn = declare(self.module, "llvm.prefetch.p0", ir.VoidType(), [PTR, I32, I32, I32])
        self.b.call(fn, [ptr, ir.Constant(I32, 0), ir.Constant(I32, 3), ir.Constant(I32, 1)])

    def has_op(self, op: str, t: ir.Type) -> bool:
        """Whether the target's table has `op` for values of type t."""
        return bool(self.target and self.target.intrinsic(f"{op}.{_suffix(t)}"))

    def target_op(self, op: str, *args: ir.Value) -> ir.Value | None:
        """The target's instruction for `op` at this vector type, or None if it has none."""
        spec = self.target.intrinsic(f"{op}.{_suffix(args[0].type)}") if self.target else None
        if spec is None:
            return None
        name, convention = spec.split("|")[:2]
        t = args[0].type
        extra = {
            "plain": [],
            "passthru_mask": [ir.Constant(t, None), ir.Constant(ir.IntType(self.lanes), -1)],
            "passthru_mask_round": [ir.Constant(t, None), ir.Constant(ir.IntType(self.lanes), -1),
                                    ir.Constant(I32, 4)],        # 4: current rounding mode
        }[convention]
        all_args = list(args) + extra
        fn = declare(self.module, name, t, [a.type for a in all_args])
        return self.b.call(fn, all_args)

    def estimate_bits(self, op: str, t: ir.Type) -> int:
        """How many correct bits the target's estimate instruction for `op` gives at type
        t (the third field of its table entry: "intrinsic|convention|bits"); 0: none."""
        spec = self.target.intrinsic(f"{op}.{_suffix(t)}") if self.target else None
        fields = spec.split("|") if spec else []
        return int(fields[2]) if len(fields) > 2 else 0

    def recip(self, d: ir.Value) -> ir.Value:
        """1/d to about 1 ulp: the target's reciprocal estimate and as many Newton steps
        as its precision needs (a vector divide costs 10-16 cycles; an estimate and a
        step ~3; exact IEEE division where the target has no estimate). Finite d only.

        Each step squares the relative error. The result must be within half an ulp of
        the value below a power of two (2^-(p+1) for p significand bits) for the
        reciprocal of a power of two to come out exact (sigmoid(0) = 0.5, 1/1 = 1):
        p + 2 bits, 26 for f32. AVX-512's vrcp14ps (14 bits) gets there in one step;
        AVX2's vrcpps (11 bits: its error bound is 1.5 * 2^-12) needs two (after one,
        1/1 came out 0.99999994)."""
        one = self.const(1.0, d.type.element)
        bits = self.estimate_bits("rcp", d.type)
        if not bits:
            return self.b.fdiv(one, d)
        r = self.target_op("rcp", d)
        needed = _significand_bits(d.type.element) + 2
        while bits < needed:
            r = self.fma(r, self.fma(self.b.fneg(d), r, one), r)    # r + r (1 - d r)
            bits *= 2
        return r

    def div(self, a: ir.Value, d: ir.Value) -> ir.Value:
        """a/d to about 2 ulp for finite d (see recip); exact IEEE division where the
        target has no estimate."""
        if not self.estimate_bits("rcp", d.type):
            return self.b.fdiv(a, d)
        return self.b.fmul(a, self.recip(d))

    def scalef(self, p: ir.Value, n: ir.Value) -> ir.Value | None:
        """p * 2**n for float n (integral), or None where the target has no such instruction."""
        return self.target_op("scalef", p, n)

    def poly(self, x, coeffs: list[float], elem: ir.Type = F32):
        """Horner evaluation of sum(coeffs[k] * x**k) with FMAs."""
        acc = self.const(coeffs[-1], elem)
        for c in reversed(coeffs[:-1]):
            acc = self.fma(acc, x, self.const(c, elem))
        return acc
