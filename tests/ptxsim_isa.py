"""The instructions of tests/ptxsim.py's PTX interpreter: per-thread ones (integer and
float arithmetic, compares, conversions, loads, stores, cp.async) as handlers
`op(block, thread, instruction)`, and the warp-wide ldmatrix and mma.sync as the
PTX ISA defines their fragments. Registers hold raw bits; each handler reads its
operands at the width its type suffix gives."""
from __future__ import annotations

import re
import struct

import numpy as np

WIDTH = {"b8": 8, "u8": 8, "s8": 8, "b16": 16, "u16": 16, "s16": 16, "f16": 16, "bf16": 16,
         "b32": 32, "u32": 32, "s32": 32, "f32": 32, "b64": 64, "u64": 64, "s64": 64, "f64": 64, "pred": 1}


def _mask(bits: int) -> int:
    return (1 << bits) - 1


def _signed(value: int, bits: int) -> int:
    value &= _mask(bits)
    return value - (1 << bits) if value >> (bits - 1) else value


def f32(bits: int) -> np.float32:
    return np.frombuffer(struct.pack("<I", bits & 0xFFFFFFFF), np.float32)[0]


def f32_bits(value) -> int:
    return struct.unpack("<I", np.float32(value).tobytes())[0]


def f64(bits: int) -> np.float64:
    return np.frombuffer(struct.pack("<Q", bits & _mask(64)), np.float64)[0]


def f64_bits(value) -> int:
    return struct.unpack("<Q", np.float64(value).tobytes())[0]


def fload(bits: int, ty: str):
    return f64(bits) if ty == "f64" else f32(bits)


def fstore(value, ty: str) -> int:
    return f64_bits(value) if ty == "f64" else f32_bits(np.float32(value))


def bf16_to_f32(bits: int) -> np.float32:
    return f32((bits & 0xFFFF) << 16)


def _vector(text: str) -> list[str]:
    return [x.strip() for x in text.strip("{}").split(",")]



# ---- per-thread instructions ---------------------------------------------------------------
def _type(ins) -> str:
    for part in reversed(ins.op):
        if part in WIDTH:
            return part
    raise NotImplementedError(f"no type in {ins.line.strip()!r}")


def _int_op(fn):
    def run(blk, t, ins):
        ty = _type(ins)
        bits = WIDTH[ty]
        if ty == "pred":
            vals = [bool(t.regs.get(a, 0)) if a.startswith("%") else bool(int(a)) for a in ins.args[1:]]
            t.regs[ins.args[0]] = int(fn(*vals, bits=1, signed=False)) & 1
            return
        if ty.startswith("f"):
            vals = [fload(t.value(a, bits), ty) for a in ins.args[1:]]
            t.set(ins.args[0], bits, fstore(_FLOAT[ins.op[0]](*vals, ty=ty), ty))
            return
        signed = ty.startswith("s")
        vals = [t.value(a, bits) for a in ins.args[1:]]
        if signed:
            vals = [_signed(v, bits) for v in vals]
        t.set(ins.args[0], bits, fn(*vals, bits=bits, signed=signed))
    return run


def _fma(a, b, c, ty):
    if ty == "f64":       # exact product and sum, one rounding (fractions are exact)
        from fractions import Fraction
        return float(Fraction(float(a)) * Fraction(float(b)) + Fraction(float(c)))
    return np.float32(np.float64(a) * np.float64(b) + np.float64(c))   # f32 product exact in f64


_FLOAT = {"add": lambda a, b, ty: a + b, "sub": lambda a, b, ty: a - b, "mul": lambda a, b, ty: a * b,
          "max": lambda a, b, ty: max(a, b), "min": lambda a, b, ty: min(a, b), "neg": lambda a, ty: -a,
          "abs": lambda a, ty: abs(a), "fma": _fma, "div": lambda a, b, ty: a / b}


