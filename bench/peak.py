"""The machine's peak for one core, measured by JIT-compiled loops.

    void tpp_bench_peak_<dtype>(int64_t iterations, void *out)

runs `iterations` turns of a loop that updates A independent vector
accumulators, one instruction each per turn: A is large enough to hide the
instruction's latency on every port that runs it (24 on AVX-512's 32
registers, fewer where the target has 16), and small enough that nothing
spills. The vector width is the target's (`vector_bits`). After the loop the
accumulators are summed and stored to `out`, so the work cannot be optimised
away. Per dtype:

    f32, f64  llvm.fma (acc = acc * mul + add; mul < 1 and add > 0 keep the values
              finite and normal): 2 flops per lane
    bf16      the dot of bf16 pairs into f32 (vdpbf16ps: acc += a0 b0 + a1 b1 per
              lane, operands splat (bfloat 1.0)): 4 flops per lane, 64 per
              instruction on AVX-512
    u8s8      the dot of u8 x s8 quads into s32 (vpdpbusd): 8 int ops per lane,
              128 per instruction on AVX-512 (the sums wrap, which is defined)

The dot loops exist only where the target's intrinsic table has the
instruction (`target.intrinsic("bf16_dot.v16f32")`, `"u8s8_dot.v16i32"`);
elsewhere `available` says why not and `measure` reports the peak unavailable.

The peak is what GEMM rows divide by. The VM this runs on drifts in speed,
so the suites time this loop interleaved with the kernels (`run`) rather
than once.
"""
from __future__ import annotations

import struct
import threading
from dataclasses import dataclass

import cffi
import numpy as np

import tpp
from tpp import Target
from tpp.jit import compiler

from . import timing

MAX_ACCUMULATORS = 24
ITERATIONS_PER_COUNT = 1024      # run(count) runs count * this many loop turns
_MUL, _ADD = 0.9999999, 1e-6


@dataclass(frozen=True)
class Kind:
    """How one dtype's peak loop is spelled."""
    elem: str            # accumulator element (LLVM type)
    bits: int
    per_lane: int        # flops (int ops) per accumulator lane per instruction
    op: str | None       # the target's intrinsic-table op; None: llvm.fma
    operand: str = ""    # the dot's operand type, {lanes} and {pairs} filled in
    const: str = ""      # both dot operands
    unit: str = "GFLOP/s"
    what: str = "FMA"


KINDS = {
    "f32": Kind("float", 32, 2, None),
    "f64": Kind("double", 64, 2, None),
    "bf16": Kind("float", 32, 4, "bf16_dot", "<{pairs} x bfloat>", "splat (bfloat 0xR3F80)",
                 what="bf16 dot"),
    "u8s8": Kind("i32", 32, 8, "u8s8_dot", "<{lanes} x i32>", "splat (i32 16843009)",    # 0x01010101
                 unit="GOP/s", what="int8 dot"),
}

ffi = cffi.FFI()
_lock = threading.Lock()


class Unavailable(LookupError):
    """The target has no such instruction, so there is no peak to measure."""


@dataclass(frozen=True)
class PeakLoop:
    fn: object                  # cffi void (*)(int64_t, void *)
    dtype: str
    lanes: int
    accumulators: int
    out: object                 # the buffer the loop stores its sum to
    instruction: str = "llvm.fma"

    @property
    def kind(self) -> Kind:
        return KINDS[self.dtype]

    @property
    def flops_per_instruction(self) -> int:
        return self.kind.per_lane * self.lanes

    @property
    def flops_per_count(self) -> int:
        return self.flops_per_instruction * self.accumulators * ITERATIONS_PER_COUNT

    def run(self, count: int) -> None:
        """count * ITERATIONS_PER_COUNT turns of the loop (a timing.RunFn)."""
        self.fn(max(1, count) * ITERATIONS_PER_COUNT, self.out)

    def describe(self) -> str:
        return (f"{self.accumulators} x <{self.lanes} x {self.kind.elem}> {self.instruction} accumulators, "
                f"{self.flops_per_instruction} {'flops' if self.kind.unit == 'GFLOP/s' else 'ops'}/instr")


_loops: dict[tuple[Target, str], PeakLoop] = {}


def _hex(value: float, dtype: str) -> str:
    """LLVM's exact spelling of a float constant: the double's bits in hex (an f32
    constant must be a double that is exactly representable as float)."""
    if dtype != "f64":
        value = float(np.float32(value))
    return f"0x{struct.unpack('<Q', struct.pack('<d', value))[0]:016X}"


def accumulators(target: Target) -> int:
    """Independent chains: all but a few registers (two constants, loop, spare)."""
    return max(1, min(MAX_ACCUMULATORS, target.vector_registers - 4))


def _check(dtype: str) -> Kind:
    if dtype not in KINDS:
        raise ValueError(f"tpp-bench peak: dtype must be one of {', '.join(KINDS)}, got {dtype!r}")
    return KINDS[dtype]


def table_op(target: Target, dtype: str) -> str | None:
    """The name the loop's instruction has in the target's intrinsic table (None: llvm.fma)."""
    kind = _check(dtype)
    if kind.op is None:
        return None
    return f"{kind.op}.v{target.lanes(kind.bits)}{'f32' if kind.elem == 'float' else 'i32'}"


