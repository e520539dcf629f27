"""Compile LLVM IR for a target: optimise (new pass manager), emit object code or
assembly, and link object code into memory (MCJIT engines) and free it again.

Everything goes through object code so that a freshly compiled kernel and one
read back from the disk cache take the same path into memory.

`link(obj, target, symbols)` returns a Code: the symbols' addresses, valid as long as the
Code object lives. Code is linked into engines of up to GROUP objects; a Code holds its
engine, and an engine that no Code refers to any more is disposed of, which unmaps its
code (one engine per target for the whole process kept every distinct kernel, ~29 KB
each, forever). Grouping spreads an engine's own cost (its target machine: ~50 KB and
~0.9 ms to create) over its objects; a Code kept alive keeps the rest of its group
mapped, at most GROUP - 1 objects. `load_object` links code for the whole process.
"""
from __future__ import annotations

import contextlib
import os
import re
import threading
import weakref

from llvmlite import binding as llvm
from llvmlite.binding import ffi as _llvm_ffi
from llvmlite import ir

from . import objfile
from .targets import Target

_lock = threading.RLock()
_initialised = False
_machines: dict[tuple[Target, int], llvm.TargetMachine] = {}
_all_targets = False
GROUP = 16               # objects linked into one engine


# fork() while another thread is inside LLVM (parsing, optimising, linking into an engine)
# would hand the child LLVM's state half-changed and the locks held forever: llvmlite's
# own (held around every call into LLVM, garbage collection's disposals included) and
# ours. The fork waits for both (ours first, the order every compile takes them); the
# child, the forking thread alone, releases them.
# llvmlite's lock is not public API: without it, only ours is waited for
_llvm_lock = getattr(_llvm_ffi.lib, "_lock", None) or contextlib.nullcontext()


def _fork_prepare() -> None:
    _lock.acquire()
    _llvm_lock.__enter__()


def _fork_done() -> None:
    _llvm_lock.__exit__(None, None, None)
    _lock.release()


os.register_at_fork(before=_fork_prepare, after_in_parent=_fork_done, after_in_child=_fork_done)


def _init(target: Target | None = None) -> None:
    """Initialise LLVM's native backend once, and all the others on the first target
    of another architecture (NVPTX, AArch64)."""
    global _initialised, _all_targets
    if not _initialised:
        llvm.initialize_native_target()
        llvm.initialize_native_asmprinter()
        _initialised = True
    if target is not None and not _all_targets and target.triple.split("-")[0] != \
            llvm.get_process_triple().split("-")[0]:
        llvm.initialize_all_targets()
        llvm.initialize_all_asmprinters()
        _all_targets = True


def target_machine(target: Target, opt: int = 3, jit: bool = True) -> llvm.TargetMachine:
    """The (cached) LLVM target machine. The CPU name and full feature string are
    always given: with cpu='generic' vector FMAs become scalar `fmaf` calls.
    jit: code for this process's MCJIT engine (static relocations and the target's
    code model, Target.code_model; large+pic crashed in RuntimeDyld), else code to link
    into libraries (position independent, the default code model)."""
    key = (target, opt, jit)
    with _lock:
        tm = _machines.get(key)
        if tm is None:
            _init(target)
            llvm_target = llvm.Target.from_triple(target.triple)
            reloc, model = ("static", target.code_model) if jit else ("pic", "default")
            tm = llvm_target.create_target_machine(cpu=target.cpu, features=target.features,
                                                   opt=opt, reloc=reloc, codemodel=model)
            _machines[key] = tm
        return tm


# The emitters already write vector code with hoisted addresses and hand-unrolled
# loops, so a short clean-up pipeline is all they need. The standard O1-O3
# pipelines cost 22-30 ms per small kernel here (this list: ~2 ms), and O3's
# loop unroller spills register tiles.
# sroa and instcombine twice: a composite passes each inlined primitive its argument table
# through an inttoptr(ptrtoint(alloca)) that only instcombine folds, after which a second
# sroa turns the table's row strides into constants (a 3x3 conv composite: 128 -> 22 imuls,
# 1950 -> 1539 instructions; attention 58 -> 8 imuls).
_PASSES = ("always_inliner", "sroa", "instruction_combine", "sroa", "instruction_combine", "simplify_cfg",
           "dead_code_elimination")


def _with_helpers(text: str, helpers: str) -> str:
    """Replace the declarations of the target's IR helpers the module calls with their
    definitions (Target.ir_helpers)."""
    used = []
    for definition in re.split(r"\n(?=define )", helpers.strip()):
        name = re.search(r'@("[^"]+"|[\w.]+)', definition).group(1)
        pattern = re.compile(r"^declare [^\n]*@" + re.escape(name) + r"\(.*$", re.M)
        if pattern.search(text):
            text = pattern.sub("", text)
            used.append(definition)
    return text + "\n" + "\n".join(used)


RUNNING_VSCALE = "tpp.running_vscale"     # the one function left without a declared length


def _with_vscale(text: str, vscale: int) -> str:
    """Declare the vector length on every function defined (llvmlite's IR builder cannot
    write this attribute): with it, LLVM lowers fixed-length vectors to SVE. The helper
    that reads the running length keeps none, so its llvm.vscale is not folded."""
    return re.sub(r'^(define (?![^\n]*@"?' + re.escape(RUNNING_VSCALE) + r')[^\n]*?\))\s*\{',
                  rf"\1 vscale_range({vscale},{vscale}) {{", text, flags=re.M)


