"""Kernel-level timing without Python in the loop.

A tiny JIT-compiled function

    void tpp_bench_repeat(void (*kernel)(const tpp_tensor *), const tpp_tensor *args, int64_t count)

calls `kernel(args)` `count` times. The call is indirect through a pointer
argument, so LLVM cannot see the callee and can neither inline it nor delete
it; nothing is marked readnone/willreturn. One cffi call then runs the whole
repetition, and the time per kernel call is the repetition's time over count.
"""
from __future__ import annotations

import threading

import numpy as np

from tpp import Kernel, Target, cabi
from tpp.cabi import ffi
from tpp.jit import compiler

SYMBOL = "tpp_bench_repeat"

_IR = f"""
define void @{SYMBOL}(ptr %kernel, ptr %args, i64 %count) {{
entry:
  %any = icmp sgt i64 %count, 0
  br i1 %any, label %loop, label %done
loop:
  %i = phi i64 [ 0, %entry ], [ %next, %loop ]
  call void %kernel(ptr %args)
  %next = add nuw nsw i64 %i, 1
  %more = icmp slt i64 %next, %count
  br i1 %more, label %loop, label %done
done:
  ret void
}}
"""

_lock = threading.Lock()
_repeaters: dict[Target, object] = {}


def repeater(target: Target):
    """The compiled repeat loop for `target`, as a cffi function pointer."""
    with _lock:
        fn = _repeaters.get(target)
        if fn is None:
            mod = compiler.optimise(_IR, target)
            obj = compiler.emit_object(mod, target)
            addr = compiler.load_object(obj, target, [SYMBOL])[SYMBOL]
            fn = ffi.cast("void (*)(void *, const tpp_tensor *, int64_t)", addr)
            _repeaters[target] = fn
        return fn


def tensors(arrays: list[np.ndarray]):
    """A tpp_tensor[] for the arrays (inputs then outputs): data pointer and row stride
    in elements. The arrays must stay alive as long as the table is used."""
    entries = []
    for a in arrays:
        if a.ndim == 2 and a.strides[1] != a.itemsize:
            raise ValueError("tpp-bench: element stride must be 1")
        entries.append((a.ctypes.data, a.strides[0] // a.itemsize if a.ndim == 2 else (a.shape[-1] if a.ndim else 1)))
    return cabi.tensors(entries)


# A tpp_tensor[] filled verbatim: (data address, ld) per entry, as a kernel's C ABI
# documents them (e.g. a BRGEMM's {NULL, count} entry is (0, count)).
table = cabi.tensors


def address_runner(address: int, target: Target, args, keep=()):
    """run(count): `count` native calls of the kernel at `address` on the tpp_tensor[] `args`,
    from one cffi call. `keep`: what the table points into (kept alive with run)."""
    if not address:
        raise RuntimeError("tpp-bench: the kernel has no host address (built for another target?)")
    fn = repeater(target)
    kptr = ffi.cast("void *", address)

    def run(count: int) -> None:
        fn(kptr, args, count)
    run.keep_alive = (args, keep)
    return run


def kernel_runner(kernel: Kernel, arrays: list[np.ndarray]):
    """run(count): `count` native calls of `kernel` on `arrays`, from one cffi call."""
    if not kernel.address:
        raise RuntimeError(f"tpp-bench: {kernel!r} has no host address (built for another target?)")
    return address_runner(kernel.address, kernel.target, tensors(arrays), arrays)