def intrinsic(target: Target, dtype: str) -> str | None:
    """The LLVM intrinsic the loop calls on `target`, or None where the target lacks it."""
    op = table_op(target, dtype)
    if op is None:
        return f"llvm.fma.v{target.lanes(KINDS[dtype].bits)}{'f64' if dtype == 'f64' else 'f32'}"
    found = target.intrinsic(op)
    return found.split("|")[0] if found else None


def available(target: Target | None, dtype: str) -> str | None:
    """None if the peak loop can run on `target`, else why not."""
    target = target or tpp.current_target()
    if intrinsic(target, dtype) is None:
        return (f"target {target.name} ({target.cpu}) has no {KINDS[dtype].what} instruction "
                f"({table_op(target, dtype)} is not in its intrinsic table)")
    return None


def ir_text(symbol: str, lanes: int, dtype: str, n_acc: int, intr: str | None = None) -> str:
    kind = _check(dtype)
    vty = f"<{lanes} x {kind.elem}>"
    if kind.op is None:
        intr = intr or f"llvm.fma.v{lanes}{'f64' if dtype == 'f64' else 'f32'}"
        args = [f"{vty} splat ({kind.elem} {_hex(_MUL, dtype)})", f"{vty} splat ({kind.elem} {_hex(_ADD, dtype)})"]
        decl = [vty, vty, vty]
    else:
        oty = kind.operand.format(lanes=lanes, pairs=2 * lanes)
        args = [f"{oty} {kind.const}"] * 2
        decl = [vty, oty, oty]

    def init(a: int) -> str:     # distinct start values: no two chains are provably equal
        return _hex(1.0 + a / 64, dtype) if kind.elem != "i32" else str(a)

    lines = [f"define void @{symbol}(i64 %n, ptr %out) {{", "entry:", "  br label %loop", "loop:",
             "  %i = phi i64 [ 0, %entry ], [ %i.next, %loop ]"]
    for a in range(n_acc):
        lines.append(f"  %acc{a} = phi {vty} [ splat ({kind.elem} {init(a)}), %entry ], [ %new{a}, %loop ]")
    for a in range(n_acc):
        lines.append(f"  %new{a} = call {vty} @{intr}({vty} %acc{a}, {', '.join(args)})")
    lines += ["  %i.next = add nuw nsw i64 %i, 1",
              "  %more = icmp slt i64 %i.next, %n",
              "  br i1 %more, label %loop, label %done",
              "done:"]
    total = "%new0"
    add = "add" if kind.elem == "i32" else "fadd"
    for a in range(1, n_acc):
        lines.append(f"  %sum{a} = {add} {vty} {total}, %new{a}")
        total = f"%sum{a}"
    lines += [f"  store {vty} {total}, ptr %out, align 4",     # out: any 4-byte aligned buffer
              "  ret void", "}",
              f"declare {vty} @{intr}({', '.join(decl)})"]
    return "\n".join(lines) + "\n"


def loop(target: Target | None = None, dtype: str = "f32") -> PeakLoop:
    """The compiled peak loop for `target` (default: tpp's current target), cached.
    Raises Unavailable where the target lacks the dtype's instruction."""
    target = target or tpp.current_target()
    kind = _check(dtype)
    with _lock:
        found = _loops.get((target, dtype))
        if found is None:
            intr = intrinsic(target, dtype)
            if intr is None:
                raise Unavailable(f"tpp-bench peak {dtype}: {available(target, dtype)}")
            lanes = target.lanes(kind.bits)
            n_acc = accumulators(target)
            symbol = f"tpp_bench_peak_{dtype}_{lanes}x{n_acc}"
            mod = compiler.optimise(ir_text(symbol, lanes, dtype, n_acc, intr), target)
            addr = compiler.load_object(compiler.emit_object(mod, target), target, [symbol])[symbol]
            fn = ffi.cast("void (*)(int64_t, void *)", addr)
            out = ffi.new("char[]", lanes * kind.bits // 8)
            found = _loops[(target, dtype)] = PeakLoop(fn, dtype, lanes, n_acc, out, intr)
        return found


def gflops(pl: PeakLoop, seconds_per_count: float) -> float:
    return pl.flops_per_count / seconds_per_count / 1e9


def measure(dtype: str = "f32", *, repeat: int = 5, min_time: float = 0.02,
            target: Target | None = None) -> dict:
    """One stand-alone peak measurement: median G(FL)OP/s over `repeat` repetitions, or
    {"available": False, "reason": ...} where the target lacks the instruction."""
    kind = _check(dtype)
    head = {"dtype": dtype, "unit": kind.unit, "what": kind.what}
    try:
        pl = loop(target, dtype)
    except Unavailable as exc:
        return {**head, "available": False, "reason": str(exc)}
    st = timing.measure(pl.run, repeat=repeat, min_time=min_time)
    return {**head, "available": True, "gflops": gflops(pl, st.median), "gflops_max": gflops(pl, st.min),
            "gflops_min": gflops(pl, st.max), "loop": pl.describe(), "spread": round(st.spread, 4)}
