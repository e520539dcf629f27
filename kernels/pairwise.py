"""Pairwise summation over blocks: sums whose rounding error grows like log n.

A sum of `length` items is cut into blocks of `block` items. The caller's code sums
each block into fresh accumulators (a few additions per accumulator: its choice);
the block sums are then combined the way a binary counter propagates carries: after
block k the sums held at the levels below k's lowest zero bit are added to it, and
the result is kept at the level above them. Level l holds the sum of 2^l blocks, so
every item reaches the total through at most log2(length / block) further additions,
as in numpy's pairwise sum (blocks of 128 items over 8 accumulators: ~16 + log2 n).
The levels live in a small array in the stack frame, touched once per block.
"""
from __future__ import annotations

from typing import Callable

from llvmlite import ir

from ..jit.loops import I64, Loop, i64
from ..jit.vec import PTR, declare

State = list[ir.Value]
# part(start, count) -> the sum of items [start, start + count) in fresh accumulators;
# start is an i64 value, count a Python int (every block has the same one).
Part = Callable[[ir.Value, int], State]
Merge = Callable[[State, State], State]


def pairwise(b: ir.IRBuilder, length: int, block: int, part: Part, merge: Merge) -> State:
    """The sum of items [0, length), blocked and combined pairwise; one part() call
    for everything when there are fewer than two blocks."""
    blocks = length // block
    if blocks < 2:
        return part(i64(0), length)
    levels = blocks.bit_length()
    with Loop(b, 0, blocks, name="block") as blk:
        s = part(b.mul(blk.i, i64(block)), block)
        stacks = _stacks(b, [x.type for x in s], levels)
        # k's trailing ones are the occupied levels that merge into this block's sum
        carries = b.call(declare(b.module, "llvm.cttz.i64", I64, [I64, ir.IntType(1)]),
                         [b.xor(blk.i, i64(-1)), ir.Constant(ir.IntType(1), 0)])
        with Loop(b, 0, carries, carry=s, name="carry") as up:
            held = [b.load(_level(b, st, x.type, up.i), typ=x.type) for st, x in zip(stacks, s)]
            up.next(*merge(held, list(up.vars)))
        for st, x in zip(stacks, up.vars):
            b.store(x, _level(b, st, x.type, carries))
    # the occupied levels at the end are the bits of the (static) block count
    total = part(i64(blocks * block), length - blocks * block) if length % block else None
    for level in range(levels):
        if blocks >> level & 1:
            held = [b.load(_level(b, st, x.type, i64(level)), typ=x.type) for st, x in zip(stacks, s)]
            total = held if total is None else merge(held, total)
    return total


def _stacks(b: ir.IRBuilder, types: list[ir.Type], levels: int) -> list[ir.Value]:
    """One array of `levels` slots per state value, in the entry block (an alloca in a
    loop would take more stack on each turn)."""
    out = []
    with b.goto_entry_block():
        for t in types:
            slot = b.alloca(ir.ArrayType(t, levels), name="levels")
            slot.align = 64
            out.append(b.inttoptr(b.ptrtoint(slot, I64), PTR))
    return out


def _level(b: ir.IRBuilder, stack: ir.Value, t: ir.Type, level: ir.Value) -> ir.Value:
    return b.gep(stack, [level], source_etype=t)
