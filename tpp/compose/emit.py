"""A Composite as one LLVM function run by every thread of a team:

    void name(const tpp_tensor *args, int64_t tid, int64_t nthreads)

args holds, in Layout order, the tensors' data pointers, the call-scope and
partial scratch buffers, and a control block (int64 words: a status that a
failed allocation sets, the barrier counter on its own cache line). Each thread
computes its own share of every parallel loop (by count, or by a binary search
over cumulative weights), so phases separated by barriers need no return to
Python between them. Primitives are emitted into the same module with internal
linkage and alwaysinline, so the optimiser folds them into the loop bodies.
"""
from __future__ import annotations

from llvmlite import ir
from llvmlite.ir.types import _TypedPointerType

from .. import pool
from ..jit.loops import I64, Loop as IRLoop, i64
from ..jit.targets import Target
from ..jit.types import DType
from ..jit.vec import I32, PTR, declare
from ..kernels.operands import TENSOR, unpack_args
from .spec import BARRIER, STACK_BYTES, Composite, Loop, Scratch, Tensor, collapsed

STATUS, COUNTER = 0, 8          # control words; the counter on the second cache line
CONTROL_WORDS = 16
_WORDS = _TypedPointerType(I64)  # llvmlite's atomics want to know the pointee


class Layout:
    """Which args entry holds what, by name."""

    def __init__(self, composite: Composite):
        self.tensors = list(composite.tensors)
        self.shared = [s for s in composite.scratch if s.scope in ("call", "partial")]
        self.local = [s for s in composite.scratch if s.scope == "thread"]
        names = [t.name for t in self.tensors] + [s.name for s in self.shared]
        self.slot = {name: k for k, name in enumerate(names)}
        self.control = len(names)
        self.count = len(names) + 1


class TensorRef:
    """A tensor as the body sees it: its base pointer and compiled-in geometry."""

    def __init__(self, b: ir.IRBuilder, ptr: ir.Value, spec: Tensor):
        self.b, self.ptr, self.spec = b, ptr, spec
        self.dtype, self.shape, self.strides, self.ld = spec.dtype, spec.shape, spec.strides, spec.ld

    def offset(self, *index) -> ir.Value:
        b = self.b
        static = sum(idx * stride for idx, stride in zip(index, self.strides) if isinstance(idx, int))
        total = None
        for idx, stride in zip(index, self.strides):
            if not isinstance(idx, int):
                term = idx if stride == 1 else b.mul(idx, i64(stride))
                total = term if total is None else b.add(total, term)
        if total is None:
            return i64(static)
        return b.add(total, i64(static)) if static else total

    def at(self, *index) -> ir.Value:
        """Address of element [index...] (trailing indices default to 0)."""
        if not index:
            return self.ptr
        return self.b.gep(self.ptr, [self.offset(*index)], source_etype=self.dtype.storage)

    def arg(self, *index) -> tuple[ir.Value, int]:
        """(address, ld): a primitive's view of this tensor from element [index...]."""
        return self.at(*index), self.ld