def optimise(module: ir.Module | str, target: Target, opt: int = 3) -> llvm.ModuleRef:
    """Parse, verify and clean up a module (opt 0 skips the clean-up)."""
    tm = target_machine(target, opt)
    text = str(module)
    if target.ir_helpers:
        text = _with_helpers(text, target.ir_helpers)
    if target.fixed_vscale:
        text = _with_vscale(text, target.fixed_vscale)
    with _lock:
        mod = llvm.parse_assembly(text)
        mod.triple = target.triple
        mod.data_layout = str(tm.target_data)
        mod.verify()
        if opt > 0:
            mpm, pb = _pipeline(target, opt)
            mpm.run(mod, pb)
        return mod


_pipelines: dict[tuple[Target, int], tuple] = {}


def _pipeline(target: Target, opt: int) -> tuple:
    """The clean-up pass manager and its pass builder, made once per target and level:
    LLVM keeps ~4 KB of each pair made even after llvmlite disposes of it (measured: a
    new pair per kernel grew the process by 4.3 KB a kernel, for good)."""
    key = (target, opt)
    found = _pipelines.get(key)
    if found is None:
        pb = llvm.create_pass_builder(target_machine(target, opt),
                                      llvm.create_pipeline_tuning_options(speed_level=opt))
        mpm = llvm.create_new_module_pass_manager()
        for name in _PASSES:
            getattr(mpm, f"add_{name}_pass")()
        found = _pipelines[key] = (mpm, pb)
    return found


@contextlib.contextmanager
def _codegen_flags(target: Target):
    """The target's codegen options (Target.codegen_flags: (on, off) pairs), switched on
    around one emit: LLVM keeps them in process-wide flags, so they are set back after."""
    for on, _ in target.codegen_flags:
        llvm.set_option("tpp", on)
    try:
        yield
    finally:
        for _, off in target.codegen_flags:
            llvm.set_option("tpp", off)


def emit_object(mod: llvm.ModuleRef, target: Target, opt: int = 3, jit: bool = True) -> bytes:
    """Object code for load_object, or (jit=False) for linking into a library."""
    with _lock, _codegen_flags(target):
        return target_machine(target, opt, jit).emit_object(mod)


def emit_assembly(mod: llvm.ModuleRef, target: Target, opt: int = 3) -> str:
    with _lock, _codegen_flags(target):
        return target_machine(target, opt).emit_assembly(mod)


def emit_code(mod: llvm.ModuleRef, target: Target, opt: int = 3) -> bytes:
    """What the target's loader takes: object code, or assembly text (PTX) as bytes."""
    if target.output == "assembly":
        return emit_assembly(mod, target, opt).encode()
    return emit_object(mod, target, opt)


class _Engine:
    """An MCJIT engine and the symbols linked into it. Disposed of (its code unmapped) when
    garbage: only the Code objects of its objects, and the open group, refer to it."""

    def __init__(self, target: Target):
        _init()
        # a target machine of its own: the engine takes ownership and disposes of it
        tm = llvm.Target.from_triple(target.triple).create_target_machine(
            cpu=target.cpu, features=target.features, opt=3, reloc="static", codemodel=target.code_model)
        self.engine = llvm.create_mcjit_compiler(llvm.parse_assembly(""), tm)
        self.symbols: set[str] = set()
        self.objects = 0


class Code:
    """Linked object code: `addresses[symbol]`, valid while this object lives."""

    __slots__ = ("addresses", "_engine", "__weakref__")

    def __init__(self, addresses: dict[str, int], engine: _Engine):
        self.addresses = addresses
        self._engine = engine


_open: dict[Target, _Engine] = {}                      # the engine taking objects, per target
_linked: weakref.WeakValueDictionary = weakref.WeakValueDictionary()   # (target, symbols) -> Code
_kept: set[Code] = set()                               # load_object's: never freed


def link(obj: bytes, target: Target, symbols: list[str]) -> Code:
    """Link object code into memory; its symbols' addresses stay valid while the Code lives.
    Code for the same symbols still alive is shared, not linked twice."""
    if not target.runs_on_host:
        raise RuntimeError(f"tpp: target {target.name} cannot run on this machine")
    key = (target, tuple(symbols))
    with _lock:
        code = _linked.get(key)
        if code is not None:
            return code
        # RuntimeDyld trusts what it links: code that is not the target's, or lacks a
        # symbol, would crash the process here instead of raising
        reason = objfile.problem(obj, target, symbols)
        if reason:
            raise RuntimeError(f"tpp: refusing to link object code for {target.name}: {reason}")
        group = _open.get(target)
        # a symbol defined twice in one engine resolves to one of them: start another
        if group is None or group.objects >= GROUP or not group.symbols.isdisjoint(symbols):
            group = _open[target] = _Engine(target)
        group.engine.add_object_file(llvm.ObjectFileRef.from_data(obj))
        group.engine.finalize_object()
        group.objects += 1
        group.symbols.update(symbols)
        addrs = {s: group.engine.get_function_address(s) for s in symbols}
        # an address past the user half is no address: the loader's mapping failed (seen
        # under an address-space limit: MAP_FAILED-based garbage that would crash a call)
        if any(a >= 1 << 63 for a in addrs.values()):
            raise MemoryError(f"tpp: the JIT could not map the code of {', '.join(symbols)} "
                              "(out of address space?)")
        missing = [s for s, a in addrs.items() if not a]
        if missing:
            raise RuntimeError(f"tpp: symbols missing from object code: {missing}")
        code = _linked[key] = Code(addrs, group)
        if group.objects >= GROUP:
            del _open[target]           # full: it lives on as long as its Code objects
    return code


def load_object(obj: bytes, target: Target, symbols: list[str]) -> dict[str, int]:
    """Link object code for the rest of the process; returns each symbol's address."""
    code = link(obj, target, symbols)
    with _lock:
        _kept.add(code)
    return code.addresses


def llvm_version() -> str:
    return ".".join(map(str, llvm.llvm_version_info))
