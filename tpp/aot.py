"""Ahead-of-time kernel libraries: no Python at run time.

    tpp-aot kernels.json --target x86-avx2 --out build/mykernels [--name mykernels]

reads a spec (JSON, or TOML on Python >= 3.11): a list of named descriptors,

    {"kernels": [
      {"name": "relu_64", "kind": "unary", "op": "relu", "m": 64, "n": 64},
      {"name": "add_row", "kind": "binary", "op": "add", "m": 64, "n": 64, "broadcast": "row"},
      {"name": "gemm_64", "kind": "gemm", "m": 64, "n": 64, "k": 64, "beta": 0}
    ]}

(the other keys are the keyword arguments of tpp.unary / binary / gemm / brgemm; an
equation is {"kind": "equation", "m", "n", "nodes": [...], "out_dtype"} with the node
list of tpp.expr.from_nodes, the C ABI's tpp_eq_node array as JSON;
a top-level "prefix": "mylib_", or --prefix, is put before every kernel's name),
and writes NAME.o (every kernel, compiled for the target), libNAME.a, libNAME.so
(linked by the system C compiler, `cc` or $CC) and NAME.h, which declares one C
function per kernel, `void relu_64(const tpp_tensor *args)`, with its operands
documented. The kernels are the ones the JIT would build for that target.
Kernel names that a C program cannot safely link (keywords, the C library's names,
reserved and runtime names: tpp/cnames.py) are refused, and every error in a spec is
one line naming the file, the kernel and the field.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from llvmlite import binding as llvm

from . import binary_desc, brgemm_desc, cnames, gemm_desc, unary_desc
from .dispatch import check_offered, resolve_target
from .irgen import module_for
from .errors import DescriptorError, TargetError, TppError
from .expr import from_nodes
from .jit import compiler
from .kernels import fields
from .jit.targets import Target

BUILDERS = {"unary": unary_desc, "binary": binary_desc, "gemm": gemm_desc, "brgemm": brgemm_desc}
_C_TYPES = {"f32": "float", "f64": "double", "bf16": "uint16_t (bf16)", "i8": "int8_t", "u8": "uint8_t",
            "i32": "int32_t", "i64": "int64_t", "bool": "uint8_t (0/1)"}
_SPEC_KEYS = ("kernels", "prefix")
# The Python builders convert these with float() / bool() before the descriptor sees them
# ("x" raises a bare ValueError, "false" is True): a spec's values are checked by the
# descriptor's own field rules first, so the rule and its message are the descriptor's.
_REAL_FIELDS = ("alpha", "beta")
_FLAG_FIELDS = ("trans_a", "trans_b", "b_vnni", "argidx")
# Library names whose files would shadow the system's: -lNAME, or NAME.h on the -I path
_SYSTEM_NAMES = frozenset("""
tpp c m pthread dl rt util resolv crypt gcc gcc_s atomic
assert complex ctype errno fenv float inttypes iso646 limits locale math setjmp signal stdalign
stdarg stdatomic stdbit stdbool stdckdint stddef stdint stdio stdlib stdnoreturn string tgmath
threads time uchar wchar wctype unistd fcntl dirent sched semaphore dlfcn poll malloc alloca
memory strings termios syslog
""".split())


class SpecError(DescriptorError):
    """A kernel spec that names no kernel (the message says which entry and why)."""


@dataclass(frozen=True)
class Spec:
    """A spec file's contents: its kernel tables and the prefix of their C names."""
    kernels: list[dict]
    prefix: str = ""


