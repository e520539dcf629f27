"""A small PTX interpreter for the tests: runs the PTX that tpp emits on the CPU, so
GPU kernels are checked against numpy on machines without a GPU (CI has none).

It covers the instructions LLVM's NVPTX backend produces for tpp's kernels (integer
and float arithmetic, compares, selects, conversions, loads and stores in the
param, global and shared spaces, branches) and the collective ones: bar.sync (the
block), ldmatrix and mma.sync m16n8k16 with bf16 inputs (the warp), executed as the
PTX ISA defines their fragments; cp.async's bytes land in shared memory at the
wait that retires their group (or, on request, at once: the two extremes a GPU
may show, so a missing wait or a stage overwritten too early changes the result).
Each thread is a generator that runs until it reaches a collective; when
every thread the collective needs is waiting there, it runs for all of them at
once. By default one warp runs ahead until a barrier stops it (a missing barrier
changes the result); on request the warps move in lockstep, collective by
collective.
An instruction it does not know raises NotImplementedError, so a kernel that
grows new instructions fails loudly rather than passing wrongly. The instructions'
semantics are in ptxsim_isa.py; this file is the machine.

Memory: `Memory.alloc` hands out global buffers at fake addresses; `launch` runs a
grid block after block (shared memory fresh per block).
"""
from __future__ import annotations

import bisect
import re
from dataclasses import dataclass, field

import numpy as np

from ptxsim_isa import OPS, WARP_OPS, _mask


class Memory:
    """Global memory: buffers at fake, 256-byte aligned addresses."""

    def __init__(self):
        self.bases: list[int] = []
        self.buffers: list[bytearray] = []
        self.next = 0x1000_0000

    def alloc(self, data: np.ndarray | int) -> int:
        raw = bytearray(data if isinstance(data, int) else np.ascontiguousarray(data).tobytes())
        base = self.next
        self.next += (len(raw) + 0x10FF) // 0x100 * 0x100
        self.bases.append(base)
        self.buffers.append(raw)
        return base

    def find(self, address: int, size: int) -> tuple[bytearray, int]:
        i = bisect.bisect_right(self.bases, address) - 1
        if i < 0 or address + size > self.bases[i] + len(self.buffers[i]):
            raise IndexError(f"global access of {size} bytes at {address:#x} outside every buffer")
        return self.buffers[i], address - self.bases[i]

    def read(self, address: int, size: int) -> int:
        buf, off = self.find(address, size)
        return int.from_bytes(buf[off:off + size], "little")

    def write(self, address: int, size: int, value: int) -> None:
        buf, off = self.find(address, size)
        buf[off:off + size] = (value & _mask(8 * size)).to_bytes(size, "little")

    def array(self, address: int, shape, dtype) -> np.ndarray:
        dtype = np.dtype(dtype)
        count = int(np.prod(shape))
        buf, off = self.find(address, count * dtype.itemsize)
        return np.frombuffer(bytes(buf[off:off + count * dtype.itemsize]), dtype).reshape(shape)


@dataclass
class _Instr:
    op: list[str]             # the opcode split at dots
    args: list[str]
    guard: str | None = None
    negate: bool = False
    line: str = ""


@dataclass
class Kernel:
    name: str
    params: list[str]
    body: list[_Instr]
    labels: dict[str, int]
    shared: dict[str, int] = field(default_factory=dict)     # name -> size in bytes


def _split_args(text: str) -> list[str]:
    out, depth, cur = [], 0, ""
    for ch in text:
        if ch in "{[":
            depth += 1
        elif ch in "}]":
            depth -= 1
        if ch == "," and depth == 0:
            out.append(cur.strip())
            cur = ""
        else:
            cur += ch
    if cur.strip():
        out.append(cur.strip())
    return out


