"""Dispatch: descriptor + target -> Kernel, through two cache levels.

In memory: a lock-protected map from (descriptor, target), bounded by
TPP_KERNEL_CACHE_SIZE (recent.py; a kernel dropped from it is freed, code and all, once
nothing else holds it). On disk: object code keyed by the package version, a hash of the
code generators' sources, the llvmlite/LLVM versions, the target, the descriptor, the opt
level and the numpy array layout the wrapper reads.
"""
from __future__ import annotations

import importlib.util
import os
import sys
import threading
import weakref
from pathlib import Path

import llvmlite
from llvmlite import ir

from . import arrayabi, config
from .jit import cache, compiler, objfile
from .jit import host as chip
from .errors import TargetError
from .irgen import generate_ir, module_for  # noqa: F401  (generate_ir: dispatch's public name)
from .jit.targets import Target
from .kernel import Kernel
from .recent import Recent

__version__ = "0.1.0"
_lock = threading.Lock()
_memory = Recent(lambda: config.get().kernel_cache_size)     # (descriptor, target) -> Kernel
_found, _tick = _memory.found, _memory.tick
_targets: dict[tuple, Target] = {}       # (TPP_TARGET, TPP_HOST_LIMIT) -> target
_source_hash: str | None = None
_module = module_for                      # the older name (tests build modules through it)
_entries: dict[int, int] = {}             # operand count -> native Python entry address


def current_target() -> Target:
    cfg = config.get()
    t = _targets.get((cfg.target, cfg.host_limit))
    if t is None:
        try:
            t = Target.named(cfg.target) if cfg.target else Target.host()
        except ValueError as exc:     # the same error as target="bogus" (resolve_target)
            raise TargetError(f"{exc} (TPP_TARGET)") from None
        _targets[(cfg.target, cfg.host_limit)] = t
    return t


def resolve_target(target) -> Target:
    if target is None:
        return current_target()
    if isinstance(target, Target):
        return target
    try:
        return Target.named(target)
    except ValueError as exc:        # the jit layer knows no tpp errors
        raise TargetError(str(exc)) from None


def sources_hash() -> str:
    global _source_hash
    if _source_hash is None:
        from . import jit, kernels
        here = Path(__file__).parent
        folders = [Path(jit.__file__).parent, Path(kernels.__file__).parent, here]
        # the packages beside tpp/ are found, not imported (importing tpp.ops here cost
        # ~20 ms on first dispatch)
        for name in ("tpp.ops", "tpp.sparse"):
            spec = importlib.util.find_spec(name)
            if spec is not None and spec.submodule_search_locations:
                folders.append(Path(list(spec.submodule_search_locations)[0]))
        files = [p for d in folders for p in d.rglob("*.py")]
        _source_hash = cache.hash_sources(files)
    return _source_hash


def get_kernel(desc, target=None) -> Kernel:
    target = resolve_target(target)
    key = (desc, target)
    kernel = _found.get(key)          # Recent.get, inlined: a hit is a lookup and a stamp
    if kernel is not None:
        kernel._used = _tick()
        return kernel
    with _lock:
        kernel = _memory.find(key)
        if kernel is None:
            kernel = _build(desc, target)
        _memory.put(key, kernel)
    return kernel


def _generator(desc) -> str | None:
    """What emits desc's code, for the disk key: its class by module and name (a
    descriptor's repr names its class only), and for a class defined outside tpp (a
    user's composite) its module's source digest, which sources_hash does not cover.
    None where that source cannot be read (a class made in __main__ of an interactive
    session): such code is not stored on disk."""
    cls = type(desc)
    name = f"{cls.__module__}.{cls.__qualname__}"
    if cls.__module__.split(".")[0] == __name__.split(".")[0]:
        return name
    path = getattr(sys.modules.get(cls.__module__), "__file__", None)
    if not path or not os.path.isfile(path):
        return None
    return f"{name}:{cache.hash_sources([Path(path)])}"


def _object_code(parts: dict, make_module,
                 suffixes: tuple[str, ...] = ("",)) -> tuple[bytes, str, str | None]:
    """(object code, symbol, IR text or None) for a module, from disk or compiled. An
    entry read back must be the target's code defining symbol + each suffix: anything
    else (objfile.problem) would crash the linker, so it is discarded and rebuilt."""
    cfg = config.get()
    if parts["target"].runs_on_host:       # the code is tuned to this chip's caches
        parts = {**parts, "caches": chip.signature()}
    storable = True
    if "descriptor" in parts:
        generator = _generator(parts["descriptor"])
        storable = generator is not None
        parts = {**parts, "generator": generator}
    disk_key = cache.make_key(version=__version__, sources=sources_hash(), llvmlite=llvmlite.__version__,
                              llvm=compiler.llvm_version(), opt=cfg.opt_level, **parts)
    symbol = "tpp_" + disk_key[:24]
    target = parts["target"]
    disk = cache.DiskCache(cfg.cache_dir) if cfg.cache and storable else None
    symbols = [symbol + s for s in suffixes]
    obj = disk.get(disk_key, lambda code: objfile.problem(code, target, symbols) is None) if disk else None
    text = None
    if obj is None:
        text = str(make_module(symbol))
        obj = compiler.emit_code(compiler.optimise(text, target, cfg.opt_level), target, cfg.opt_level)
        if disk:
            disk.put(disk_key, obj)
    return obj, symbol, text