def load_spec(path: str | Path) -> Spec:
    """The kernel list and name prefix of a JSON or TOML spec file; SpecError (naming the
    file and what is wrong) for one that is not UTF-8, not JSON/TOML, or not a spec."""
    path = Path(path)
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError(f"{path}: not UTF-8 text (byte {raw[exc.start]:#04x} at offset "
                        f"{exc.start})") from None
    if path.suffix == ".toml":
        try:
            import tomllib
        except ImportError:
            raise SpecError(f"{path}: TOML specs need Python >= 3.11 (tomllib); use JSON") from None
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise SpecError(f"{path}: not valid TOML: {exc}") from None
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise SpecError(f"{path}: not valid JSON: {exc}") from None
        except RecursionError:
            raise SpecError(f"{path}: not a spec: nested too deeply") from None
    prefix = ""
    if isinstance(data, dict):
        unknown = [k for k in data if k not in _SPEC_KEYS]
        if unknown:
            raise SpecError(f"{path}: unknown top-level key {unknown[0]!r} (a spec has: "
                            f"{', '.join(_SPEC_KEYS)})")
        prefix = data.get("prefix", "")
        if not isinstance(prefix, str):
            raise SpecError(f"{path}: 'prefix' must be a string, got {prefix!r}")
        data = data.get("kernels")
    if not isinstance(data, list) or not all(isinstance(k, dict) for k in data):
        raise SpecError(f"{path}: expected a list of kernel tables, or {{\"kernels\": [...]}}")
    return Spec(data, prefix)


def read_spec(path: str | Path) -> list[dict]:
    """The kernel list of a JSON or TOML spec file."""
    return load_spec(path).kernels


def check_name(name: str, given: str | None = None) -> None:
    """Refuse a kernel's C name (prefix + the spec's `given` name) that a program could not
    safely link."""
    why = cnames.problem(name)
    if why and given in (None, name):
        raise SpecError(f"kernel name {name!r} {why}; rename it, or give every name a prefix "
                        f"(tpp-aot --prefix mylib_, or \"prefix\" in the spec)")
    if why:
        raise SpecError(f"kernel name {name!r} (prefix + {given!r}) {why}; choose another prefix")


def descriptor(entry: dict, prefix: str = "", index: int | None = None):
    """(C name, descriptor) for one spec entry; the name is prefix + its 'name'."""
    entry = dict(entry)
    name = entry.pop("name", None)
    where = f"kernel {name}" if isinstance(name, str) else "kernel" if index is None else f"kernel #{index}"
    if not isinstance(name, str) or not cnames.IDENTIFIER.match(name):
        raise SpecError(f"{where}: 'name' must be a C identifier, got {name!r}")
    check_name(prefix + name, name)
    kind = entry.pop("kind", None)
    if kind == "equation":
        return prefix + name, _equation(entry, where)
    if kind not in BUILDERS:
        raise SpecError(f"{where}: 'kind' must be one of {', '.join(BUILDERS)}, equation, got {kind!r}")
    args = []
    if kind in ("unary", "binary"):
        if "op" not in entry:
            raise SpecError(f"{where}: a {kind} kernel needs 'op' (e.g. \"relu\", \"add\")")
        args.append(entry.pop("op"))
    try:
        dims = [entry.pop(d) for d in ("m", "n", "k")[:3 if kind in ("gemm", "brgemm") else 2]]
    except KeyError as missing:
        raise SpecError(f"{where}: missing {missing}") from None
    for key in ("broadcast", "epilogue"):
        value = entry.get(key)
        if isinstance(value, list):
            entry[key] = tuple(value)
        elif key == "epilogue" and key in entry and not isinstance(value, str):
            raise SpecError(f"{where}: 'epilogue' must be a step name or a list of step names, got {value!r}")
    what = args[0] if args and isinstance(args[0], str) else kind
    try:
        for key in _REAL_FIELDS:
            if key in entry and not (key == "alpha" and entry[key] is None):   # None: the kind's default
                fields.real(what, key, entry[key])
        for key in _FLAG_FIELDS:
            if key in entry:
                fields.flag(what, key, entry[key])
        return prefix + name, BUILDERS[kind](*args, *dims, **entry)
    except TypeError as exc:            # an unknown key
        raise SpecError(f"{where}: {exc}") from None
    except TppError as exc:
        raise type(exc)(f"{where}: {exc}") from None


