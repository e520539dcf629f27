"""Every environment knob of tpp, read in one place.

| variable          | meaning                                                     | default            |
|-------------------|-------------------------------------------------------------|--------------------|
| TPP_TARGET        | force a target by name (x86-avx512, x86-avx2)               | the host's best    |
| TPP_CACHE         | 0 disables the on-disk kernel cache                         | 1                  |
| TPP_CACHE_DIR     | where compiled kernels are kept                             | ~/.cache/tpp (XDG) |
| TPP_OPT_LEVEL     | LLVM optimisation level 0-3                                 | 3                  |
| TPP_NUM_THREADS   | worker threads for parallel composites                      | cores available    |
| TPP_HOST_LIMIT    | treat the CPU as one that runs at most this x86 target      | none               |
|                   | (x86-avx2: an AVX-512 machine plays an AVX2-only one; the   |                    |
|                   | host target is then x86-avx2 and x86-avx512 cannot run)     |                    |

`config.override(cache=False, ...)` changes knobs for a block (tests use it).
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, replace
from pathlib import Path

from .jit import targets as _targets


@dataclass(frozen=True)
class Config:
    target: str | None
    cache: bool
    cache_dir: Path
    opt_level: int
    num_threads: int
    host_limit: str | None = None


def _default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "tpp"


def _int(name: str, default: int, lo: int, hi: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"tpp: {name}={raw!r} is not an integer") from None
    if not lo <= value <= hi:
        raise ValueError(f"tpp: {name}={value} is outside {lo}..{hi}")
    return value


def from_environment() -> Config:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return Config(
        target=os.environ.get("TPP_TARGET") or None,
        cache=os.environ.get("TPP_CACHE", "1") not in ("0", "false", "off", "no"),
        cache_dir=Path(os.environ.get("TPP_CACHE_DIR") or _default_cache_dir()),
        opt_level=_int("TPP_OPT_LEVEL", 3, 0, 3),
        num_threads=_int("TPP_NUM_THREADS", cores, 1, 1024),
        host_limit=os.environ.get("TPP_HOST_LIMIT") or None,
    )


def _apply(cfg: Config) -> Config:
    """Hand the knobs the jit layer acts on down to it (it reads no environment)."""
    try:
        _targets.set_host_limit(cfg.host_limit)
    except ValueError as exc:
        raise ValueError(f"{exc} (TPP_HOST_LIMIT)") from None
    return cfg


_current = _apply(from_environment())


def get() -> Config:
    return _current


@contextlib.contextmanager
def override(**changes):
    """Temporarily change knobs: `with config.override(cache=False): ...`."""
    global _current
    saved = _current
    if "cache_dir" in changes:
        changes["cache_dir"] = Path(changes["cache_dir"])
    _current = _apply(replace(saved, **changes))
    try:
        yield _current
    finally:
        _current = _apply(saved)
