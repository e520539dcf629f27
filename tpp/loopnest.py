"""The composition model: an operator is a loop nest (data) whose body calls
primitives, compiled into ONE function with the primitives inlined.

    nest = Nest((Loop("mb", 8), Loop("nb", 4)), parallel=2)
    emit_nest(module, name, nest, arg_count, body)

defines `void name(const tpp_tensor *args, int64_t start, int64_t end)`: the first
`parallel` loops are collapsed into one range of which the call runs [start,
end) (the worker pool hands each thread a share); the remaining loops run in
full inside. `body(ctx)` emits the work of one iteration, reading the loop
indices by name from ctx.index and calling primitives with ctx.call. Re-tiling
or reordering changes the Nest, not the body.

A nest with `scratch_bytes` gets a private buffer per call (so per thread share):
ctx.scratch (64-byte aligned) and ctx.memo, an i64 slot that starts at -1 for the
body to record what the buffer holds. Its last argument is then a status word
{int64 *, _}: a call whose malloc fails stores 1 there and computes nothing, and
the caller raises MemoryError.

Primitives are emitted into the same module with internal linkage and
`alwaysinline`, so the optimiser folds them into the loop body.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from llvmlite import ir

from .jit.loops import I64, Loop as IRLoop, i64
from .jit.targets import Target
from .jit.vec import I32, PTR, declare
from .kernels.operands import TENSOR, unpack_args


@dataclass(frozen=True)
class Loop:
    name: str
    extent: int                      # iterations


@dataclass(frozen=True)
class Nest:
    loops: tuple[Loop, ...]          # outermost first
    parallel: int = 1                # leading loops collapsed into the parallel range

    def __post_init__(self) -> None:
        if not 0 <= self.parallel <= len(self.loops):
            raise ValueError(f"parallel={self.parallel} must count some of the {len(self.loops)} loops")
        if len({lp.name for lp in self.loops}) != len(self.loops):
            raise ValueError("loop names must be unique")

    @property
    def parallel_extent(self) -> int:
        total = 1
        for lp in self.loops[: self.parallel]:
            total *= lp.extent
        return total


class Context:
    """What a body sees: the builder, the nest's arguments and the loop indices."""

    def __init__(self, b: ir.IRBuilder, args: list[tuple[ir.Value, ir.Value]], index: dict[str, ir.Value],
                 scratch: ir.Value | None = None, memo: ir.Value | None = None):
        self.b = b
        self.args = args
        self.index = index
        self.scratch = scratch
        self.memo = memo

    def call(self, primitive: ir.Function, tensors: list[tuple[ir.Value, ir.Value]]) -> None:
        """Call a primitive kernel with (data pointer, ld) entries."""
        b = self.b
        array = ir.ArrayType(TENSOR, len(tensors))
        # in the entry block: an alloca in a loop takes more stack each turn (a pack
        # nest over 2^18 rows of B ran out of it)
        with b.goto_block(b.function.entry_basic_block):
            slot = b.inttoptr(b.ptrtoint(b.alloca(array), I64), PTR)   # opaque, like the callee's
        for k, (data, ld) in enumerate(tensors):
            b.store(data, b.gep(slot, [i64(k), ir.Constant(I32, 0)], source_etype=TENSOR))
            b.store(ld if isinstance(ld, ir.Value) else i64(ld),
                    b.gep(slot, [i64(k), ir.Constant(I32, 1)], source_etype=TENSOR))
        b.call(primitive, [slot])


def primitive(module: ir.Module, desc, target: Target, name: str) -> ir.Function:
    """Emit a primitive kernel into `module` for inlining into a nest."""
    desc.emit(module, name, target)
    fn = module.get_global(name)
    fn.linkage = "internal"
    fn.attributes.add("alwaysinline")
    return fn


def emit_nest(module: ir.Module, name: str, nest: Nest, arg_count: int,
              body: Callable[[Context], None], scratch_bytes: int = 0) -> ir.Function:
    fn = ir.Function(module, ir.FunctionType(ir.VoidType(), [PTR, I64, I64]), name)
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    args_ptr, start, end = fn.args
    args = unpack_args(b, args_ptr, arg_count)
    index: dict[str, ir.Value] = {}
    scratch = memo = raw = None
    if scratch_bytes:
        raw = b.call(declare(module, "malloc", PTR, [I64]), [i64(scratch_bytes + 64)])
        with b.if_then(b.icmp_unsigned("==", b.ptrtoint(raw, I64), i64(0)), likely=False):
            b.store(i64(1), args[-1][0])
            b.ret_void()
        scratch = b.inttoptr(b.and_(b.add(b.ptrtoint(raw, I64), i64(63)), i64(-64)), PTR)
        memo = b.alloca(I64)
        b.store(i64(-1), memo)

    def inner(depth: int) -> None:
        if depth == len(nest.loops):
            body(Context(b, args, index, scratch, memo))
            return
        lp = nest.loops[depth]
        with IRLoop(b, 0, lp.extent, name=lp.name) as it:
            index[lp.name] = it.i
            inner(depth + 1)

    with IRLoop(b, start, end, name="par") as par:
        # the collapsed parallel index -> the indices of the parallel loops (row-major)
        rest = par.i
        for lp in reversed(nest.loops[: nest.parallel]):
            index[lp.name] = b.srem(rest, i64(lp.extent))
            rest = b.sdiv(rest, i64(lp.extent))
        inner(nest.parallel)
    if raw is not None:
        b.call(declare(module, "free", ir.VoidType(), [PTR]), [raw])
    b.ret_void()
    return fn
