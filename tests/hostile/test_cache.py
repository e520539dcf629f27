"""Disk-cache entries that are not what their key names: corrupt, truncated, another
key's valid entry, another kernel's object under this key, symlinks (to /dev/zero,
/dev/urandom, a FIFO, a directory, a missing file, a good entry), special files (a FIFO,
a directory, a socket, a sparse terabyte) in an entry's place, and cache directories
that are not directories. Each entry is written by another process (so this one has
never linked its symbol), spoiled, then dispatched here: the kernel must work and match
numpy, every time (a bad entry is dropped and rebuilt, never trusted, never fatal).
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

import tpp
from hostile import harness
from hostile.harness import Cases, Wrong
from tpp.jit import cache as disk_cache

CASES = Cases()
FIRST = 9100                  # relu kernels 5 x (FIRST + i): symbols no other case links
_state: dict = {}


def _populated() -> list[Path]:
    """One directory per case, each holding the entries of its own kernel, written by
    one child process (made once per process that runs these cases)."""
    if "dirs" not in _state:
        root = Path(tempfile.mkdtemp(prefix="tpp-hostile-cache-"))
        count = len(CASES) + 1
        code = ("import sys, tpp; from pathlib import Path\n"
                f"root = Path({str(root)!r})\n"
                f"for i in range({count}):\n"
                "    with tpp.config.override(cache=True, cache_dir=root / str(i)):\n"
                f"        tpp.unary('relu', 5, {FIRST} + i)\n")
        subprocess.run([sys.executable, "-c", code], check=True, timeout=300)
        _state["dirs"] = [root / str(i) for i in range(count)]
    return _state["dirs"]


def _entries(directory: Path) -> list[Path]:
    found = sorted(p for p in directory.iterdir() if p.suffix == ".o")
    if not found:
        raise AssertionError(f"no cache entries in {directory}")
    return found


def _dispatch_and_check(index: int, directory: Path) -> None:
    n = FIRST + index
    x = np.linspace(-1, 1, 5 * n, dtype=np.float32).reshape(5, n)
    with tpp.config.override(cache=True, cache_dir=directory):
        for _ in range(2):                       # the rebuilt entry, read back, works too
            k = tpp.unary("relu", 5, n)
            got = k(x)
            if not np.array_equal(got, np.maximum(x, 0)):
                raise Wrong(f"relu 5 x {n} from a spoiled cache entry computes wrong values")
            tpp.dispatch.clear_memory_cache()


def _key_and_payload(data: bytes) -> tuple[str, bytes]:
    """The key line and payload of a good entry (layout: magic, key, newline, digest, payload)."""
    rest = data[len(disk_cache._MAGIC):]
    key, _, tail = rest.partition(b"\n")
    return key.decode(), tail[32:]


def spoiled(index: int, spoil, rebuilt: bool) -> None:
    dirs = _populated()
    directory, other = dirs[index], dirs[-1]
    entries = _entries(directory)
    good = [entry.read_bytes() for entry in entries]
    for entry, foreign in zip(entries, _entries(other) * 2):
        spoil(entry, entry.read_bytes(), foreign.read_bytes())
    _dispatch_and_check(index, directory)
    if rebuilt and [e.read_bytes() if e.is_file() and not e.is_symlink() else None for e in entries] != good:
        raise Wrong("a spoiled entry (a regular file) was not rebuilt")


def _rewrap(make_payload):
    """An entry whose checksum is right for its key but whose payload is make_payload(good)."""
    def spoil(path, data, foreign):
        key, payload = _key_and_payload(data)
        path.write_bytes(disk_cache.wrap(key, make_payload(payload, _key_and_payload(foreign)[1])))
    return spoil


def _replace_with(make):
    def spoil(path: Path, data, foreign):
        path.unlink()
        make(path)
    return spoil


def _symlink_to(target):
    return _replace_with(lambda path: path.symlink_to(target(path) if callable(target) else target))


def _fifo_at(path: Path) -> Path:
    fifo = path.with_name(path.name + ".fifo")
    if not fifo.exists():
        os.mkfifo(fifo)
    return fifo


def _socket_at(path: Path) -> None:
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(path))
    _state.setdefault("sockets", []).append(s)


def _dir_with_a_file(path: Path) -> None:
    path.mkdir()
    (path / "x").write_bytes(b"x")


def _sparse(path: Path) -> None:
    with open(path, "wb") as f:
        f.truncate(1 << 40)


def _good_elsewhere(path: Path) -> Path:
    return path.with_name(path.name + ".elsewhere")


def _moved_elsewhere(path: Path, data, foreign) -> None:
    path.rename(_good_elsewhere(path))
    path.symlink_to(_good_elsewhere(path))


REBUILT = ("random_bytes", "one_byte_flipped", "empty", "magic_only", "truncated_half", "truncated_last_byte",
           "one_byte_more", "foreign_entry", "old_format", "key_claimed_by_another_object",
           "key_with_garbage_payload", "key_with_elf_header_only", "key_with_half_an_object",
           "key_with_section_table_past_the_end", "key_with_another_machine", "key_with_renamed_symbols",
           "fifo", "empty_directory", "sparse_terabyte", "symlink_to_dev_zero", "symlink_to_nowhere")
SPOILS = {
    "random_bytes": lambda p, d, f: p.write_bytes(os.urandom(len(d))),
    "one_byte_flipped": lambda p, d, f: p.write_bytes(d[:len(d) // 2] + bytes([d[len(d) // 2] ^ 1]) + d[len(d) // 2 + 1:]),
    "empty": lambda p, d, f: p.write_bytes(b""),
    "magic_only": lambda p, d, f: p.write_bytes(disk_cache._MAGIC),
    "truncated_half": lambda p, d, f: p.write_bytes(d[:len(d) // 2]),
    "truncated_last_byte": lambda p, d, f: p.write_bytes(d[:-1]),
    "one_byte_more": lambda p, d, f: p.write_bytes(d + b"\0"),
    "foreign_entry": lambda p, d, f: p.write_bytes(f),
    "old_format": lambda p, d, f: p.write_bytes(b"TPPOBJ1\n" + d[8:]),
    "key_claimed_by_another_object": _rewrap(lambda good, other: other),
    "key_with_garbage_payload": _rewrap(lambda good, other: os.urandom(len(good))),
    "key_with_elf_header_only": _rewrap(lambda good, other: good[:64]),
    "key_with_half_an_object": _rewrap(lambda good, other: good[:len(good) // 2]),
    "key_with_section_table_past_the_end": _rewrap(
        lambda good, other: good[:40] + (len(good) + 4096).to_bytes(8, "little") + good[48:]),
    "key_with_another_machine": _rewrap(lambda good, other: good[:18] + (183).to_bytes(2, "little") + good[20:]),
    "key_with_renamed_symbols": _rewrap(lambda good, other: good.replace(b"tpp_", b"tqq_")),
    "symlink_to_dev_zero": _symlink_to("/dev/zero"),
    "symlink_to_dev_urandom": _symlink_to("/dev/urandom"),
    "symlink_to_a_fifo": _symlink_to(_fifo_at),
    "symlink_to_a_directory": _symlink_to("/"),
    "symlink_to_nowhere": _symlink_to("/nonexistent/tpp-entry"),
    "symlink_to_itself": _symlink_to(lambda p: p),
    "symlink_to_a_good_entry": _moved_elsewhere,
    "fifo": _replace_with(os.mkfifo),
    "empty_directory": _replace_with(lambda p: p.mkdir()),
    "directory_with_a_file": _replace_with(_dir_with_a_file),
    "unix_socket": _replace_with(_socket_at),
    "sparse_terabyte": _replace_with(_sparse),
    "unreadable": lambda p, d, f: p.chmod(0),
}
for _i, (_name, _spoil) in enumerate(SPOILS.items()):
    CASES.add(f"entry_{_name}", spoiled, _i, _spoil, _name in REBUILT)


def odd_cache_dir(make) -> None:
    """TPP_CACHE_DIR that cannot hold a cache: kernels still work (compiled, not stored)."""
    with tempfile.TemporaryDirectory(prefix="tpp-hostile-dir-") as tmp:
        where = make(Path(tmp))
        n = FIRST + 900 + len(_state.setdefault("odd", []))
        _state["odd"].append(n)
        x = np.linspace(-1, 1, 3 * n, dtype=np.float32).reshape(3, n)
        with tpp.config.override(cache=True, cache_dir=where):
            got, exc = harness.attempt(lambda: tpp.unary("relu", 3, n)(x))
        if exc is None and not np.array_equal(got, np.maximum(x, 0)):
            raise Wrong(f"relu with cache_dir {where} computes wrong values")


def _a_file(tmp: Path) -> Path:
    (tmp / "file").write_bytes(b"not a directory")
    return tmp / "file"


def _under_a_file(tmp: Path) -> Path:
    return _a_file(tmp) / "kernels"


def _dangling(tmp: Path) -> Path:
    (tmp / "link").symlink_to(tmp / "missing")
    return tmp / "link"


def _read_only_dir(tmp: Path) -> Path:
    (tmp / "ro").mkdir(mode=0o500)
    return tmp / "ro"


def _fifo_dir(tmp: Path) -> Path:
    os.mkfifo(tmp / "fifo")
    return tmp / "fifo"


for _name, _make in {"a_regular_file": _a_file, "under_a_regular_file": _under_a_file, "dev_null": lambda t: Path("/dev/null"),
                     "dangling_symlink": _dangling, "read_only": _read_only_dir, "a_fifo": _fifo_dir,
                     "very_long_name": lambda t: t / ("d" * 255) / ("e" * 255),
                     "proc": lambda t: Path("/proc/self")}.items():
    CASES.add(f"cache_dir_{_name}", odd_cache_dir, _make)

results = harness.results_fixture(CASES, __name__)
test_case = harness.case_test(CASES)

if __name__ == "__main__":
    harness.main(CASES)