class Context:
    """What a body sees: the builder, the loop indices, tensors and scratch by name."""

    def __init__(self, state: "_Emission"):
        self._s = state
        self.b = state.b
        self.module, self.target = state.module, state.target
        self.tid, self.nthreads = state.tid, state.nthreads
        self.index: dict[str, ir.Value] = {}
        self.start: dict[str, ir.Value] = {}
        self.size: dict[str, int] = {}

    def tensor(self, name: str) -> TensorRef:
        return self._s.tensor_refs[name]

    def buffer(self, name: str) -> ir.Value:
        """A scratch buffer's (64-byte aligned) start; a partial: this thread's copy."""
        return self._s.buffers[name]

    def view(self, name: str, shape: tuple[int, ...] | None = None) -> TensorRef:
        """A tensor by name, or a scratch buffer seen as a C-ordered tensor of `shape`
        (a padded copy of an input, a tile): bodies index both the same way."""
        refs = self._s.tensor_refs
        if name in refs:
            return refs[name]
        sc = next(sc for sc in self._s.composite.scratch if sc.name == name)
        return TensorRef(self.b, self.buffer(name), Tensor(name, sc.dtype, shape or (sc.count,)))

    def copies(self, name: str) -> ir.Value:
        """The first of a partial buffer's per-thread copies (copy t is count * t further)."""
        return self._s.entries[self._s.layout.slot[name]][0]

    def var(self, name: str, typ: ir.Type) -> ir.Value:
        """A slot for carried state (an accumulator, a running max, what a buffer holds),
        made once per function in its entry block; hooks store and load it."""
        slot = self._s.vars.get(name)
        if slot is None:
            with self.b.goto_block(self.b.function.entry_basic_block):
                slot = self.b.alloca(typ, name=name)
            self._s.vars[name] = slot
        return slot

    def load(self, name: str, *index) -> ir.Value:
        """One element of a tensor; integers widened to i64 (row pointers, indices)."""
        ref = self.tensor(name)
        value = self.b.load(ref.at(*index), typ=ref.dtype.storage)
        if ref.dtype in (DType.I32, DType.I8):
            return self.b.sext(value, I64)
        if ref.dtype in (DType.U8, DType.BOOL):
            return self.b.zext(value, I64)
        return value

    def run(self, *nodes) -> None:
        """Emit nodes (loops, callables) here: a loop inside a hook's branch."""
        _emit_body(self, nodes)

    def primitive(self, desc) -> ir.Function:
        """desc's kernel, emitted into this module once and inlined where it is called."""
        return self._s.primitive(desc)

    def call(self, primitive: ir.Function, tensors: list[tuple[ir.Value, ir.Value | int]]) -> None:
        """Call a primitive with (data pointer, ld) entries."""
        b = self.b
        array = ir.ArrayType(TENSOR, len(tensors))
        # in the entry block: an alloca in a loop takes more stack each turn
        with b.goto_block(b.function.entry_basic_block):
            slot = b.inttoptr(b.ptrtoint(b.alloca(array), I64), PTR)
        for k, (data, ld) in enumerate(tensors):
            b.store(data, b.gep(slot, [i64(k), ir.Constant(I32, 0)], source_etype=TENSOR))
            b.store(ld if isinstance(ld, ir.Value) else i64(ld),
                    b.gep(slot, [i64(k), ir.Constant(I32, 1)], source_etype=TENSOR))
        b.call(primitive, [slot])