def _equation(entry: dict, where: str):
    """An equation kernel: "m", "n", "nodes" (tpp.expr.from_nodes' node list), "out_dtype"."""
    unknown = set(entry) - {"m", "n", "nodes", "out_dtype"}
    if unknown:
        raise SpecError(f"{where}: unknown keys for an equation: {', '.join(sorted(unknown))} "
                        "(it takes m, n, nodes, out_dtype)")
    for key in ("m", "n", "nodes"):
        if key not in entry:
            raise SpecError(f"{where}: an equation needs {key!r}")
    try:
        return from_nodes(entry["nodes"], entry["m"], entry["n"], entry.get("out_dtype"), "equation")
    except TppError as exc:
        raise type(exc)(f"{where}: {exc}") from None


def _object(named: list[tuple[str, object]], target: Target) -> bytes:
    """One object file with every kernel, each under its own name, each optimised alone
    (as the JIT builds it)."""
    # modules link only within one LLVM context, and optimise() may parse each kernel into
    # a context of its own: each optimised kernel is read back into one shared context
    context = llvm.create_context()
    merged = None
    for name, desc in named:
        text = str(compiler.optimise(str(module_for(desc, target, name)), target))
        mod = llvm.parse_assembly(text, context=context)
        if merged is None:
            merged = mod
        else:
            merged.link_in(mod)
    return compiler.emit_object(merged, target, jit=False)       # position independent: linked into .so


def _operand_doc(op) -> str:
    shape = f"{op.rows} x {op.cols}" + (f", row stride {op.ld} (compiled in)" if op.ld is not None else "")
    bcast = "" if op.bcast.name == "FULL" else f", {op.bcast.name.lower()} broadcast"
    return f"{'out' if op.output else 'in '} {op.name}: {_C_TYPES.get(op.dtype.value, op.dtype.value)}, {shape}{bcast}"


def header(library: str, named: list[tuple[str, object]], target: Target) -> str:
    guard = f"{library.upper()}_H"
    lines = [f"/* {library}.h: tpp kernels compiled ahead of time for {target.name} ({target.triple}).",
             " * Each takes its operands as an array of tpp_tensor {data, ld} (ld: row stride in",
             " * elements), in the order listed; written by tpp-aot. */",
             f"#ifndef {guard}", f"#define {guard}", "", "#include <stdint.h>", "",
             "#ifdef __cplusplus", 'extern "C" {', "#endif", "",
             "#ifndef TPP_TENSOR_DEFINED", "#define TPP_TENSOR_DEFINED",
             "typedef struct tpp_tensor {", "    void *data;", "    int64_t ld;", "} tpp_tensor;", "#endif", ""]
    for name, desc in named:
        lines.append(f"/* {desc}")
        ops = desc.operands()
        for i, op in enumerate(ops):
            lines.append(f" *   args[{i}] {_operand_doc(op)}")
        if desc.kind == "brgemm":
            extra = {"stride": "{NULL, count}", "offset": "{int64 offsets of A_i, count}, {int64 offsets of B_i, count}",
                     "address": "{NULL, count} (args[0], args[1]: arrays of count block pointers)"}[desc.variant]
            lines.append(f" *   args[{len(ops)}...] {extra}")
        lines += [" */", f"void {name}(const tpp_tensor *args);", ""]
    lines += ["#ifdef __cplusplus", "}", "#endif", "", f"#endif /* {guard} */", ""]
    return "\n".join(lines)


def _run(cmd: list[str], what: str, hint: str = "") -> None:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True)
    except OSError as exc:
        raise RuntimeError(f"cannot run {what} {cmd[0]!r}: {exc.strerror}{hint}") from None
    if proc.returncode != 0:
        raise RuntimeError(f"{shlex.join(cmd)} failed{hint}:\n{proc.stderr.strip()}")


def _cross_hint(target: Target) -> str:
    """Why the system's cc may fail to link the target's objects, and what to do."""
    arch = target.triple.split("-")[0]
    if arch == platform.machine() or "CC" in os.environ:
        return ""
    return (f" (the objects are {arch} code: set CC to a C compiler for {target.triple}, e.g. "
            f"CC={arch}-linux-gnu-gcc, or pass --no-shared)")


def build(spec: list[dict], target=None, out: str | Path = ".", library: str = "tppkernels",
          shared: bool = True, static: bool = True, prefix: str = "") -> dict[str, Path]:
    """Compile the spec's kernels for `target` into OUT/LIBRARY.o, .h, lib*.a and lib*.so,
    each under prefix + its name."""
    return build_named(describe(spec, prefix), target, out, library, shared, static)


