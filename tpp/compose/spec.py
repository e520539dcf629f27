"""The composition layer's data: what a composite is, before any code.

A composite is ONE compiled function over named tensors. Its body is a sequence
of nodes run by every thread of a team:

- a callable `fn(ctx)` emits code (a primitive call, a hook that initialises or
  finalises carried state);
- a `Loop` runs its own body sequence once per iteration (or per tile);
- `BARRIER` makes every thread wait for the others (between phases: pack, then
  compute).

Loops are data: a static extent cut into tiles (the body is emitted once per
tile size, so the last, shorter tile gets code compiled for its size: no edge
branches in the ops), or a range read from data at run time (`start`/`stop`
callables, e.g. a CSR row's nonzeros). Parallel loops split their iterations
between the threads, by count or by a cumulative weight held in a tensor
(`weight=`, e.g. a CSR row pointer: shares of equal nonzeros); nested parallel
loops are collapsed into one range. Scratch buffers are named: per thread
(stack where small, heap otherwise, a failed allocation reported as
MemoryError), per call (allocated once by the call path and reused), or
per-thread partial results summed into an output tensor at the end.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Union

from ..jit.types import DType

Body = tuple  # of nodes: Loop, callables fn(ctx), BARRIER


@dataclass(frozen=True)
class Tensor:
    """A named operand: its dtype, shape and element strides (the code is compiled for
    them; the call path checks that the arrays match). Output tensors are written."""
    name: str
    dtype: DType
    shape: tuple[int, ...]
    strides: tuple[int, ...] | None = None     # elements; None: C order
    output: bool = False
    alias: str | None = None     # an input this output may be exactly (in place: same address)

    def __post_init__(self) -> None:
        if self.strides is None:
            strides, step = [], 1
            for extent in reversed(self.shape):
                strides.append(step)
                step *= max(extent, 1)
            object.__setattr__(self, "strides", tuple(reversed(strides)))
        if len(self.strides) != len(self.shape):
            raise ValueError(f"tensor {self.name!r}: {len(self.shape)} extents but {len(self.strides)} strides")

    @property
    def ld(self) -> int:
        """The row stride of a 2-D view (what primitives take as ld)."""
        return self.strides[-2] if len(self.shape) >= 2 else max(self.shape[-1] if self.shape else 1, 1)

    def span(self) -> int:
        """Elements from the first to one past the last (0 when empty)."""
        if any(e == 0 for e in self.shape):
            return 0
        return 1 + sum((e - 1) * s for e, s in zip(self.shape, self.strides))


@dataclass(frozen=True)
class Loop:
    """`for name in range(extent)` in tiles of `tile`, or over [start(ctx), stop(ctx)).

    The body sees ctx.index[name] (the tile's number), ctx.start[name] (its first
    element) and ctx.size[name] (a Python int: `tile`, or the last tile's size where
    it is shorter; 1 for data-driven ranges)."""
    name: str
    extent: int | None = None
    body: Body = ()
    tile: int = 1
    parallel: bool = False
    weight: str | None = None        # tensor of cumulative weights (len extent + 1) for the shares
    start: Callable | None = None    # data-driven range: fn(ctx) -> i64 value
    stop: Callable | None = None

    def __post_init__(self) -> None:
        dynamic = self.start is not None or self.stop is not None
        if dynamic == (self.extent is not None):
            raise ValueError(f"loop {self.name!r}: give a static extent or a start/stop range, not both")
        if dynamic and (self.start is None or self.stop is None):
            raise ValueError(f"loop {self.name!r}: a data-driven range needs both start and stop")
        if dynamic and (self.tile != 1 or self.parallel):
            raise ValueError(f"loop {self.name!r}: data-driven ranges run whole, on one thread")
        if self.extent is not None and self.extent < 0 or self.tile < 1:
            raise ValueError(f"loop {self.name!r}: extent {self.extent} / tile {self.tile} out of range")
        if self.weight is not None and not self.parallel:
            raise ValueError(f"loop {self.name!r}: only a parallel loop is split by weight")

    @property
    def blocks(self) -> int:
        return -(-self.extent // self.tile) if self.extent else 0

    @property
    def edge(self) -> int:
        """Size of the last tile."""
        return self.extent - (self.blocks - 1) * self.tile if self.extent else 0


class _Barrier:
    def __repr__(self) -> str:
        return "BARRIER"


BARRIER = _Barrier()


@dataclass(frozen=True)
class Scratch:
    """A named buffer of `count` elements.

    scope "thread": private to each thread, made inside the function (on the stack up
    to STACK_BYTES, else malloc'ed; a failure stops the call with MemoryError naming
    `what`); "call": one buffer per call shared by the team (the call path allocates
    it once per thread of the caller and reuses it); "partial": one copy per thread,
    zeroed at the start, whose sum is stored into the output tensor `into` at the end
    (same element count, C order)."""
    name: str
    dtype: DType
    count: int
    scope: str = "thread"
    what: str = ""
    into: str | None = None

    def __post_init__(self) -> None:
        if self.scope not in ("thread", "call", "partial"):
            raise ValueError(f"scratch {self.name!r}: scope must be thread, call or partial, got {self.scope!r}")
        if (self.scope == "partial") != (self.into is not None):
            raise ValueError(f"scratch {self.name!r}: a partial result names the tensor it is summed into")
        if self.count < 0:
            raise ValueError(f"scratch {self.name!r}: negative size {self.count}")

    @property
    def bytes(self) -> int:
        return self.count * self.dtype.itemsize


STACK_BYTES = 16 << 10     # thread scratch up to this size lives on the worker's stack


Node = Union[Loop, Callable, _Barrier]


@dataclass(frozen=True)
class Composite:
    """What the layer compiles: tensors (inputs, outputs), scratch, and the body every
    thread runs."""
    tensors: tuple[Tensor, ...]
    body: Body
    scratch: tuple[Scratch, ...] = field(default=())

    def __post_init__(self) -> None:
        names = [t.name for t in self.tensors] + [s.name for s in self.scratch]
        if len(set(names)) != len(names):
            raise ValueError(f"composite: tensor and scratch names must be unique, got {names}")
        for s in self.scratch:
            if s.into is not None:
                target = next((t for t in self.tensors if t.name == s.into), None)
                if target is None or not target.output:
                    raise ValueError(f"scratch {s.name!r}: {s.into!r} is not an output tensor")
                if target.span() != s.count or target.strides != Tensor("", s.dtype, target.shape).strides:
                    raise ValueError(f"scratch {s.name!r}: {s.into!r} must be C-ordered with {s.count} elements")
        _check_body(self.body, top=True, names=set(t.name for t in self.tensors))

    def parallel_extent(self) -> int:
        """The most iterations any parallel range has: more threads than that idle."""
        most = 1
        for node in _walk(self.body):
            if isinstance(node, Loop) and node.parallel:
                total = 1
                for lp in collapsed(node):
                    total *= lp.blocks
                most = max(most, total)
        return most

    def tensor(self, name: str) -> Tensor:
        for t in self.tensors:
            if t.name == name:
                return t
        raise KeyError(name)


def collapsed(loop: Loop) -> list[Loop]:
    """A parallel loop and the parallel loops nested directly in it (each the only node
    of its parent's body): one range of iterations, split between the threads."""
    chain = [loop]
    while len(chain[-1].body) == 1 and isinstance(chain[-1].body[0], Loop) and chain[-1].body[0].parallel:
        chain.append(chain[-1].body[0])
    return chain


def _walk(body: Body):
    for node in body:
        yield node
        if isinstance(node, Loop):
            yield from _walk(node.body)


def _check_body(body: Body, top: bool, names: set[str]) -> None:
    for node in body:
        if node is BARRIER:
            if not top:
                raise ValueError("composite: a barrier may only stand in the top-level body")
        elif isinstance(node, Loop):
            if node.parallel:
                if not top:
                    raise ValueError(f"loop {node.name!r}: a parallel loop must stand in the top-level body "
                                     "(or be the only node of a parallel loop's body)")
                chain = collapsed(node)
                if any(lp.weight for lp in chain) and len(chain) > 1:
                    raise ValueError(f"loop {node.name!r}: a weighted parallel loop cannot be collapsed")
                if node.weight is not None and node.weight not in names:
                    raise ValueError(f"loop {node.name!r}: no tensor {node.weight!r} holds its weights")
                _check_body(chain[-1].body, top=False, names=names)
            else:
                _check_body(node.body, top=False, names=names)
        elif not callable(node):
            raise ValueError(f"composite: a body holds loops, callables and BARRIER, got {node!r}")
