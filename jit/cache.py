"""On-disk cache of compiled object code.

Keys are hashed from named parts (the caller passes package version, a hash of
the generator sources, LLVM version, target, descriptor, opt level). Entries
are written to a temporary file and moved into place with os.replace, so
concurrent writers never expose a half-written file. Each entry records its
full key and a checksum over key and payload: a corrupt or truncated entry, one
copied or renamed from another key, and one whose payload the caller's check
refuses (object code that is not the key's: objfile.py) are discarded and
rebuilt, never trusted. The directory is created private (0700); entries owned
by another user are never read; an entry that is not a regular file (a symlink,
a FIFO, a device) is never opened for reading, so it can neither hang nor
redirect a load, and one larger than MAX_ENTRY_BYTES is not read at all (a
sparse file of a terabyte would otherwise end in MemoryError).
"""
from __future__ import annotations

import hashlib
import os
import re
import stat
import tempfile
from pathlib import Path
from typing import Callable

# entry layout: _MAGIC, the key (ASCII), b"\n", sha256(key line + payload), payload
_MAGIC = b"TPPOBJ2\n"
_DIGEST = 32
# An entry larger than this is not one of ours (a matmul nest's object is ~100 KB, the
# largest PTX a few hundred KB); one this size is neither read nor written
MAX_ENTRY_BYTES = 32 << 20
# keys name files in the directory: no separators, no dot files, bounded length
_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}\Z")
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


def wrap(key: str, payload: bytes) -> bytes:
    """The bytes of the entry that stores payload under key."""
    line = key.encode("ascii") + b"\n"
    return _MAGIC + line + hashlib.sha256(line + payload).digest() + payload


def _unwrap(blob: bytes, key: str | None = None) -> bytes | None:
    """The payload of an entry, or None when it is corrupt or (key given) another key's."""
    if not blob.startswith(_MAGIC):
        return None
    end = blob.find(b"\n", len(_MAGIC), len(_MAGIC) + 130)
    if end < 0:
        return None
    line = blob[len(_MAGIC):end + 1]
    digest, payload = blob[end + 1:end + 1 + _DIGEST], blob[end + 1 + _DIGEST:]
    if len(digest) != _DIGEST or hashlib.sha256(line + payload).digest() != digest:
        return None
    if key is not None and line != key.encode("ascii") + b"\n":
        return None                      # a valid entry of another key, copied or renamed here
    return payload


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
        if not isinstance(key, str) or not _KEY.match(key):
            raise ValueError(f"tpp disk cache: {key!r} is not a cache key (letters, digits, _ . -)")
        return self.directory / f"{key}.o"

    def get(self, key: str, valid: Callable[[bytes], bool] | None = None) -> bytes | None:
        """The payload stored under key, or None (then the caller builds it). An entry that
        is corrupt, another key's, too large, not a regular file, or whose payload `valid`
        refuses, is removed."""
        if not self._usable():
            return None
        path = self.path(key)
        blob = self._read(path)
        if blob is None:
            return None
        payload = _unwrap(blob, key)
        if payload is None or (valid is not None and not valid(payload)):
            self._discard(path)          # corrupt or not what the key names: the caller rebuilds
            return None
        return payload

    def _read(self, path: Path) -> bytes | None:
        """The entry's bytes, if it is a regular file of ours within the size bound (others
        are removed, another user's left alone)."""
        try:
            st = os.lstat(path)          # a device is not even opened (its open has effects)
        except FileNotFoundError:
            return None
        except OSError:
            self._discard(path)
            return None
        if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_ENTRY_BYTES:
            if st.st_uid == os.getuid():
                self._discard(path)
            return None
        try:
            fd = os.open(path, _OPEN_FLAGS)
        except FileNotFoundError:
            return None
        except OSError:                  # swapped for a symlink (ELOOP), unreadable, ...
            self._discard(path)
            return None
        with os.fdopen(fd, "rb") as f:
            st = os.fstat(fd)            # what was opened, not what lstat saw
            if st.st_uid != os.getuid():
                return None              # never trust another user's code
            if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_ENTRY_BYTES:
                self._discard(path)
                return None
            try:
                blob = f.read(MAX_ENTRY_BYTES + 1)
            except OSError:
                blob = b""
        if len(blob) > MAX_ENTRY_BYTES:  # grew after the fstat
            self._discard(path)
            return None
        return blob

    @staticmethod
    def _discard(path: Path) -> None:
        try:
            path.unlink()                # unlink removes a symlink itself, never its target
        except IsADirectoryError:
            try:
                path.rmdir()             # an empty directory in an entry's place; a full one stays
            except OSError:
                pass
        except OSError:
            pass

    def put(self, key: str, payload: bytes) -> None:
        """Store payload under key (atomically: readers see the old entry or the new one)."""
        path = self.path(key)
        blob = wrap(key, payload)
        if len(blob) > MAX_ENTRY_BYTES or not self._usable():
            return                       # get would refuse it: not worth the write
        tmp = None
        try:
            fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".tmp-", suffix=".o")
            with os.fdopen(fd, "wb") as f:
                f.write(blob)
            os.replace(tmp, path)
        except OSError:
            if tmp is not None:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass

    def size_bytes(self) -> int:
        if not self.directory.is_dir():
            return 0
        return sum(p.lstat().st_size for p in self.directory.glob("*.o"))