def check_offered(desc, target: Target, what: str | None = None) -> None:
    """Raise TargetError where the target lists the descriptor's family as not offered, or
    the family has no emitter for the target's backend."""
    reason = target.unsupported_reason(desc.family) or desc.record.unsupported_reason(target.model)
    if reason:
        raise TargetError(f"{what or 'tpp ' + desc.kind}: not offered for target {target.name} yet: {reason}")


def check_runnable(what: str, target: Target) -> None:
    """Raise TargetError unless this machine runs the target's code (composites, the pool:
    they are called, never only compiled)."""
    if target.runs_on_host:
        return
    cfg = config.get()
    named = " (TPP_TARGET)" if cfg.target == target.name else ""
    kind = "a CPU target" if target.model == "simd" else "a GPU target"
    raise TargetError(f"{what}: target {target.name}{named} is {kind} this machine cannot run "
                      f"(its CPU runs {Target.host().name}); composites run on the host CPU only")


def _build(desc, target: Target) -> Kernel:
    check_offered(desc, target)
    obj, symbol, _ = _object_code({"target": target, "descriptor": desc},
                                  lambda sym: module_for(desc, target, sym))
    code = compiler.link(obj, target, [symbol]) if target.runs_on_host else None
    address = code.addresses[symbol] if code else 0
    # descriptors whose arguments are not a fixed list of 2-D arrays (BRGEMM) have no
    # native Python entry; their wrapper checks and calls in Python
    native = target.runs_on_host and desc.native_python_entry
    entry = python_entry(len(desc.operands())) if native else 0
    # no IR text kept (~10 KB a kernel): Kernel.ir generates it again when asked
    kernel = Kernel(desc, target, symbol, address, entry, dispatch=get_kernel, code=code)
    if not target.runs_on_host:
        kernel.code = obj          # PTX text or object code, for a loader elsewhere (tpp.cuda, AOT)
    return kernel


def python_entry(count: int) -> int:
    """Address of the native Python entry for kernels with `count` operands (0 if
    this Python's array layout is unknown). Built once, cached like a kernel."""
    if arrayabi.LAYOUT is None:
        return 0
    address = _entries.get(count)
    if address is None:
        host = Target.host()        # probing the CPU's features costs ~0.5 ms: only on a miss

        def make(symbol):
            module = ir.Module(name=symbol)
            module.triple = host.triple
            arrayabi.emit_entry(module, count, arrayabi.LAYOUT, symbol)
            return module
        obj, symbol, _ = _object_code({"target": host, "entry": count, "array_layout": arrayabi.LAYOUT}, make)
        address = compiler.load_object(obj, host, [symbol])[symbol]
        _entries[count] = address
    return address


def functions(desc, target=None, suffixes: tuple[str, ...] = ("",)) -> compiler.Code:
    """A composite's compiled functions: `desc.emit(module, symbol, target)` defines
    `symbol + suffix` for each suffix, with the signatures the composite documents; their
    addresses (`.addresses[symbol + suffix]`, in the order of suffixes) stay valid while
    the returned Code lives (a compose Program holds it)."""
    target = resolve_target(target)
    key = ("function", desc, target, suffixes)
    code = _functions.get(key)
    if code is None:
        with _lock:
            code = _functions.get(key)
            if code is None:
                check_runnable(f"tpp {type(desc).__name__}", target)
                obj, symbol, _ = _object_code({"target": target, "descriptor": desc},
                                              lambda sym: module_for(desc, target, sym), suffixes)
                code = _functions[key] = compiler.link(obj, target, [symbol + s for s in suffixes])
    return code


def get_functions(desc, target=None, suffixes: tuple[str, ...] = ("",)) -> list[int]:
    """The addresses of functions(...), kept for the rest of the process (raw addresses
    cannot say when they are no longer used)."""
    code = functions(desc, target, suffixes)
    with _lock:
        _pinned.add(code)
    return list(code.addresses.values())


# alive while a Program holds them (compose keeps Programs in its own bounded cache)
_functions: weakref.WeakValueDictionary = weakref.WeakValueDictionary()
_pinned: set = set()


def _fork_child() -> None:
    """After fork, in the child: a lock a parent thread held mid-build stays held there."""
    global _lock
    _lock = threading.Lock()


os.register_at_fork(after_in_child=_fork_child)


def clear_memory_cache() -> None:
    """Forget in-memory kernels (compiled code stays linked; tests use this)."""
    with _lock:
        _memory.clear()
        _functions.clear()