def parse(ptx: str, name: str | None = None) -> Kernel:
    shared = {m.group(1): int(m.group(2)) for m in re.finditer(r"\.shared\s+\.align\s+\d+\s+\.b8\s+(\w+)\[(\d+)\]", ptx)}
    entry = re.search(r"\.entry\s+(\w+)\s*\((.*?)\)\s*(?:\.\w+[^{]*)?\{", ptx, re.S)
    if entry is None or (name and entry.group(1) != name):
        raise ValueError("no .entry in the PTX")
    params = re.findall(r"\.param\s+[^,\n]*?(\w+_param_\d+)", entry.group(2))
    start = entry.end()
    depth, end = 1, start
    while depth:
        depth += {"{": 1, "}": -1}.get(ptx[end], 0)
        end += 1
    body, labels = [], {}
    text = " ".join(line.split("//")[0] for line in ptx[start:end - 1].split("\n"))
    for chunk in text.split(";"):
        line = chunk.strip()
        while True:                                   # labels before the statement
            m = re.match(r"^(\$?[\w.$]+):\s*", line)
            if not m:
                break
            labels[m.group(1)] = len(body)
            line = line[m.end():]
        if not line or line.startswith("{") or line.startswith("}"):
            continue
        if line.startswith("."):
            m = re.match(r"\.shared\s+\.align\s+\d+\s+\.b8\s+(\w+)\[(\d+)\]", line)
            if m:
                shared[m.group(1)] = int(m.group(2))
            continue
        guard, negate = None, False
        if line.startswith("@"):
            g, line = line.split(None, 1)
            negate = g.startswith("@!")
            guard = g.lstrip("@!")
        parts = line.split(None, 1)
        body.append(_Instr(parts[0].split("."), _split_args(parts[1]) if len(parts) > 1 else [], guard, negate,
                           line))
    return Kernel(entry.group(1), params, body, labels, shared)


class _Thread:
    def __init__(self, sim: "_Block", tid: int):
        self.sim, self.tid = sim, tid
        self.regs: dict[str, int] = {}
        self.pc = 0
        self.done = False
        self.cp_copies: list[tuple] = []          # cp.async copies not yet committed
        self.cp_groups: list[list[tuple]] = []    # committed groups, oldest first

    # ---- operands ----------------------------------------------------------------------
    def value(self, text: str, bits: int) -> int:
        if text.startswith("%"):
            if text in self.sim.special:
                return self.sim.special[text](self.tid)
            return self.regs.get(text, 0) & _mask(bits)
        if text.startswith("0f"):
            return int(text[2:], 16)
        if text.startswith("0d"):
            return int(text[2:], 16)
        if text.endswith("U") and (text[:-1].isdigit() or text.startswith("0x")):
            text = text[:-1]
        if text.startswith("0x"):
            return int(text, 16) & _mask(bits)
        if re.fullmatch(r"-?\d+", text):
            return int(text) & _mask(bits)
        if text in self.sim.symbols:
            return self.sim.symbols[text]
        raise NotImplementedError(f"operand {text!r}")

    def set(self, text: str, bits: int, value: int) -> None:
        if text != "_":
            self.regs[text] = value & _mask(bits)

    def address(self, text: str) -> int:
        inner = text.strip("[]")
        m = re.fullmatch(r"([%\w$.]+)(?:\+(-?\d+))?", inner)
        base = m.group(1)
        base_value = self.sim.symbols[base] if base in self.sim.symbols else self.value(base, 64)
        return base_value + int(m.group(2) or 0)