def _mul(ins, t, blk):
    ty = _type(ins)
    bits = WIDTH[ty]
    signed = ty.startswith("s")
    a, b_ = (t.value(x, bits) for x in ins.args[1:3])
    if signed:
        a, b_ = _signed(a, bits), _signed(b_, bits)
    product = a * b_
    mode = ins.op[1] if len(ins.op) > 2 else "lo"
    if mode == "wide":
        return product, 2 * bits
    if mode == "hi":
        return product >> bits, bits
    return product, bits


def _op_mul(blk, t, ins):
    if _type(ins).startswith("f"):
        return _int_op(None)(blk, t, ins)
    product, bits = _mul(ins, t, blk)
    t.set(ins.args[0], bits, product)


def _op_mad(blk, t, ins):
    ty = _type(ins)
    if ty.startswith("f"):
        a, b_, c = (fload(t.value(x, WIDTH[ty]), ty) for x in ins.args[1:4])
        t.set(ins.args[0], WIDTH[ty], fstore(_fma(a, b_, c, ty), ty))
        return
    product, bits = _mul(ins, t, blk)
    c = t.value(ins.args[3], bits)
    t.set(ins.args[0], bits, product + c)


def _op_setp(blk, t, ins):
    cmp, ty = ins.op[1], _type(ins)
    bits = WIDTH[ty]
    a, b_ = (t.value(x, bits) for x in ins.args[1:3])
    if ty.startswith("f"):
        a, b_ = fload(a, ty), fload(b_, ty)
        unordered = bool(np.isnan(a) or np.isnan(b_))
        if cmp in ("num", "nan"):
            t.regs[ins.args[0]] = int(unordered == (cmp == "nan"))
            return
        if unordered:                 # ordered compares fail on NaN, the "u" forms hold
            t.regs[ins.args[0]] = int(cmp.endswith("u"))
            return
        cmp = cmp[:-1] if cmp.endswith("u") else cmp
    elif ty.startswith("s"):
        a, b_ = _signed(a, bits), _signed(b_, bits)
    ops = {"eq": a == b_, "ne": a != b_, "lt": a < b_, "le": a <= b_, "gt": a > b_, "ge": a >= b_,
           "lo": a < b_, "ls": a <= b_, "hi": a > b_, "hs": a >= b_}
    if cmp not in ops:
        raise NotImplementedError(ins.line)
    t.regs[ins.args[0]] = int(ops[cmp])


def _op_selp(blk, t, ins):
    bits = WIDTH[_type(ins)]
    a, b_ = (t.value(x, bits) for x in ins.args[1:3])
    t.set(ins.args[0], bits, a if t.regs.get(ins.args[3], 0) else b_)


def _op_mov(blk, t, ins):
    bits = WIDTH[_type(ins)]
    dst, src = ins.args
    if dst.startswith("{"):                       # unpack a wider register into pieces
        parts = _vector(dst)
        piece = bits // len(parts)
        value = t.value(src, bits)
        for k, p in enumerate(parts):
            t.set(p, piece, value >> (k * piece))
        return
    if src.startswith("{"):                       # pack pieces, first in the low bits
        parts = _vector(src)
        piece = bits // len(parts)
        value = 0
        for k, p in enumerate(parts):
            value |= t.value(p, piece) << (k * piece)
        t.set(dst, bits, value)
        return
    t.set(dst, bits, t.value(src, bits))


_ROUND = {"rni": np.rint, "rzi": np.trunc, "rmi": np.floor, "rpi": np.ceil}


