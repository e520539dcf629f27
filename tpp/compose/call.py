"""The one call path of every composite.

An op turns its arguments into a descriptor (a frozen dataclass, the cache key)
whose `composite(target)` says what to compile, and binds arrays to the
composite's tensors by name. From there this module does the rest:

- `program(desc)`: the compiled team function and what its arguments need
  (spans, alignment, scratch), cached per (descriptor, target);
- `Program.check(arrays)`: the full argument checks, with errors that name the
  argument;
- a geometry memo (`Memo`): a later call whose arrays have the shapes, strides
  and dtypes of a checked one skips the checks and the descriptor (only the
  addresses are new: alignment and overlap are re-checked, cheaply);
- a per-thread memo of the last argument table (the same arrays again: the table
  stands) and of the call-scope scratch buffers;
- the worker pool: the team runs the function once per thread (pool.run_team),
  and a status word turns a failed allocation into MemoryError.
"""
from __future__ import annotations

import os
import threading
from collections import OrderedDict

import numpy as np

from .. import cabi, config, pool
from ..dispatch import check_runnable, current_target, functions, resolve_target
from ..dtypes import to_numpy
from ..errors import AliasError, ArgumentError, DTypeError, ShapeError
from ..recent import Recent
from .emit import CONTROL_WORDS, COUNTER, STATUS, Layout, emit_composite


class CompositeDesc:
    """Mixin for an op's descriptor: `composite(target)` builds what to compile; the
    layer emits it (dispatch calls desc.emit)."""

    def emit(self, module, name: str, target) -> None:
        emit_composite(module, name, self.composite(target), target)


def threads_arg(what: str, threads) -> int:
    """A composite's `threads=`: None for TPP_NUM_THREADS, else a positive int up to the
    documented maximum (config.Config.max_threads: a few per CPU; more only slow it down)."""
    if threads is None:
        return pool.threads()
    if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)) or threads < 1:
        raise ArgumentError(f"{what}: threads must be a positive int or None, got {threads!r}")
    most = config.get().max_threads
    if threads > most:
        raise ArgumentError(f"{what}: threads={int(threads)} is more than the maximum of {most} "
                            f"({config.THREADS_PER_CORE} per CPU available to this process)")
    return int(threads)


def check_rows(what: str, name: str, x: np.ndarray, hint: str = "") -> None:
    """The layout every composite reads an array in: unit element stride along the last
    axis, whole positive strides on the others, rows at least a row wide apart."""
    if x.ndim and x.shape[-1] > 1 and x.strides[-1] != x.itemsize:
        raise ShapeError(f"{what}: argument '{name}' must have unit element stride (strides[-1] == "
                         f"{x.itemsize} bytes){hint}, got strides {x.strides}; use np.ascontiguousarray")
    steps = [st for st, e in zip(x.strides[:-1], x.shape[:-1]) if e > 1]
    rows_apart = x.ndim < 2 or x.shape[-2] <= 1 or x.strides[-2] >= x.shape[-1] * x.itemsize
    if any(st <= 0 or st % x.itemsize for st in steps) or not rows_apart:
        raise ShapeError(f"{what}: argument '{name}' must have a positive row stride of at least "
                         f"{x.shape[-1]} elements that is a whole number of elements, got strides {x.strides}")


def aligned(count: int, dtype, alignment: int = 64) -> np.ndarray:
    """An uninitialised 1-D array whose data starts on an `alignment`-byte boundary
    (vector loads that straddle cache lines are slower)."""
    dtype = np.dtype(dtype)
    raw = np.empty(count * dtype.itemsize + alignment, np.uint8)
    start = -raw.ctypes.data % alignment
    return raw[start:start + count * dtype.itemsize].view(dtype)