def describe(spec: list[dict], prefix: str = "",
             source: str | Path | None = None) -> list[tuple[str, object]]:
    """(C name, descriptor) for each entry; errors name `source` (the spec file) first."""
    try:
        if not isinstance(prefix, str) or (prefix and not cnames.IDENTIFIER.match(prefix)):
            raise SpecError(f"the name prefix {prefix!r} must be the start of a C identifier")
        return [descriptor(entry, prefix, i) for i, entry in enumerate(spec)]
    except TppError as exc:
        if source is None:
            raise
        raise type(exc)(f"{source}: {exc}") from None


def check_library(library: str, target: Target) -> None:
    if not isinstance(library, str) or not cnames.IDENTIFIER.match(library):
        raise SpecError(f"library name {library!r} must be a C identifier")
    if library in _SYSTEM_NAMES:
        raise SpecError(f"library name {library!r} is the runtime's or the system's (lib{library}, "
                        f"{library}.h would shadow it); choose another with --name")
    if target.output != "object":
        raise TargetError(f"target {target.name} produces PTX text, not object code: tpp-aot builds "
                          f"C libraries for CPU targets (x86-*, aarch64-*); GPU kernels are loaded "
                          f"with tpp.cuda")


def build_named(named: list[tuple[str, object]], target=None, out: str | Path = ".", library: str = "tppkernels",
                shared: bool = True, static: bool = True) -> dict[str, Path]:
    """build() for (C name, descriptor) pairs."""
    target = resolve_target(target)
    check_library(library, target)
    if not named:
        raise SpecError("the spec lists no kernels")
    seen = {f"{library.upper()}_H"}          # the header's include guard is a macro
    for name, desc in named:
        check_name(name)
        if name in seen:
            raise SpecError(f"kernel name {name!r} appears twice (or is the header's guard)")
        seen.add(name)
    for name, desc in named:
        check_offered(desc, target, f"kernel {name}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"object": out / f"{library}.o", "header": out / f"{library}.h"}
    paths["object"].write_bytes(_object(named, target))
    paths["header"].write_text(header(library, named, target))
    if static:
        paths["static"] = out / f"lib{library}.a"
        paths["static"].unlink(missing_ok=True)
        _run([os.environ.get("AR", "ar"), "rcs", str(paths["static"]), str(paths["object"])],
             "the archiver ($AR)")
    if shared:
        paths["shared"] = out / f"lib{library}.so"
        cc = shlex.split(os.environ.get("CC", "cc"))    # a cross compiler for other architectures
        _run(cc + ["-shared", "-o", str(paths["shared"]), str(paths["object"])], "the C compiler ($CC)",
             _cross_hint(target))
    return paths


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="tpp-aot", description="Compile tpp kernels ahead of time into a C library.")
    p.add_argument("spec", help="JSON (or TOML) file listing named kernel descriptors")
    p.add_argument("--target", default=None, help="target name (default: this machine's), e.g. x86-avx2")
    p.add_argument("--out", default=".", help="output directory (default: .)")
    p.add_argument("--name", default=None, help="library name (default: the spec file's stem)")
    p.add_argument("--prefix", default=None,
                   help="put before every kernel's C name, e.g. mylib_ (default: the spec's "
                        "\"prefix\", or none)")
    p.add_argument("--no-shared", action="store_true", help="skip the shared library")
    p.add_argument("--no-static", action="store_true", help="skip the static library")
    args = p.parse_args(argv)
    name = args.name or re.sub(r"\W", "_", Path(args.spec).stem)
    try:
        spec = load_spec(args.spec)
        named = describe(spec.kernels, spec.prefix if args.prefix is None else args.prefix, args.spec)
        paths = build_named(named, args.target, args.out, name, not args.no_shared, not args.no_static)
    except (TppError, RuntimeError, OSError) as exc:
        print(f"tpp-aot: {exc}", file=sys.stderr)
        return 1
    for what, path in paths.items():
        print(f"{what}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