class _Emission:
    """The state of one function's emission."""

    def __init__(self, module: ir.Module, name: str, target: Target, composite: Composite):
        self.module, self.name, self.target, self.composite = module, name, target, composite
        self.layout = Layout(composite)
        self.fn = ir.Function(module, ir.FunctionType(ir.VoidType(), [PTR, I64, I64]), name)
        self.b = ir.IRBuilder(self.fn.append_basic_block("entry"))
        args, self.tid, self.nthreads = self.fn.args
        self.entries = unpack_args(self.b, args, self.layout.count)
        self.control = self.entries[self.layout.control][0]
        self.tensor_refs = {t.name: TensorRef(self.b, self.entries[self.layout.slot[t.name]][0], t)
                            for t in composite.tensors}
        self.buffers: dict[str, ir.Value] = {}
        self.vars: dict[str, ir.Value] = {}
        self.prims: dict = {}
        self.heap: list[ir.Value] = []     # malloc'ed thread scratch, freed on the way out
        self.barriers = 0

    def primitive(self, desc) -> ir.Function:
        fn = self.prims.get(desc)
        if fn is None:
            symbol = f"{self.name}_p{len(self.prims)}"
            desc.emit(self.module, symbol, self.target)
            fn = self.module.get_global(symbol)
            fn.linkage = "internal"
            fn.attributes.add("alwaysinline")
            self.prims[desc] = fn
        return fn

    def word(self, index: int) -> ir.Value:
        b = self.b
        at = b.gep(self.control, [i64(index)], source_etype=I64)
        return b.inttoptr(b.ptrtoint(at, I64), _WORDS)

    def pause(self) -> None:
        spec = self.target.intrinsic("spin_pause")
        if spec:
            self.b.call(declare(self.module, spec.partition("|")[0], ir.VoidType(), []), [])

    def barrier(self) -> None:
        """Wait until every thread of the team has arrived here (the k-th barrier of the
        call: the counter, zeroed by the caller, reaches k * nthreads)."""
        b = self.b
        self.barriers += 1
        counter = self.word(COUNTER)
        b.atomic_rmw("add", counter, i64(1), "seq_cst")
        goal = b.mul(self.nthreads, i64(self.barriers))
        head, spin, done = (self.fn.append_basic_block(f"barrier{self.barriers}.{n}") for n in ("head", "spin", "done"))
        before = b.block
        b.branch(head)
        b.position_at_end(head)
        turns = b.phi(I64)
        turns.add_incoming(i64(0), before)
        arrived = b.load_atomic(counter, "acquire", 8, typ=I64)
        b.cbranch(b.icmp_signed("<", arrived, goal), spin, done)
        b.position_at_end(spin)
        self.pause()
        # past pool.YIELD_AFTER turns give the CPU away: with more threads than free
        # cores, the one still working may be waiting for this one's
        with b.if_then(b.icmp_signed(">", turns, i64(pool.YIELD_AFTER))):
            pool.give_way(self.module, b)
        turns.add_incoming(b.add(turns, i64(1)), b.block)
        b.branch(head)
        b.position_at_end(done)


def emit_composite(module: ir.Module, name: str, composite: Composite, target: Target) -> ir.Function:
    """Define `name` (see the module doc) for the composite."""
    s = _Emission(module, name, target, composite)
    b = s.b
    ok = _thread_scratch(s)
    for sc in s.layout.shared:
        base = s.entries[s.layout.slot[sc.name]][0]
        if sc.scope == "partial":
            base = b.gep(base, [b.mul(s.tid, i64(sc.count))], source_etype=sc.dtype.storage)
            memset = declare(module, "llvm.memset.p0.i64", ir.VoidType(), [PTR, ir.IntType(8), I64, ir.IntType(1)])
            with b.if_then(ok):
                b.call(memset, [base, ir.Constant(ir.IntType(8), 0), i64(sc.bytes), ir.Constant(ir.IntType(1), 0)])
        s.buffers[sc.name] = base
    segments: list[list] = [[]]
    for node in composite.body:
        if node is BARRIER:
            segments.append([])
        else:
            segments[-1].append(node)
    partials = [sc for sc in s.layout.shared if sc.scope == "partial"]
    if any(sc.count for sc in partials):
        segments.append([_reduction(sc, composite.tensor(sc.into)) for sc in partials if sc.count])
    for k, segment in enumerate(segments):
        if k:
            s.barrier()
        with b.if_then(ok):
            _emit_body(Context(s), segment)
    for raw in s.heap:
        b.call(declare(module, "free", ir.VoidType(), [PTR]), [raw])
    b.ret_void()
    return s.fn


