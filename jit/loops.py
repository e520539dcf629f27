"""Counted loops in llvmlite IR, with loop-carried values as phis."""
from __future__ import annotations

from llvmlite import ir

I64 = ir.IntType(64)


def i64(value: int) -> ir.Constant:
    return ir.Constant(I64, value)


class Loop:
    """`for (i = start; i < stop; i += step)` with optional carried values.

        with Loop(b, start, stop, step, carry=[acc0]) as lp:
            acc = lp.vars[0]; ...; lp.next(new_acc)
        result = lp.vars[0]        # value after the loop

    `stop` is compared as `i < stop` (signed), so a step > 1 loop that must not
    overrun is written with stop = bound - step + 1 by the caller.
    """

    def __init__(self, b: ir.IRBuilder, start, stop, step=1, carry=(), name: str = "loop"):
        self.b = b
        self.start = start if isinstance(start, ir.Value) else i64(start)
        self.stop = stop if isinstance(stop, ir.Value) else i64(stop)
        self.step = step if isinstance(step, ir.Value) else i64(step)
        self.carry = list(carry)
        self.name = name
        self._next = None

    def __enter__(self) -> "Loop":
        b = self.b
        fn = b.function
        pre = b.block
        self.header = fn.append_basic_block(self.name + ".head")
        self.body = fn.append_basic_block(self.name + ".body")
        self.exit = fn.append_basic_block(self.name + ".exit")
        b.branch(self.header)
        b.position_at_end(self.header)
        self.i = b.phi(I64, name=self.name + ".i")
        self.i.add_incoming(self.start, pre)
        self.vars = []
        for v in self.carry:
            phi = b.phi(v.type)
            phi.add_incoming(v, pre)
            self.vars.append(phi)
        b.cbranch(b.icmp_signed("<", self.i, self.stop), self.body, self.exit)
        b.position_at_end(self.body)
        return self

    def next(self, *values) -> None:
        """The carried values for the next iteration."""
        self._next = list(values)

    def __exit__(self, exc_type, *_):
        if exc_type is not None:
            return False
        b = self.b
        if self.carry and self._next is None:
            raise RuntimeError("Loop with carried values needs next(...)")
        latch = b.block
        self.i.add_incoming(b.add(self.i, self.step), latch)
        for phi, v in zip(self.vars, self._next or []):
            phi.add_incoming(v, latch)
        b.branch(self.header)
        b.position_at_end(self.exit)
        return False



def fold(b: ir.IRBuilder, count: int, unroll: int, carry: list, step, name: str = "fold") -> list:
    """carry = step(i, carry) for i in range(count), as a loop over `unroll` steps per
    iteration followed by the remaining steps inline; returns the final carry."""
    main = count // unroll * unroll
    with Loop(b, 0, main, unroll, carry=carry, name=name) as lp:
        values = list(lp.vars)
        for u in range(unroll):
            values = step(b.add(lp.i, i64(u)), values)
        lp.next(*values)
    values = list(lp.vars)
    for i in range(main, count):
        values = step(i64(i), values)
    return values