def _op_cvt(blk, t, ins):
    types = [p for p in ins.op if p in WIDTH]
    dst_t, src_t = types[0], types[1]
    value = t.value(ins.args[1], WIDTH[src_t])
    mode = next((p for p in ins.op if p in ("rn", "rz", "rm", "rp", "rni", "rzi", "rmi", "rpi")), None)
    if src_t == "f32" and dst_t == "bf16":
        t.set(ins.args[0], 16, _round_bf16(f32(value)))
        return
    if src_t == "bf16" and dst_t == "f32":
        t.set(ins.args[0], 32, (value & 0xFFFF) << 16)
        return
    if src_t in ("f32", "f64") and dst_t in ("f32", "f64"):
        x = fload(value, src_t)
        if mode in _ROUND:
            x = _ROUND[mode](x)
        t.set(ins.args[0], WIDTH[dst_t], fstore(x, dst_t))
        return
    if dst_t in ("f32", "f64"):                  # integer -> float, rounded to nearest
        x = _signed(value, WIDTH[src_t]) if src_t.startswith("s") else value
        t.set(ins.args[0], WIDTH[dst_t], fstore(np.float64(x) if dst_t == "f64" else np.float32(x), dst_t))
        return
    if src_t in ("f32", "f64"):                  # float -> integer, saturating, NaN -> 0
        x = fload(value, src_t)
        x = 0 if np.isnan(x) else _ROUND.get(mode, np.trunc)(x)
        bits = WIDTH[dst_t]
        lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if dst_t.startswith("s") else (0, (1 << bits) - 1)
        t.set(ins.args[0], bits, int(min(max(x, lo), hi)))
        return
    if src_t.startswith("s"):
        value = _signed(value, WIDTH[src_t])
    t.set(ins.args[0], WIDTH[dst_t], value)


def _op_prmt(blk, t, ins):
    """prmt.b32 d, a, b, c (default mode): result byte i is byte (c >> 4i) & 7 of the
    pool b:a (a's bytes 0-3, b's 4-7), or that byte's sign replicated if bit 3 is set."""
    if len(ins.op) != 2:
        raise NotImplementedError(ins.line)
    a, b_, c = (t.value(x, 32) for x in ins.args[1:4])
    pool = a | (b_ << 32)
    out = 0
    for i in range(4):
        sel = (c >> (4 * i)) & 0xF
        byte = (pool >> (8 * (sel & 7))) & 0xFF
        if sel & 8:
            byte = 0xFF if byte & 0x80 else 0
        out |= byte << (8 * i)
    t.set(ins.args[0], 32, out)


def _op_shf(blk, t, ins):
    """shf.{l,r}.{wrap,clamp}.b32 d, a, b, c: funnel shift of the 64-bit b:a."""
    a, b_, c = (t.value(x, 32) for x in ins.args[1:4])
    c = c & 31 if "wrap" in ins.op else min(c, 32)
    pair = a | (b_ << 32)
    t.set(ins.args[0], 32, (pair << c) >> 32 if ins.op[1] == "l" else pair >> c)


def _float_unary(fn):
    def run(blk, t, ins):
        ty = _type(ins)
        x = fload(t.value(ins.args[1], WIDTH[ty]), ty)
        with np.errstate(all="ignore"):
            y = fn(np.float64(x)) if ty == "f64" else fn(np.float32(x))
        t.set(ins.args[0], WIDTH[ty], fstore(y, ty))
    return run


def _round_bf16(x) -> int:
    bits = f32_bits(x)
    if np.isnan(x):
        return (bits >> 16) | 0x40
    return ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16) & 0xFFFF


def _op_bfe(blk, t, ins):
    ty = _type(ins)
    bits = WIDTH[ty]
    a = t.value(ins.args[1], bits)
    pos, length = t.value(ins.args[2], 32), t.value(ins.args[3], 32)
    field_ = (a >> pos) & _mask(length) if length else 0
    if ty.startswith("s") and length and field_ >> (length - 1):
        field_ -= 1 << length
    t.set(ins.args[0], bits, field_)


def _register_bits(name: str) -> int:
    """Width of a register from LLVM's naming (%rs 16, %r 32, %rd 64, %f 32, %fd 64)."""
    m = re.match(r"%([a-z]+)", name)
    return {"rs": 16, "r": 32, "rd": 64, "f": 32, "fd": 64, "p": 1}.get(m.group(1) if m else "", 64)


def _space(ins) -> str:
    for s in ("shared", "global", "param", "local", "const"):
        if s in ins.op:
            return s
    return "global"