def _thread_scratch(s: _Emission) -> ir.Value:
    """Make each thread's private buffers; the i1 result says whether all were had (a
    thread without them still takes part in the barriers, doing no work)."""
    b = s.b
    ok = ir.Constant(ir.IntType(1), 1)
    for k, sc in enumerate(s.layout.local):
        size = max(sc.bytes, 1)
        if size <= STACK_BYTES:
            slot = b.alloca(ir.ArrayType(ir.IntType(8), size), name=sc.name)
            slot.align = 64
            s.buffers[sc.name] = b.inttoptr(b.ptrtoint(slot, I64), PTR)
            continue
        raw = b.call(declare(s.module, "malloc", PTR, [I64]), [i64(size + 64)])
        got = b.icmp_unsigned("!=", b.ptrtoint(raw, I64), i64(0))
        with b.if_then(b.not_(got), likely=False):
            b.store_atomic(i64(k + 1), s.word(STATUS), "monotonic", 8)   # which buffer failed
        ok = b.and_(ok, got)
        s.heap.append(raw)
        s.buffers[sc.name] = b.inttoptr(b.and_(b.add(b.ptrtoint(raw, I64), i64(63)), i64(-64)), PTR)
    return ok


def _emit_body(ctx: Context, body) -> None:
    for node in body:
        if isinstance(node, Loop):
            if node.parallel:
                _parallel(ctx, node)
            elif node.extent is None:
                _ranged(ctx, node)
            else:
                _sequential(ctx, node)
        else:
            node(ctx)


def _set(ctx: Context, lp: Loop, index: ir.Value, size: int) -> None:
    ctx.index[lp.name] = index
    ctx.start[lp.name] = index if lp.tile == 1 else ctx.b.mul(index, i64(lp.tile))
    ctx.size[lp.name] = size


def _sequential(ctx: Context, lp: Loop) -> None:
    """Whole tiles in a loop, then the short last tile (its own code, no branch)."""
    full, rest = divmod(lp.extent, lp.tile)
    if full == 1:
        _set(ctx, lp, i64(0), lp.tile)
        _emit_body(ctx, lp.body)
    elif full:
        with IRLoop(ctx.b, 0, full, name=lp.name) as it:
            _set(ctx, lp, it.i, lp.tile)
            _emit_body(ctx, lp.body)
    if rest:
        _set(ctx, lp, i64(full), rest)
        _emit_body(ctx, lp.body)


def _ranged(ctx: Context, lp: Loop) -> None:
    start, stop = lp.start(ctx), lp.stop(ctx)
    with IRLoop(ctx.b, start, stop, name=lp.name) as it:
        _set(ctx, lp, it.i, 1)
        _emit_body(ctx, lp.body)


def _parallel(ctx: Context, outer: Loop) -> None:
    """This thread's share of the collapsed range of `outer` and the parallel loops
    nested in it, each tile's body emitted for its sizes (full or last tile)."""
    b = ctx.b
    chain = collapsed(outer)
    total = 1
    for lp in chain:
        total *= lp.blocks
    if outer.weight is not None:
        start, stop = _weighted_share(ctx, outer)
    else:
        start, stop = _share(b, i64(total), ctx.tid, ctx.nthreads)
    with IRLoop(b, start, stop, name="par_" + outer.name) as par:
        rest = par.i
        for lp in reversed(chain):
            if lp is chain[0]:
                ctx.index[lp.name] = rest
            else:
                ctx.index[lp.name] = b.srem(rest, i64(lp.blocks))
                rest = b.sdiv(rest, i64(lp.blocks))
        _variants(ctx, chain, 0)


def _variants(ctx: Context, chain: list[Loop], k: int) -> None:
    if k == len(chain):
        _emit_body(ctx, chain[-1].body)
        return
    lp = chain[k]
    index = ctx.index[lp.name]
    if lp.blocks == 1 or lp.edge == lp.tile:
        _set(ctx, lp, index, lp.edge if lp.blocks == 1 else lp.tile)
        _variants(ctx, chain, k + 1)
        return
    with ctx.b.if_else(ctx.b.icmp_signed("==", index, i64(lp.blocks - 1))) as (last, inner):
        for flag, size in ((last, lp.edge), (inner, lp.tile)):
            with flag:
                _set(ctx, lp, index, size)
                _variants(ctx, chain, k + 1)


