"""Ahead-of-time kernel libraries: no Python at run time.

    tpp-aot kernels.json --target x86-avx2 --out build/mykernels [--name mykernels]

reads a spec (JSON, or TOML on Python >= 3.11): a list of named descriptors,

    {"kernels": [
      {"name": "relu_64", "kind": "unary", "op": "relu", "m": 64, "n": 64},
      {"name": "add_row", "kind": "binary", "op": "add", "m": 64, "n": 64, "broadcast": "row"},
      {"name": "gemm_64", "kind": "gemm", "m": 64, "n": 64, "k": 64, "beta": 0}
    ]}

(the other keys are the keyword arguments of tpp.unary / binary / gemm / brgemm),
and writes NAME.o (every kernel, compiled for the target), libNAME.a, libNAME.so
(linked by the system C compiler, `cc` or $CC) and NAME.h, which declares one C
function per kernel, `void relu_64(const tpp_tensor *args)`, with its operands
documented. The kernels are the ones the JIT would build for that target.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

from . import binary_desc, brgemm_desc, gemm_desc, unary_desc
from .dispatch import check_offered, resolve_target
from .irgen import module_for
from .errors import DescriptorError, TppError
from .jit import compiler
from .jit.targets import Target

BUILDERS = {"unary": unary_desc, "binary": binary_desc, "gemm": gemm_desc, "brgemm": brgemm_desc}
_C_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_C_TYPES = {"f32": "float", "f64": "double", "bf16": "uint16_t (bf16)", "i8": "int8_t", "u8": "uint8_t",
            "i32": "int32_t", "i64": "int64_t", "bool": "uint8_t (0/1)"}


class SpecError(DescriptorError):
    """A kernel spec that names no kernel (the message says which entry and why)."""


def read_spec(path: str | Path) -> list[dict]:
    """The kernel list of a JSON or TOML spec file."""
    path = Path(path)
    text = path.read_text()
    if path.suffix == ".toml":
        try:
            import tomllib
        except ImportError as exc:
            raise SpecError(f"{path}: TOML specs need Python >= 3.11 (tomllib); use JSON") from exc
        data = tomllib.loads(text)
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise SpecError(f"{path}: not valid JSON: {exc}") from None
    kernels = data.get("kernels") if isinstance(data, dict) else data
    if not isinstance(kernels, list) or not all(isinstance(k, dict) for k in kernels):
        raise SpecError(f"{path}: expected a list of kernel tables, or {{\"kernels\": [...]}}")
    return kernels


def descriptor(entry: dict):
    """(name, descriptor) for one spec entry."""
    entry = dict(entry)
    name = entry.pop("name", None)
    if not isinstance(name, str) or not _C_NAME.match(name):
        raise SpecError(f"kernel {name!r}: 'name' must be a C identifier")
    kind = entry.pop("kind", None)
    if kind not in BUILDERS:
        raise SpecError(f"kernel {name}: 'kind' must be one of {', '.join(BUILDERS)}, got {kind!r}")
    args = []
    if kind in ("unary", "binary"):
        if "op" not in entry:
            raise SpecError(f"kernel {name}: a {kind} kernel needs 'op' (e.g. \"relu\", \"add\")")
        args.append(entry.pop("op"))
    try:
        dims = [entry.pop(d) for d in ("m", "n", "k")[:3 if kind in ("gemm", "brgemm") else 2]]
    except KeyError as missing:
        raise SpecError(f"kernel {name}: missing {missing}") from None
    if "broadcast" in entry and isinstance(entry["broadcast"], list):
        entry["broadcast"] = tuple(entry["broadcast"])
    try:
        return name, BUILDERS[kind](*args, *dims, **entry)
    except TypeError as exc:            # an unknown key
        raise SpecError(f"kernel {name}: {exc}") from None
    except TppError as exc:
        raise type(exc)(f"kernel {name}: {exc}") from None


def _object(named: list[tuple[str, object]], target: Target) -> bytes:
    """One object file with every kernel, each under its own name."""
    merged = None
    for name, desc in named:
        mod = compiler.optimise(str(module_for(desc, target, name)), target)
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


def _run(cmd: list[str]) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{shlex.join(cmd)} failed:\n{proc.stderr.strip()}")


def build(spec: list[dict], target=None, out: str | Path = ".", library: str = "tppkernels",
          shared: bool = True, static: bool = True) -> dict[str, Path]:
    """Compile the spec's kernels for `target` into OUT/LIBRARY.o, .h, lib*.a and lib*.so."""
    return build_named([descriptor(entry) for entry in spec], target, out, library, shared, static)


def build_named(named: list[tuple[str, object]], target=None, out: str | Path = ".", library: str = "tppkernels",
                shared: bool = True, static: bool = True) -> dict[str, Path]:
    """build() for (C name, descriptor) pairs."""
    if not _C_NAME.match(library):
        raise SpecError(f"library name {library!r} must be a C identifier")
    target = resolve_target(target)
    if not named:
        raise SpecError("the spec lists no kernels")
    seen = set()
    for name, desc in named:
        if name in seen:
            raise SpecError(f"kernel name {name!r} appears twice")
        seen.add(name)
        check_offered(desc, target, f"kernel {name}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"object": out / f"{library}.o", "header": out / f"{library}.h"}
    paths["object"].write_bytes(_object(named, target))
    paths["header"].write_text(header(library, named, target))
    if static:
        paths["static"] = out / f"lib{library}.a"
        paths["static"].unlink(missing_ok=True)
        _run([os.environ.get("AR", "ar"), "rcs", str(paths["static"]), str(paths["object"])])
    if shared:
        paths["shared"] = out / f"lib{library}.so"
        cc = shlex.split(os.environ.get("CC", "cc"))    # a cross compiler for other architectures
        _run(cc + ["-shared", "-o", str(paths["shared"]), str(paths["object"])])
    return paths


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="tpp-aot", description="Compile tpp kernels ahead of time into a C library.")
    p.add_argument("spec", help="JSON (or TOML) file listing named kernel descriptors")
    p.add_argument("--target", default=None, help="target name (default: this machine's), e.g. x86-avx2")
    p.add_argument("--out", default=".", help="output directory (default: .)")
    p.add_argument("--name", default=None, help="library name (default: the spec file's stem)")
    p.add_argument("--no-shared", action="store_true", help="skip the shared library")
    p.add_argument("--no-static", action="store_true", help="skip the static library")
    args = p.parse_args(argv)
    name = args.name or re.sub(r"\W", "_", Path(args.spec).stem)
    try:
        paths = build(read_spec(args.spec), args.target, args.out, name, not args.no_shared, not args.no_static)
    except (TppError, RuntimeError, OSError) as exc:
        print(f"tpp-aot: {exc}", file=sys.stderr)
        return 1
    for what, path in paths.items():
        print(f"{what}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
