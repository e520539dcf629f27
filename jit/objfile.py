"""Is this code what a target's loader takes, with the symbols a key promises? Checked
before code read back from the disk cache is linked: MCJIT's RuntimeDyld trusts the
ELF it is handed, so garbage, an empty file or an ELF header alone crashed the process
at load. A checksum only proves the bytes are the ones written, not that they are code.

Object code (ELF64 little-endian relocatable, the machine of the target's triple):
the headers, every section and relocation inside the file, and each wanted symbol a
defined function. PTX (NVPTX targets): text with the target's .target line and an
.entry per wanted symbol. Formats: the System V gABI (ELF-64 Object File Format) and
https://docs.nvidia.com/cuda/parallel-thread-execution/.
"""
from __future__ import annotations

import re
import struct

import numpy as np

from .targets import Target

# e_machine by the triple's architecture
_MACHINES = {"x86_64": 62, "aarch64": 183}
_EHDR = struct.Struct("<16sHHIQQQIHHHHHH")          # Elf64_Ehdr
_SHDR = struct.Struct("<IIQQQQIIQQ")                # Elf64_Shdr
_SYM = np.dtype([("name", "<u4"), ("info", "u1"), ("other", "u1"), ("shndx", "<u2"),
                 ("value", "<u8"), ("size", "<u8")])  # Elf64_Sym
_RELA = np.dtype([("offset", "<u8"), ("info", "<u8"), ("addend", "<i8")])   # Elf64_Rela
ET_REL, SHT_SYMTAB, SHT_STRTAB, SHT_RELA, SHT_NOBITS, STT_FUNC = 1, 2, 3, 4, 8, 2
SHN_LORESERVE = 0xFF00


def problem(code: bytes, target: Target, symbols: list[str]) -> str | None:
    """Why `code` is not the target's code defining `symbols` (None: it is)."""
    if target.output == "assembly":
        return _ptx_problem(code, target, symbols)
    try:
        return _elf_problem(code, target, symbols)
    except (struct.error, ValueError, IndexError) as exc:    # a field pointing nowhere
        return f"malformed ELF ({exc})"


def _elf_problem(code: bytes, target: Target, symbols: list[str]) -> str | None:
    if len(code) < _EHDR.size or code[:4] != b"\x7fELF":
        return "not an ELF file"
    (ident, e_type, machine, _, _, _, shoff, _, ehsize, _, _, shentsize, shnum,
     _) = _EHDR.unpack_from(code)
    if ident[4] != 2 or ident[5] != 1:
        return "not a 64-bit little-endian ELF file"
    want = _MACHINES.get(target.triple.split("-")[0])
    if e_type != ET_REL or machine != want:
        return f"ELF type {e_type}, machine {machine}: not a relocatable object for {target.triple}"
    if ehsize != _EHDR.size or shentsize != _SHDR.size or not 0 < shnum < SHN_LORESERVE \
            or shoff + shnum * _SHDR.size > len(code):
        return "section header table missing or outside the file"
    sections = [_SHDR.unpack_from(code, shoff + i * _SHDR.size) for i in range(shnum)]
    for i, (_, kind, _, _, offset, size, link, _, _, _) in enumerate(sections):
        if kind != SHT_NOBITS and offset + size > len(code):
            return f"section {i} lies outside the file"
        if link >= shnum:
            return f"section {i} links to section {link} of {shnum}"
    tables = [i for i, s in enumerate(sections) if s[1] == SHT_SYMTAB]
    if len(tables) != 1:
        return f"{len(tables)} symbol tables"
    _, _, _, _, offset, size, link, _, _, entsize = sections[tables[0]]
    if entsize != _SYM.itemsize or size % entsize or sections[link][1] != SHT_STRTAB:
        return "malformed symbol table"
    syms = np.frombuffer(code, _SYM, size // entsize, offset)
    for i, (_, kind, _, _, r_offset, r_size, r_link, info, _, r_entsize) in enumerate(sections):
        if kind != SHT_RELA:
            continue
        if r_entsize != _RELA.itemsize or r_size % r_entsize or r_link != tables[0] or info >= shnum:
            return f"malformed relocation section {i}"
        rela = np.frombuffer(code, _RELA, r_size // r_entsize, r_offset)
        if len(rela) and ((rela["info"] >> 32).max() >= len(syms)
                          or rela["offset"].max() >= sections[info][5]):
            return f"relocation section {i} points outside its symbols or section"
    strtab = sections[link]
    names = code[strtab[4]:strtab[4] + strtab[5]]
    defined = set()
    funcs = syms[(syms["info"] & 0xF == STT_FUNC) & (syms["shndx"] > 0) & (syms["shndx"] < shnum)]
    for name, shndx, value, size in zip(*(funcs[f].tolist() for f in ("name", "shndx", "value", "size"))):
        end = names.find(b"\0", name)
        if name < len(names) and end >= 0 and value + size <= sections[shndx][5]:
            defined.add(names[name:end])
    missing = [s for s in symbols if s.encode() not in defined]
    return f"defines no function {', '.join(missing)}" if missing else None


def _ptx_problem(code: bytes, target: Target, symbols: list[str]) -> str | None:
    try:
        text = code.decode("ascii")
    except UnicodeDecodeError:
        return "not PTX text (not ASCII)"
    if "\0" in text or not re.search(rf"^\.target {re.escape(target.cpu)}\b", text, re.M):
        return f"not PTX for {target.cpu} (no .target {target.cpu} line)"
    if not text.rstrip().endswith("}"):
        return "PTX text cut short (does not end with a function's closing brace)"
    missing = [s for s in symbols if not re.search(rf"\.entry {re.escape(s)}\(", text)]
    return f"has no .entry {', '.join(missing)}" if missing else None
