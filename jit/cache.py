"""On-disk cache of compiled object code.

Keys are hashed from named parts (the caller passes package version, a hash of
the generator sources, LLVM version, target, descriptor, opt level). Entries
are written to a temporary file and moved into place with os.replace, so
concurrent writers never expose a half-written file. Each entry carries a
checksum: a corrupt or truncated entry is discarded and rebuilt, and so is one
whose payload the caller's check refuses (object code that is not the key's:
objfile.py). The directory is created private (0700); entries owned by another
user are never read; an entry that is not a regular file (a symlink, a FIFO, a
device) is never opened for reading, so it can neither hang nor redirect a load.
"""
from __future__ import annotations

import hashlib
import os
import stat
import tempfile
from pathlib import Path
from typing import Callable

_MAGIC = b"TPPOBJ1\n"
# An entry larger than this is not one of ours (a matmul nest's object is ~100 KB)
MAX_ENTRY_BYTES = 256 << 20
# O_NOFOLLOW: a symlink fails to open (ELOOP) instead of being followed; O_NONBLOCK: a
# FIFO put in an entry's place opens at once instead of waiting for a writer
_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)


def make_key(**parts: object) -> str:
    h = hashlib.sha256()
    for name in sorted(parts):
        h.update(f"{name}={parts[name]!r}\n".encode())
    return h.hexdigest()


def hash_sources(paths: list[Path]) -> str:
    """Digest of the code generator's own sources: a change to them invalidates keys."""
    h = hashlib.sha256()
    for p in sorted(paths):
        h.update(p.name.encode())
        h.update(p.read_bytes())
    return h.hexdigest()[:16]


class DiskCache:
    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self._ready: bool | None = None

    def _usable(self) -> bool:
        if self._ready is None:
            try:
                self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
                st = self.directory.stat()
                self._ready = st.st_uid == os.getuid() and not (st.st_mode & 0o022)
            except OSError:
                self._ready = False
        return self._ready

    def path(self, key: str) -> Path:
        return self.directory / f"{key}.o"

    def get(self, key: str, valid: Callable[[bytes], bool] | None = None) -> bytes | None:
        """The payload stored under key, or None (then the caller builds it). A corrupt
        entry, or one whose payload `valid` refuses, is removed."""
        if not self._usable():
            return None
        path = self.path(key)
        try:
            fd = os.open(path, _OPEN_FLAGS)
        except FileNotFoundError:
            return None
        except OSError:                  # a symlink (ELOOP), unreadable, ...: not an entry
            self._discard(path)
            return None
        with os.fdopen(fd, "rb") as f:
            st = os.fstat(fd)
            if st.st_uid != os.getuid():
                return None              # never trust another user's code
            if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_ENTRY_BYTES:
                self._discard(path)
                return None
            try:
                blob = f.read(MAX_ENTRY_BYTES + 1)
            except OSError:
                blob = b""
        payload = _unwrap(blob)
        if payload is None or (valid is not None and not valid(payload)):
            self._discard(path)          # corrupt or not what the key names: the caller rebuilds
            return None
        return payload

    @staticmethod
    def _discard(path: Path) -> None:
        try:
            path.unlink()                # unlink removes a symlink itself, never its target
        except OSError:
            pass

    def put(self, key: str, payload: bytes) -> None:
        if not self._usable():
            return
        blob = _MAGIC + hashlib.sha256(payload).digest() + payload
        try:
            fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".tmp-", suffix=".o")
            with os.fdopen(fd, "wb") as f:
                f.write(blob)
            os.replace(tmp, self.path(key))
        except OSError:
            try:
                os.unlink(tmp)
            except (OSError, UnboundLocalError):
                pass

    def size_bytes(self) -> int:
        if not self.directory.is_dir():
            return 0
        return sum(p.lstat().st_size for p in self.directory.glob("*.o"))


def _unwrap(blob: bytes) -> bytes | None:
    head = len(_MAGIC) + 32
    if len(blob) < head or not blob.startswith(_MAGIC):
        return None
    payload = blob[head:]
    if hashlib.sha256(payload).digest() != blob[len(_MAGIC):head]:
        return None
    return payload
