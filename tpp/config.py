"""Every environment knob of tpp, read in one place.

| variable              | meaning                                                   | default            |
|-----------------------|-----------------------------------------------------------|--------------------|
| TPP_TARGET            | force a target by name (x86-avx512, x86-avx2)             | the host's best    |
| TPP_CACHE             | the on-disk kernel cache: 1/true/yes/on or 0/false/no/off | 1                  |
|                       | (any case); any other value is refused                    |                    |
| TPP_CACHE_DIR         | where compiled kernels are kept                           | ~/.cache/tpp (XDG) |
| TPP_KERNEL_CACHE_SIZE | kernels and composites kept compiled in memory when       | 1024               |
|                       | nothing else refers to them (the least recently           |                    |
|                       | dispatched beyond this many are dropped and their code    |                    |
|                       | freed); 0 keeps only those in use                         |                    |
| TPP_OPT_LEVEL         | LLVM optimisation level 0-3                               | 3                  |
| TPP_NUM_THREADS       | worker threads for parallel composites, at most           | cores available    |
|                       | THREADS_PER_CORE (4) x the CPUs available to the process  |                    |
|                       | (a larger count is refused, here and as an op's threads=) |                    |
| TPP_HOST_LIMIT        | treat the CPU as one that runs at most this x86 target    | none               |
|                       | (x86-avx2: an AVX-512 machine plays an AVX2-only one; the |                    |
|                       | host target is then x86-avx2 and x86-avx512 cannot run)   |                    |

`config.override(cache=False, ...)` changes knobs for a block (tests use it).
A bad value of any knob raises ValueError naming the variable (TPP_TARGET's is checked
where a target is first needed, as tpp.TargetError).
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
    kernel_cache_size: int = 1024
    max_threads: int = 1024          # the most threads a composite may be asked for


# More threads than cores only slow a composite down (its workers spin, then park:
# TPP_NUM_THREADS=1000 made a 512^3 matmul take 28 s instead of milliseconds), so counts
# past a few per core are refused rather than started.
THREADS_PER_CORE = 4
THREADS_LIMIT = 1024                 # the hard range of TPP_NUM_THREADS, whatever the cores

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


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


def _bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    word = raw.strip().lower()
    if word in _TRUE or word in _FALSE:
        return word in _TRUE
    raise ValueError(f"tpp: {name}={raw!r} is not a boolean; use one of "
                     f"{'/'.join(_TRUE)} or {'/'.join(_FALSE)} (any case)")


def cores() -> int:
    """CPUs this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def from_environment() -> Config:
    available = cores()
    most = min(THREADS_LIMIT, THREADS_PER_CORE * available)
    threads = _int("TPP_NUM_THREADS", min(available, most), 1, THREADS_LIMIT)
    if threads > most:
        raise ValueError(f"tpp: TPP_NUM_THREADS={threads} is more than the maximum of {most} "
                         f"({THREADS_PER_CORE} per CPU available to this process: {available})")
    return Config(
        target=os.environ.get("TPP_TARGET") or None,
        cache=_bool("TPP_CACHE", True),
        cache_dir=Path(os.environ.get("TPP_CACHE_DIR") or _default_cache_dir()),
        opt_level=_int("TPP_OPT_LEVEL", 3, 0, 3),
        num_threads=threads,
        host_limit=os.environ.get("TPP_HOST_LIMIT") or None,
        kernel_cache_size=_int("TPP_KERNEL_CACHE_SIZE", 1024, 0, 1 << 30),
        max_threads=most,
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
