"""On-disk cache of compiled object code.

Keys are hashed from named parts (the caller passes package version, a hash of
the generator sources, LLVM version, target, descriptor, opt level). Entries
are written to a temporary file and moved into place with os.replace, so
concurrent writers never expose a half-written file. Each entry carries a
checksum: a corrupt or truncated entry is discarded and rebuilt. The
directory is created private (0700); entries owned by another user are never
read.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

_MAGIC = b"TPPOBJ1\n"


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

    def get(self, key: str) -> bytes | None:
        if not self._usable():
            return None
        path = self.path(key)
        try:
            with open(path, "rb") as f:
                if os.fstat(f.fileno()).st_uid != os.getuid():
                    return None          # never trust another user's code
                blob = f.read()
        except OSError:
            return None
        payload = _unwrap(blob)
        if payload is None:
            try:
                path.unlink()            # corrupt: drop it, the caller rebuilds
            except OSError:
                pass
        return payload

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
        return sum(p.stat().st_size for p in self.directory.glob("*.o"))


def _unwrap(blob: bytes) -> bytes | None:
    head = len(_MAGIC) + 32
    if len(blob) < head or not blob.startswith(_MAGIC):
        return None
    payload = blob[head:]
    if hashlib.sha256(payload).digest() != blob[len(_MAGIC):head]:
        return None
    return payload