class Program:
    """A compiled composite and everything its calls need to know."""

    def __init__(self, what: str, desc, target):
        composite = desc.composite(target)
        self.what, self.desc = what, desc
        self.layout = Layout(composite)
        self.tensors = composite.tensors
        self.dtypes = [np.dtype(to_numpy(t.dtype)) for t in self.tensors]
        self.spans = [t.span() * dt.itemsize for t, dt in zip(self.tensors, self.dtypes)]
        self.outputs = [k for k, t in enumerate(self.tensors) if t.output]
        self.lds = [t.ld for t in self.tensors]
        names = [t.name for t in self.tensors]
        # (output, operand) pairs that may share memory only as exactly the same array
        self.in_place = {(o, names.index(self.tensors[o].alias)) for o in self.outputs
                         if self.tensors[o].alias in names
                         and self.tensors[names.index(self.tensors[o].alias)].strides == self.tensors[o].strides}
        self.max_threads = composite.parallel_extent()
        self.code = functions(desc, target)         # the function's code lives with the Program
        [address] = self.code.addresses.values()
        self.fn = cabi.ffi.cast(cabi.NEST, address)

    def team(self, threads: int) -> int:
        """Threads worth starting: no more than the widest parallel range."""
        return max(1, min(threads, self.max_threads))

    # ---- checks ----------------------------------------------------------------------
    def fits(self, addresses: list[int]) -> bool:
        """Element-aligned, and no output overlaps another operand (else check() raises)."""
        if any(p % dt.itemsize for p, dt in zip(addresses, self.dtypes)):
            return False
        return self._clash(addresses) is None

    def _clash(self, addresses: list[int]) -> tuple[int, int] | None:
        """An (output, operand) pair that share memory other than as an allowed in-place use."""
        for o in self.outputs:
            lo, hi = addresses[o], addresses[o] + self.spans[o]
            for k, (p, span) in enumerate(zip(addresses, self.spans)):
                if k != o and span and self.spans[o] and hi > p and p + span > lo:
                    if (o, k) in self.in_place and p == lo:
                        continue
                    return o, k
        return None

    def check(self, arrays: list) -> list[int]:
        """Every check, raising the error that names the argument; the addresses."""
        what = self.what
        for t, dt, x in zip(self.tensors, self.dtypes, arrays):
            if not isinstance(x, np.ndarray):
                raise TypeError(f"{what}: argument '{t.name}' must be a numpy array, got {type(x).__name__}")
            if x.dtype != dt:
                raise DTypeError(f"{what}: argument '{t.name}' must have dtype {dt}, got {x.dtype}")
            if x.shape != t.shape:
                raise ShapeError(f"{what}: argument '{t.name}' must have shape {t.shape}, got {x.shape}")
            strides = tuple(s // x.itemsize if s % x.itemsize == 0 else None for s in x.strides)
            if any(e > 1 and got != want for e, got, want in zip(x.shape, strides, t.strides)):
                raise ShapeError(f"{what}: argument '{t.name}' must have element strides {t.strides}, "
                                 f"got {strides}")
            if not x.flags.aligned:
                raise ShapeError(f"{what}: argument '{t.name}' is not aligned to its element size")
            if t.output and not x.flags.writeable:
                raise ValueError(f"{what}: output '{t.name}' is read-only")
        addresses = [cabi.data_address(x) for x in arrays]
        clash = self._clash(addresses)
        if clash is not None:
            o, k = clash
            allowed = [self.tensors[k2].name for o2, k2 in self.in_place if o2 == o]
            raise AliasError(f"{what}: output '{self.tensors[o].name}' overlaps '{self.tensors[k].name}'; "
                             + (f"only exact in-place use (out is '{allowed[0]}' itself) is allowed" if allowed
                                else "outputs must not share memory with other operands"))
        return addresses

    # ---- running ---------------------------------------------------------------------
    def run(self, addresses: list[int], team: int) -> None:
        """Run on operands at these addresses; remembered as this thread's last call."""
        entries, control = _scratch_for(self, team)
        table = cabi.tensors([*zip(addresses, self.lds), *entries])
        _local.last = (self, addresses, team, table, control)
        self.launch(table, control, team)

    def launch(self, table, control: np.ndarray, team: int) -> None:
        control[STATUS] = 0
        control[COUNTER] = 0
        pool.run_team(self.fn, table, team)
        if control[STATUS]:
            sc = self.layout.local[int(control[STATUS]) - 1]
            raise MemoryError(f"{self.what}: no memory for the {sc.bytes} bytes of {sc.what or sc.name}")


# bounded like dispatch's kernels (TPP_KERNEL_CACHE_SIZE); a Program in use (a call in
# progress, a memo, a thread's scratch) keeps its code however old it is
_programs = Recent(lambda: config.get().kernel_cache_size)
_programs_lock = threading.Lock()


def program(what: str, desc, target=None) -> Program:
    """desc's Program for the target (default: the current one), compiled once."""
    target = resolve_target(target)
    key = (desc, target)
    found = _programs.get(key)
    if found is None:
        check_runnable(what, target)      # before its plan is emitted for a target it may not fit
        with _programs_lock:
            found = _programs.find(key)
            if found is None:
                found = Program(what, desc, target)
            _programs.put(key, found)
    return found


def _fork_child() -> None:
    """After fork, in the child: a lock a parent thread held while compiling stays held."""
    global _programs_lock
    _programs_lock = threading.Lock()


os.register_at_fork(after_in_child=_fork_child)


# ---- per-thread memo: call-scope scratch and the last argument table ------------------
_local = threading.local()
SCRATCH_KEPT = 4         # programs whose call-scope buffers a thread keeps


def _scratch_for(prog: Program, team: int) -> tuple[tuple, np.ndarray]:
    """This thread's call-scope and partial buffers for prog with `team` threads, as
    (address, ld) entries (ending with the control block), and the control block."""
    kept = getattr(_local, "scratch", None)
    if kept is None:
        kept = _local.scratch = OrderedDict()
    key = (prog, team)
    found = kept.get(key)
    if found is None:
        arrays = [aligned(sc.count * (team if sc.scope == "partial" else 1), to_numpy(sc.dtype))
                  for sc in prog.layout.shared]
        control = aligned(CONTROL_WORDS, np.int64)
        control[:] = 0
        entries = tuple((cabi.data_address(x) if x.size else 0, 1) for x in arrays)
        found = kept[key] = (entries + ((cabi.data_address(control), 1),), control, arrays)
        while len(kept) > SCRATCH_KEPT:
            kept.popitem(last=False)
        _local.last = None            # a table may point into a dropped buffer
    else:
        kept.move_to_end(key)
    return found[0], found[1]


class Memo:
    """Geometries already checked: (the op's parameters, target, each array's shape,
    strides and dtype) -> Program."""

    def __init__(self, size: int = 1024):
        self.size = size
        self._found: dict = {}

    @staticmethod
    def key(params, arrays) -> tuple:
        return (params, current_target(), *((x.shape, x.strides, x.dtype) for x in arrays))

    def remember(self, params, arrays, prog: Program) -> None:
        if all(type(x) is np.ndarray for x in arrays):
            if len(self._found) >= self.size:
                self._found.clear()
            self._found[self.key(params, arrays)] = prog

    def call(self, params, arrays, threads: int) -> bool:
        """Run a remembered geometry on these arrays; False: take the checked path."""
        if not all(type(x) is np.ndarray for x in arrays):
            return False
        prog = self._found.get(self.key(params, arrays))
        if prog is None or not all(arrays[k].flags.writeable for k in prog.outputs):
            return False
        addresses = [cabi.data_address(x) for x in arrays]
        team = prog.team(threads)
        last = getattr(_local, "last", None)
        if last is not None and last[0] is prog and last[1] == addresses and last[2] == team:
            prog.launch(last[3], last[4], team)     # this thread's last call: its table stands
            return True
        if prog.fits(addresses):
            prog.run(addresses, team)
            return True
        return False


def run_checked(memo: Memo | None, params, prog: Program, arrays: list, threads: int, given=None) -> None:
    """Check the arrays against prog, remember the geometry, run. `given`: the caller's
    arrays where `arrays` are views of them at the same addresses (x.T, a row as (1, n)):
    the memo keys on what a later call will pass."""
    addresses = prog.check(arrays)
    if memo is not None:
        memo.remember(params, arrays if given is None else given, prog)
    prog.run(addresses, prog.team(threads))