def _op_ld(blk, t, ins):
    ty = _type(ins)
    size = WIDTH[ty] // 8
    space = _space(ins)
    address = t.address(ins.args[1])
    if space == "param":
        t.set(ins.args[0], 64, blk.load("param", blk.symbols[ins.args[1].strip("[]")], 8))
        return
    dsts = _vector(ins.args[0]) if ins.args[0].startswith("{") else [ins.args[0]]
    for k, d in enumerate(dsts):
        value = blk.load(space, address + k * size, size)
        if ty.startswith("s"):                  # a narrow signed load sign-extends into the register
            value = _signed(value, 8 * size)
        t.set(d, _register_bits(d), value)


def _op_st(blk, t, ins):
    ty = _type(ins)
    size = WIDTH[ty] // 8
    space = _space(ins)
    address = t.address(ins.args[0])
    srcs = _vector(ins.args[1]) if ins.args[1].startswith("{") else [ins.args[1]]
    for k, s in enumerate(srcs):
        blk.store(space, address + k * size, size, t.value(s, 8 * size))


def _op_cp(blk, t, ins):
    """cp.async: the source is read at the copy; src-size bytes are copied and the rest
    of cp-size zero-filled. Where the bytes land in shared memory depends on
    blk.cp_async_lands: "at_wait" (the default) holds them until the wait_group or
    wait_all that retires their group, the latest the PTX ISA allows, so a read before
    the wait sees the stage's old contents; "at_issue" writes them at once, the
    earliest, so a copy into a stage other warps still read overwrites it. A copy to
    bytes that an unwaited copy of the same thread also writes raises: the two may
    land in either order."""
    if ins.op[:2] != ["cp", "async"]:
        raise NotImplementedError(ins.line)
    kind = ins.op[2]
    if kind in ("commit_group", "wait_all"):
        t.cp_groups.append(t.cp_copies)
        t.cp_copies = []
    if kind in ("wait_group", "wait_all"):
        keep = t.value(ins.args[0], 32) if kind == "wait_group" else 0
        while len(t.cp_groups) > keep:
            for copy in t.cp_groups.pop(0):
                blk.store("shared", *copy)
    if kind in ("commit_group", "wait_group", "wait_all"):
        return
    if "shared" not in ins.op or "global" not in ins.op:
        raise NotImplementedError(ins.line)
    dst, src = t.address(ins.args[0]), t.address(ins.args[1])
    size = int(ins.args[2])
    given = t.value(ins.args[3], 32) if len(ins.args) > 3 else size
    copy = (dst, size, blk.load("global", src, given) if given else 0)
    for pending in [*t.cp_copies, *(c for group in t.cp_groups for c in group)]:
        if pending[0] < dst + size and dst < pending[0] + pending[1]:
            # two copies in flight to the same bytes may land in either order
            raise RuntimeError(f"cp.async to shared {dst:#x} while an unwaited copy writes there: {ins.line}")
    if blk.cp_async_lands == "at_issue":
        blk.store("shared", *copy)
    else:
        t.cp_copies.append(copy)


def _op_cvta(blk, t, ins):
    t.set(ins.args[0], 64, t.value(ins.args[1], 64))      # one address space model: identity


OPS = {
    "add": _int_op(lambda a, b, bits, signed: a + b),
    "sub": _int_op(lambda a, b, bits, signed: a - b),
    "and": _int_op(lambda a, b, bits, signed: a & b if bits > 1 else a and b),
    "or": _int_op(lambda a, b, bits, signed: a | b if bits > 1 else a or b),
    "xor": _int_op(lambda a, b, bits, signed: a ^ b if bits > 1 else a != b),
    "not": _int_op(lambda a, bits, signed: ~a if bits > 1 else not a),
    "neg": _int_op(lambda a, bits, signed: -a),
    "shl": _int_op(lambda a, b, bits, signed: a << min(b, bits)),
    "shr": _int_op(lambda a, b, bits, signed: a >> min(b, bits) if signed else (a & _mask(bits)) >> min(b, bits)),
    "max": _int_op(lambda a, b, bits, signed: max(a, b)),
    "min": _int_op(lambda a, b, bits, signed: min(a, b)),
    "abs": _int_op(lambda a, bits, signed: abs(a)),
    "fma": _int_op(None),
    "div": _int_op(lambda a, b, bits, signed: int(a / b) if b else 0),
    "rem": _int_op(lambda a, b, bits, signed: a - int(a / b) * b if b else 0),
    "mul": _op_mul, "mad": _op_mad, "setp": _op_setp, "selp": _op_selp, "mov": _op_mov, "cvt": _op_cvt,
    "bfe": _op_bfe, "ld": _op_ld, "st": _op_st, "cvta": _op_cvta, "cp": _op_cp, "prmt": _op_prmt, "shf": _op_shf,
    "rcp": _float_unary(lambda x: type(x)(1) / x), "sqrt": _float_unary(np.sqrt),
    "rsqrt": _float_unary(lambda x: type(x)(1) / np.sqrt(x)),
}


