"""The machine's FMA peak for one core, measured by a JIT-compiled loop.

    void tpp_bench_peak_f32(int64_t iterations, float *out)

runs `iterations` turns of a loop that updates A independent vector
accumulators with `llvm.fma` (acc = acc * mul + add): A is large enough to
hide the FMA latency on every FMA port (24 on AVX-512's 32 registers, fewer
where the target has 16), and small enough that nothing spills. The vector
width is the target's (`vector_bits`: 512 -> <16 x float>, 256 -> <8 x float>).
After the loop the accumulators are summed and stored to `out`, so the work
cannot be optimised away; mul < 1 and add > 0 keep the values finite and
normal (they converge to add / (1 - mul)). Flops: 2 per lane per FMA.

The peak is what GEMM rows divide by. The VM this runs on drifts in speed,
so the GEMM suite times this loop interleaved with the kernels (`runner`)
rather than once.
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
_LLVM_TYPE = {"f32": ("float", 32), "f64": ("double", 64)}
_MUL, _ADD = 0.9999999, 1e-6

ffi = cffi.FFI()
_lock = threading.Lock()


@dataclass(frozen=True)
class PeakLoop:
    fn: object                  # cffi void (*)(int64_t, void *)
    dtype: str
    lanes: int
    accumulators: int
    out: object                 # the buffer the loop stores its sum to

    @property
    def flops_per_count(self) -> int:
        return 2 * self.lanes * self.accumulators * ITERATIONS_PER_COUNT

    def run(self, count: int) -> None:
        """count * ITERATIONS_PER_COUNT turns of the FMA loop (a timing.RunFn)."""
        self.fn(max(1, count) * ITERATIONS_PER_COUNT, self.out)

    def describe(self) -> str:
        elem = _LLVM_TYPE[self.dtype][0]
        return f"{self.accumulators} x <{self.lanes} x {elem}> llvm.fma accumulators"


_loops: dict[tuple[Target, str], PeakLoop] = {}


def _hex(value: float, dtype: str) -> str:
    """LLVM's exact spelling of a float constant: the double's bits in hex (an f32
    constant must be a double that is exactly representable as float)."""
    if dtype == "f32":
        value = float(np.float32(value))
    return f"0x{struct.unpack('<Q', struct.pack('<d', value))[0]:016X}"


def accumulators(target: Target) -> int:
    """Independent chains: all but a few registers (two constants, loop, spare)."""
    return max(1, min(MAX_ACCUMULATORS, target.vector_registers - 4))


def ir_text(symbol: str, lanes: int, dtype: str, n_acc: int) -> str:
    elem, _ = _LLVM_TYPE[dtype]
    vty = f"<{lanes} x {elem}>"
    fma = f"llvm.fma.v{lanes}{'f32' if dtype == 'f32' else 'f64'}"
    mul = f"{vty} splat ({elem} {_hex(_MUL, dtype)})"
    add = f"{vty} splat ({elem} {_hex(_ADD, dtype)})"
    lines = [f"define void @{symbol}(i64 %n, ptr %out) {{", "entry:", "  br label %loop", "loop:",
             "  %i = phi i64 [ 0, %entry ], [ %i.next, %loop ]"]
    for a in range(n_acc):          # distinct start values: no two chains are provably equal
        init = _hex(1.0 + a / 64, dtype)
        lines.append(f"  %acc{a} = phi {vty} [ splat ({elem} {init}), %entry ], [ %new{a}, %loop ]")
    for a in range(n_acc):
        lines.append(f"  %new{a} = call {vty} @{fma}({vty} %acc{a}, {mul}, {add})")
    lines += ["  %i.next = add nuw nsw i64 %i, 1",
              "  %more = icmp slt i64 %i.next, %n",
              "  br i1 %more, label %loop, label %done",
              "done:"]
    total = "%new0"
    for a in range(1, n_acc):
        lines.append(f"  %sum{a} = fadd {vty} {total}, %new{a}")
        total = f"%sum{a}"
    lines += [f"  store {vty} {total}, ptr %out, align 4",     # out: any float buffer
              "  ret void", "}",
              f"declare {vty} @{fma}({vty}, {vty}, {vty})"]
    return "\n".join(lines) + "\n"


def loop(target: Target | None = None, dtype: str = "f32") -> PeakLoop:
    """The compiled FMA loop for `target` (default: tpp's current target), cached."""
    target = target or tpp.current_target()
    if dtype not in _LLVM_TYPE:
        raise ValueError(f"tpp-bench peak: dtype must be one of {', '.join(_LLVM_TYPE)}, got {dtype!r}")
    with _lock:
        found = _loops.get((target, dtype))
        if found is None:
            lanes = target.lanes(_LLVM_TYPE[dtype][1])
            n_acc = accumulators(target)
            symbol = f"tpp_bench_peak_{dtype}_{lanes}x{n_acc}"
            mod = compiler.optimise(ir_text(symbol, lanes, dtype, n_acc), target)
            addr = compiler.load_object(compiler.emit_object(mod, target), target, [symbol])[symbol]
            fn = ffi.cast("void (*)(int64_t, void *)", addr)
            out = ffi.new("char[]", lanes * _LLVM_TYPE[dtype][1] // 8)
            found = _loops[(target, dtype)] = PeakLoop(fn, dtype, lanes, n_acc, out)
        return found


def gflops(pl: PeakLoop, seconds_per_count: float) -> float:
    return pl.flops_per_count / seconds_per_count / 1e9


def measure(dtype: str = "f32", *, repeat: int = 5, min_time: float = 0.02,
            target: Target | None = None) -> dict:
    """One stand-alone peak measurement: median GFLOP/s over `repeat` repetitions."""
    pl = loop(target, dtype)
    st = timing.measure(pl.run, repeat=repeat, min_time=min_time)
    return {"dtype": dtype, "gflops": gflops(pl, st.median), "gflops_max": gflops(pl, st.min),
            "gflops_min": gflops(pl, st.max), "loop": pl.describe(), "spread": round(st.spread, 4)}