class _Block:
    """One thread block: its threads, shared memory and the scheduler."""

    def __init__(self, kernel: Kernel, memory: Memory, params: list[int], block: int, block_dim: int,
                 grid_dim: int, cp_async_lands: str = "at_wait", schedule: str = "greedy"):
        self.kernel, self.memory = kernel, memory
        self.cp_async_lands, self.schedule = cp_async_lands, schedule
        self.shared = {}
        self.symbols = {p: i for i, p in enumerate(kernel.params)}       # param "addresses": indexes
        self.param_values = params
        offset = 0x100
        for name, size in kernel.shared.items():
            self.symbols[name] = offset
            offset += (size + 255) // 256 * 256
        self.smem = bytearray(offset)
        self.special = {"%tid.x": lambda t: t, "%ntid.x": lambda t: block_dim, "%ctaid.x": lambda t: block,
                        "%nctaid.x": lambda t: grid_dim, "%laneid": lambda t: t % 32,
                        "%tid.y": lambda t: 0, "%tid.z": lambda t: 0, "%ctaid.y": lambda t: 0,
                        "%ctaid.z": lambda t: 0, "%ntid.y": lambda t: 1, "%ntid.z": lambda t: 1,
                        "%nctaid.y": lambda t: 1, "%nctaid.z": lambda t: 1}
        self.threads = [_Thread(self, t) for t in range(block_dim)]

    # ---- memory spaces -----------------------------------------------------------------
    def load(self, space: str, address: int, size: int) -> int:
        if space == "shared":
            if address < 0 or address + size > len(self.smem):
                raise IndexError(f"shared access at {address:#x}")
            return int.from_bytes(self.smem[address:address + size], "little")
        if space == "param":
            return self.param_values[address]
        return self.memory.read(address, size)

    def store(self, space: str, address: int, size: int, value: int) -> None:
        if space == "shared":
            if address < 0 or address + size > len(self.smem):
                raise IndexError(f"shared access at {address:#x}")
            self.smem[address:address + size] = (value & _mask(8 * size)).to_bytes(size, "little")
        else:
            self.memory.write(address, size, value)

    # ---- running -----------------------------------------------------------------------
    def run(self) -> None:
        gens = {t.tid: self._execute(t) for t in self.threads}
        waiting: dict[int, tuple] = {}
        while gens:
            runnable = self._runnable(gens, waiting)
            for tid in runnable:
                try:
                    waiting[tid] = next(gens[tid])
                except StopIteration:
                    del gens[tid]
            if not gens:
                break
            released = self._collectives(waiting, gens)
            if not released and not runnable:
                raise RuntimeError(f"deadlock: threads wait at {sorted(set(w[1] for w in waiting.values()))}")
            for tid in released:
                del waiting[tid]

    def _runnable(self, gens: dict, waiting: dict) -> list[int]:
        """The threads that run to their next collective in this round: all of them
        ("lockstep"), or only the lowest warp that can move ("greedy": one warp runs
        ahead until a barrier stops it, so shared data used without one is wrong)."""
        ready = [tid for tid in gens if tid not in waiting]
        if self.schedule == "lockstep" or not ready:
            return ready
        first = min(tid // 32 for tid in ready)
        return [tid for tid in ready if tid // 32 == first]

    def _collectives(self, waiting: dict, live: dict) -> list[int]:
        released = []
        bars = [tid for tid, w in waiting.items() if w[0] == "bar"]
        if bars and len(bars) == len(live):
            released += bars
        for warp in range(0, len(self.threads), 32):
            lanes = [t for t in range(warp, warp + 32) if t in waiting and waiting[t][0] == "warp"]
            alive = [t for t in range(warp, warp + 32) if t in live]
            if lanes and len(lanes) == len(alive):
                pcs = {waiting[t][1] for t in lanes}
                if len(pcs) != 1 or len(lanes) != 32:
                    raise RuntimeError(f"warp {warp // 32} diverged at a warp-wide instruction: {pcs}")
                instr = waiting[lanes[0]][2]
                WARP_OPS[instr.op[0]](self, [self.threads[t] for t in lanes], instr)
                released += lanes
        return released

    def _execute(self, t: _Thread):
        body, labels = self.kernel.body, self.kernel.labels
        while t.pc < len(body):
            ins = body[t.pc]
            t.pc += 1
            if ins.guard is not None and bool(t.regs.get(ins.guard, 0)) == ins.negate:
                continue
            head = ins.op[0]
            if head == "bra":
                t.pc = labels[ins.args[0]]
            elif head == "ret":
                return
            elif head == "bar" or head == "barrier":
                yield ("bar", t.pc - 1, ins)
            elif head in WARP_OPS:
                yield ("warp", t.pc - 1, ins)
            else:
                handler = OPS.get(head)
                if handler is None:
                    raise NotImplementedError(f"PTX instruction {ins.line.strip()!r}")
                handler(self, t, ins)


def launch(ptx: str, memory: Memory, params: list[int], grid: int, block: int,
           cp_async_lands: str = "at_wait", schedule: str = "greedy") -> None:
    """Run the kernel in `ptx` on a 1-D grid (blocks one after another). cp_async_lands:
    "at_wait" or "at_issue" (see ptxsim_isa._op_cp); schedule: "lockstep" or "greedy"
    (see _Block._runnable)."""
    if cp_async_lands not in ("at_wait", "at_issue") or schedule not in ("lockstep", "greedy"):
        raise ValueError(f"cp_async_lands {cp_async_lands!r}, schedule {schedule!r}")
    kernel = parse(ptx)
    if len(params) != len(kernel.params):
        raise TypeError(f"{kernel.name} takes {len(kernel.params)} parameters, got {len(params)}")
    for blk in range(grid):
        _Block(kernel, memory, params, blk, block, grid, cp_async_lands, schedule).run()