# ---- warp-wide instructions ------------------------------------------------------------------
def _ldmatrix(blk, lanes: list, ins) -> None:
    """ldmatrix.sync.aligned.m8n8.x{1,2,4}[.trans].shared.b16: lanes 8j..8j+7 give the
    row addresses of matrix j; thread T gets row T/4, elements 2(T%4), 2(T%4)+1 of
    each matrix (of the transposed matrix with .trans) as one b32."""
    count = int(next(p for p in ins.op if p.startswith("x"))[1:])
    trans = "trans" in ins.op
    rows = [[blk.load("shared", lane.address(ins.args[1]) + 2 * c, 2) for c in range(8)] for lane in lanes]
    dsts = [_vector(ins.args[0])] * 32
    for j in range(count):
        matrix = [rows[8 * j + r] for r in range(8)]
        if trans:
            matrix = [[matrix[c][r] for c in range(8)] for r in range(8)]
        for tid, lane in enumerate(lanes):
            r, c = tid // 4, 2 * (tid % 4)
            lane.set(dsts[tid][j], 32, matrix[r][c] | (matrix[r][c + 1] << 16))


def _mma(blk, lanes: list, ins) -> None:
    """mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 d, a, b, c (PTX ISA fragments:
    g = lane / 4, t = lane % 4; a: rows g, g+8, g, g+8 x cols 2t..2t+1 (+8 for a2, a3);
    b: k rows 2t..2t+1 (+8 for b1) x col g; c/d: rows g, g, g+8, g+8 x cols 2t, 2t+1)."""
    if ins.op[1:] != ["sync", "aligned", "m16n8k16", "row", "col", "f32", "bf16", "bf16", "f32"]:
        raise NotImplementedError(ins.line)
    d_regs, a_regs, b_regs, c_regs = (_vector(x) for x in ins.args)
    A = np.zeros((16, 16), np.float64)
    B = np.zeros((16, 8), np.float64)
    C = np.zeros((16, 8), np.float64)
    for lane_id, lane in enumerate(lanes):
        g, t = lane_id // 4, lane_id % 4
        a = [lane.value(x, 32) for x in a_regs]
        for k, (row, col) in enumerate([(g, 2 * t), (g + 8, 2 * t), (g, 2 * t + 8), (g + 8, 2 * t + 8)]):
            A[row, col], A[row, col + 1] = bf16_to_f32(a[k]), bf16_to_f32(a[k] >> 16)
        bv = [lane.value(x, 32) for x in b_regs]
        for k, krow in enumerate([2 * t, 2 * t + 8]):
            B[krow, g], B[krow + 1, g] = bf16_to_f32(bv[k]), bf16_to_f32(bv[k] >> 16)
        cv = [f32(lane.value(x, 32)) for x in c_regs]
        for k, (row, col) in enumerate([(g, 2 * t), (g, 2 * t + 1), (g + 8, 2 * t), (g + 8, 2 * t + 1)]):
            C[row, col] = cv[k]
    D = (A @ B + C).astype(np.float32)
    for lane_id, lane in enumerate(lanes):
        g, t = lane_id // 4, lane_id % 4
        for k, (row, col) in enumerate([(g, 2 * t), (g, 2 * t + 1), (g + 8, 2 * t), (g + 8, 2 * t + 1)]):
            lane.set(d_regs[k], 32, f32_bits(D[row, col]))


WARP_OPS = {"ldmatrix": _ldmatrix, "mma": _mma}