def _share(b: ir.IRBuilder, total: ir.Value, tid: ir.Value, threads: ir.Value) -> tuple[ir.Value, ir.Value]:
    """[start, stop) of thread tid when `total` iterations are cut into near-equal
    contiguous ranges (pool.shares' rule)."""
    base, extra = b.sdiv(total, threads), b.srem(total, threads)

    def bound(t):
        below = b.select(b.icmp_signed("<", t, extra), t, extra)
        return b.add(b.mul(t, base), below)
    return bound(tid), bound(b.add(tid, i64(1)))


def _weighted_share(ctx: Context, lp: Loop) -> tuple[ir.Value, ir.Value]:
    """Shares of equal cost, where tile i costs 1 plus its weight W[end] - W[start]
    (W: cumulative, e.g. a CSR row pointer). Thread t starts at the first tile whose
    cumulative cost C(i) reaches t/T of the total: a binary search."""
    b = ctx.b
    n = lp.blocks
    w0 = ctx.load(lp.weight, 0)

    def cost(i):
        at = b.mul(i, i64(lp.tile)) if lp.tile > 1 else i
        at = b.select(b.icmp_signed("<", at, i64(lp.extent)), at, i64(lp.extent))
        return b.add(b.sub(ctx.load(lp.weight, at), w0), i)

    whole = cost(i64(n))

    def bound(t):
        # smallest i in [0, n] with C(i) * T >= t * C(n)
        goal = b.mul(t, whole)
        lo, hi = ctx.var(f"{lp.name}.lo", I64), ctx.var(f"{lp.name}.hi", I64)
        b.store(i64(0), lo)
        b.store(i64(n), hi)
        head, step, done = (b.function.append_basic_block(f"{lp.name}.search.{x}") for x in ("head", "step", "done"))
        b.branch(head)
        b.position_at_end(head)
        low, high = b.load(lo, typ=I64), b.load(hi, typ=I64)
        b.cbranch(b.icmp_signed("<", low, high), step, done)
        b.position_at_end(step)
        mid = b.ashr(b.add(low, high), i64(1))
        reached = b.icmp_signed(">=", b.mul(cost(mid), ctx.nthreads), goal)
        b.store(b.select(reached, mid, b.load(hi, typ=I64)), hi)
        b.store(b.select(reached, b.load(lo, typ=I64), b.add(mid, i64(1))), lo)
        b.branch(head)
        b.position_at_end(done)
        return b.load(lo, typ=I64)
    return bound(ctx.tid), bound(b.add(ctx.tid, i64(1)))


def _reduction(sc: Scratch, into: Tensor):
    """The body that sums the threads' partial copies into `into`: its rows (the
    leading extents collapsed) split between the threads, copy of the first copy, then
    add of each other one, by the catalog's primitives."""
    from ..descriptors import BinaryDesc, UnaryDesc      # the catalog, above the jit layer

    cols = into.shape[-1] if into.shape else 1
    rows = max(1, sc.count // max(cols, 1))
    tile = max(1, min(rows, 4096 // max(cols, 1)))

    def body(ctx: Context) -> None:
        b = ctx.b
        size = ctx.size["rows"]
        out = ctx.tensor(into.name).ptr
        first = b.mul(ctx.start["rows"], i64(cols))
        dst = b.gep(out, [first], source_etype=sc.dtype.storage)
        part = ctx.copies(sc.name)

        def copy_of(t):
            return b.gep(part, [b.add(b.mul(t, i64(sc.count)), first)], source_etype=sc.dtype.storage)
        ctx.call(ctx.primitive(UnaryDesc("copy", size, cols, sc.dtype, sc.dtype)), [(copy_of(i64(0)), cols),
                                                                                      (dst, cols)])
        add = ctx.primitive(BinaryDesc("add", size, cols, sc.dtype))
        with IRLoop(b, 1, ctx.nthreads, name="partials") as t:
            ctx.call(add, [(dst, cols), (copy_of(t.i), cols), (dst, cols)])
    return Loop("rows", rows, (body,), tile=tile, parallel=True)
