"""The two kernel caches and dispatch from many threads.

On disk: an entry per kernel, found again by a later run (another process),
never trusted when corrupt, never written when disabled, in a private
directory, and safe when several processes build the same kernel at once. In
memory: one kernel object per descriptor even when threads race to build it.

Each disk test uses its own directory and clears the in-memory cache, so a
build really happens; shapes unique to this module make that explicit.
"""
from __future__ import annotations

import itertools
import os
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import tpp
from tpp import dispatch
from tpp.jit import cache as disk_cache

from targets import X86, compile_only

_shapes = itertools.count(1)


def fresh_shape() -> tuple[int, int]:
    """A shape no other test dispatches."""
    return 3, 1000 + next(_shapes)


def entry_of(directory: Path, k) -> Path:
    """The disk entry of kernel k (its symbol is 'tpp_' + the key's first 24 hex digits)."""
    found = list(Path(directory).glob(f"{k.symbol[4:]}*.o"))
    assert len(found) == 1, f"expected one entry for {k.symbol} in {directory}, found {found}"
    return found[0]


def check_relu(k) -> None:
    x = np.linspace(-2, 2, k.descriptor.m * k.descriptor.n, dtype=np.float32).reshape(k.descriptor.m, -1)
    np.testing.assert_array_equal(k(x), np.maximum(x, 0))


@pytest.fixture
def cache_dir(tmp_path):
    """A fresh disk cache for one test, and an empty in-memory cache before and after."""
    directory = tmp_path / "kernels"
    dispatch.clear_memory_cache()
    with tpp.config.override(cache=True, cache_dir=directory):
        yield directory
    dispatch.clear_memory_cache()


@pytest.fixture
def compile_count(monkeypatch):
    """How many unary kernels have been generated (not loaded from disk) since the test began."""
    calls = []
    real = tpp.UnaryDesc.emit
    monkeypatch.setattr(tpp.UnaryDesc, "emit", lambda self, *a: calls.append(self.kind) or real(self, *a))
    return calls


# ---- keys and entries (no JIT) ------------------------------------------------------------------
def test_keys_are_deterministic_and_depend_on_every_part():
    parts = dict(version="1", sources="abc", llvm="20.1", target="x86-avx512", descriptor="relu 4x4", opt=3)
    key = disk_cache.make_key(**parts)
    assert key == disk_cache.make_key(**dict(reversed(list(parts.items()))))
    for name in parts:
        assert disk_cache.make_key(**{**parts, name: "other"}) != key, name


def test_entries_round_trip_and_reject_garbage(tmp_path):
    dc = disk_cache.DiskCache(tmp_path / "c")
    dc.put("k1", b"object code")
    assert dc.get("k1") == b"object code"
    assert dc.get("missing") is None
    dc.path("k2").write_bytes(b"not an entry")
    assert dc.get("k2") is None and not dc.path("k2").exists()
    assert not list((tmp_path / "c").glob(".tmp-*"))


def test_an_entry_records_its_key(tmp_path):
    """An entry copied or renamed to another key's name is not that key's: dropped."""
    dc = disk_cache.DiskCache(tmp_path / "c")
    dc.put("k1", b"object code of k1")
    dc.path("k2").write_bytes(dc.path("k1").read_bytes())
    assert dc.get("k2") is None and not dc.path("k2").exists()
    assert dc.get("k1") == b"object code of k1"
    assert disk_cache._unwrap(dc.path("k1").read_bytes(), "k2") is None
    assert disk_cache._unwrap(dc.path("k1").read_bytes(), "k1") == b"object code of k1"


@pytest.mark.parametrize("key", ["../escape", "a/b", ".hidden", "", "k" * 200, "k\n"])
def test_a_key_names_a_file_in_the_directory(tmp_path, key):
    with pytest.raises(ValueError, match="not a cache key"):
        disk_cache.DiskCache(tmp_path / "c").path(key)


def test_put_replaces_an_entry_atomically(tmp_path):
    """A reader that opened the old entry reads it whole; the new one is a new file."""
    dc = disk_cache.DiskCache(tmp_path / "c")
    dc.put("k", b"old" * 1000)
    with open(dc.path("k"), "rb") as old:
        inode = os.fstat(old.fileno()).st_ino
        dc.put("k", b"new")
        assert disk_cache._unwrap(old.read(), "k") == b"old" * 1000
    assert dc.path("k").stat().st_ino != inode and dc.get("k") == b"new"
    assert not list((tmp_path / "c").glob(".tmp-*"))


def test_an_oversized_payload_is_not_written(tmp_path, monkeypatch):
    monkeypatch.setattr(disk_cache, "MAX_ENTRY_BYTES", 1000)
    dc = disk_cache.DiskCache(tmp_path / "c")
    dc.put("k", bytes(2000))
    assert not dc.path("k").exists() and dc.get("k") is None


# ---- in one process -----------------------------------------------------------------------------------
def test_build_writes_an_entry_that_the_next_build_loads(cache_dir, compile_count):
    shape = fresh_shape()
    k = tpp.unary("relu", *shape)
    assert len(compile_count) == 1
    entry = entry_of(cache_dir, k)
    dispatch.clear_memory_cache()
    again = tpp.unary("relu", *shape)
    assert again is not k and len(compile_count) == 1, "the disk entry was not used"
    check_relu(again)
    assert entry_of(cache_dir, again) == entry


def test_memory_cache_returns_the_same_kernel(cache_dir, compile_count):
    shape = fresh_shape()
    assert tpp.unary("relu", *shape) is tpp.unary("relu", *shape)
    assert len(compile_count) == 1


CORRUPTIONS = {
    "flipped payload byte": lambda b: b[:-40] + bytes([b[-40] ^ 0xFF]) + b[-39:],
    "flipped checksum byte": lambda b: b[:10] + bytes([b[10] ^ 0x01]) + b[11:],
    "truncated": lambda b: b[: len(b) // 2],
    "empty": lambda b: b"",
    "foreign magic": lambda b: b"\x7fELF" + b[4:],
    "random bytes": lambda b: os.urandom(len(b)),
}


@pytest.mark.parametrize("corrupt", CORRUPTIONS.values(), ids=CORRUPTIONS.keys())
def test_corrupt_entry_is_discarded_and_rebuilt(cache_dir, compile_count, corrupt):
    shape = fresh_shape()
    entry = entry_of(cache_dir, tpp.unary("relu", *shape))
    good = entry.read_bytes()
    entry.write_bytes(corrupt(good))
    dispatch.clear_memory_cache()
    k = tpp.unary("relu", *shape)
    assert len(compile_count) == 2, "a corrupt entry must be rebuilt, not loaded"
    check_relu(k)
    rebuilt = entry_of(cache_dir, k)
    assert disk_cache.DiskCache(cache_dir).get(rebuilt.stem) is not None, "the rebuilt entry is not valid"
    assert rebuilt.read_bytes() == good


def _dispatch_after(cache_dir, shape, plant) -> None:
    """Build relu at shape, replace its entry by plant(entry path), then dispatch it twice
    from an empty memory cache: each time it must work."""
    entry = entry_of(cache_dir, tpp.unary("relu", *shape))
    plant(entry)
    for _ in range(2):                  # the second run: the rebuilt entry is good again
        dispatch.clear_memory_cache()
        check_relu(tpp.unary("relu", *shape))
    assert entry.is_file() and not entry.is_symlink()
    assert disk_cache.DiskCache(cache_dir).get(entry.stem) is not None, "the rebuilt entry is not valid"


def test_another_kernels_entry_is_rebuilt(cache_dir, compile_count):
    """An entry holding another kernel's valid object (copied over it) used to fail every
    later dispatch of the key with 'symbols missing': now it is dropped and rebuilt once."""
    other = entry_of(cache_dir, tpp.unary("relu", *fresh_shape()))
    _dispatch_after(cache_dir, fresh_shape(), lambda entry: entry.write_bytes(other.read_bytes()))
    assert len(compile_count) == 3


def test_an_entry_claiming_the_key_with_another_kernels_object_is_rebuilt(cache_dir, compile_count):
    """The key matches but the object defines another kernel's symbol: the caller's check
    (objfile.problem) refuses it before it is linked."""
    other = entry_of(cache_dir, tpp.unary("relu", *fresh_shape()))
    foreign = disk_cache._unwrap(other.read_bytes())
    _dispatch_after(cache_dir, fresh_shape(),
                    lambda entry: entry.write_bytes(disk_cache.wrap(entry.stem, foreign)))
    assert len(compile_count) == 3


def _symlink_to(target: str):
    def plant(entry: Path) -> None:
        entry.unlink()
        entry.symlink_to(target)
    return plant


def _sparse(size: int):
    def plant(entry: Path) -> None:
        with open(entry, "r+b") as f:
            f.truncate(size)
    return plant


def _directory(entry: Path) -> None:
    entry.unlink()
    entry.mkdir()


def _fifo(entry: Path) -> None:
    entry.unlink()
    os.mkfifo(entry)


SPECIAL_ENTRIES = {
    "symlink to /dev/zero": _symlink_to("/dev/zero"),
    "symlink to /dev/urandom": _symlink_to("/dev/urandom"),
    "dangling symlink": _symlink_to("/nonexistent/tpp-entry"),
    "sparse file of 1 TB": _sparse(1 << 40),
    "one byte over the bound": _sparse(disk_cache.MAX_ENTRY_BYTES + 1),
    "directory": _directory,
    "fifo": _fifo,
}


@pytest.mark.parametrize("plant", SPECIAL_ENTRIES.values(), ids=SPECIAL_ENTRIES.keys())
def test_special_or_huge_entries_are_not_read(cache_dir, compile_count, plant):
    """Reading any of these whole ended in MemoryError (or a hang, for a FIFO): each is
    removed unread and the kernel rebuilt."""
    _dispatch_after(cache_dir, fresh_shape(), plant)
    assert len(compile_count) == 2


def test_disabled_cache_writes_nothing(tmp_path, compile_count):
    directory = tmp_path / "never"
    dispatch.clear_memory_cache()
    with tpp.config.override(cache=False, cache_dir=directory):
        check_relu(tpp.unary("relu", *fresh_shape()))
        dispatch.clear_memory_cache()
        check_relu(tpp.unary("relu", *fresh_shape()))
    assert len(compile_count) == 2
    assert not directory.exists() or not any(directory.iterdir())


def test_directory_is_created_private(tmp_path):
    directory = tmp_path / "a" / "b" / "tpp"
    dispatch.clear_memory_cache()
    with tpp.config.override(cache_dir=directory):
        tpp.unary("relu", *fresh_shape())
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert len(list(directory.glob("*.o"))) == 1


def test_group_writable_directory_is_not_trusted(tmp_path, compile_count):
    """Anyone who can write the directory could plant code: it is neither read nor written."""
    directory = tmp_path / "shared"
    directory.mkdir()
    directory.chmod(0o777)
    dispatch.clear_memory_cache()
    shape = fresh_shape()
    with tpp.config.override(cache_dir=directory):
        check_relu(tpp.unary("relu", *shape))
        dispatch.clear_memory_cache()
        check_relu(tpp.unary("relu", *shape))
    assert len(compile_count) == 2 and not list(directory.iterdir())


def test_entries_differ_per_target(cache_dir):
    """The same descriptor for two targets gives two entries (the key includes the target)."""
    shape = fresh_shape()
    kernels = [tpp.unary("exp", *shape, target=compile_only(name)) for name in X86]
    assert kernels[0].symbol != kernels[1].symbol
    assert entry_of(cache_dir, kernels[0]) != entry_of(cache_dir, kernels[1])


# ---- across processes ----------------------------------------------------------------------------
BUILD_SCRIPT = """
import os, sys, time
import numpy as np
import tpp
from tpp.jit import compiler
mode, go = sys.argv[1], sys.argv[2]
if mode == "must-not-compile":
    def refuse(*args, **kwargs):
        raise SystemExit("compiled a kernel that the disk cache holds")
    compiler.emit_object = refuse
open(go + ".ready-" + str(os.getpid()), "w").close()
while not os.path.exists(go):          # start line: every process dispatches at once
    time.sleep(0.001)
k = tpp.unary("gelu_erf", 13, 71)
x = np.linspace(-3, 3, 13 * 71, dtype=np.float32).reshape(13, 71)
assert np.allclose(k(x), k.reference(x), rtol=1e-5, atol=1e-6), "wrong result"
print(k.symbol)
"""


def _start(script_dir: Path, cache: Path, mode: str, count: int) -> list[subprocess.Popen]:
    go = script_dir / "go"
    env = {**os.environ, "TPP_CACHE_DIR": str(cache)}
    procs = [subprocess.Popen([sys.executable, "-c", BUILD_SCRIPT, mode, str(go)], env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(count)]
    deadline = time.monotonic() + 120
    while len(list(script_dir.glob("go.ready-*"))) < count and time.monotonic() < deadline:
        if any(p.poll() is not None for p in procs):     # one died before the start line
            break
        time.sleep(0.01)
    go.touch()
    return procs


def _finish(procs: list[subprocess.Popen]) -> list[str]:
    symbols = []
    for p in procs:
        out, err = p.communicate(timeout=240)
        assert p.returncode == 0, f"exit {p.returncode}\n{out}\n{err[-3000:]}"
        symbols.append(out.strip())
    return symbols


def test_a_second_process_loads_the_entry(tmp_path):
    cache = tmp_path / "kernels"
    (tmp_path / "first").mkdir()
    (tmp_path / "second").mkdir()
    symbol, = _finish(_start(tmp_path / "first", cache, "build", 1))
    entry = next(cache.glob(f"{symbol[4:]}*.o"))
    before = entry.stat()
    again, = _finish(_start(tmp_path / "second", cache, "must-not-compile", 1))
    assert again == symbol
    after = entry.stat()
    identity = lambda st: (st.st_mtime_ns, st.st_ino, st.st_size)   # noqa: E731
    assert identity(after) == identity(before), "the entry was rewritten"


def test_concurrent_processes_build_the_same_kernel(tmp_path):
    cache = tmp_path / "kernels"
    symbols = _finish(_start(tmp_path, cache, "build", 4))
    assert len(set(symbols)) == 1
    entries = list(cache.glob(f"{symbols[0][4:]}*.o"))
    assert len(entries) == 1
    assert disk_cache.DiskCache(cache).get(entries[0].stem) is not None, "the entry left behind is not valid"
    assert not list(cache.glob(".tmp-*")), "temporary files left behind"
    # and a later process loads it
    (tmp_path / "later").mkdir()
    assert _finish(_start(tmp_path / "later", cache, "must-not-compile", 1)) == symbols[:1]


def test_tpp_cache_0_in_the_environment_writes_nothing(tmp_path, run_python):
    cache = tmp_path / "kernels"
    run_python("import numpy as np, tpp; tpp.unary('relu', 3, 5)(np.ones((3, 5), np.float32))",
               env={"TPP_CACHE": "0", "TPP_CACHE_DIR": str(cache)}).check()
    assert not cache.exists() or not any(cache.iterdir())


# ---- threads -----------------------------------------------------------------------------------------
def test_threads_dispatch_and_call_kernels_at_once(cache_dir):
    """8 threads, released together, dispatch a mix of the same and different
    kernels (fresh, so they race to build them) and call them, large tiles
    included (the GIL is released around those)."""
    kinds = ["relu", "exp", "gelu_tanh", "sqrt"]
    shapes = [fresh_shape() for _ in range(3)] + [(300, 1001)]
    combos = list(itertools.product(kinds, shapes))
    seen: dict[tuple, set] = {}
    errors: list[BaseException] = []
    barrier = threading.Barrier(8)
    lock = threading.Lock()

    def work(t: int) -> None:
        try:
            rng = np.random.default_rng(t)
            barrier.wait()
            for i in range(len(combos)):          # every thread every kernel, each in its own order
                kind, shape = combos[(5 * t + i) % len(combos)]
                k = tpp.unary(kind, *shape)
                with lock:
                    seen.setdefault((kind, shape), set()).add(id(k))
                x = rng.uniform(0.1, 4, shape).astype(np.float32)
                np.testing.assert_allclose(k(x), k.reference(x), rtol=2e-6)
        except BaseException as e:   # reported below, with the thread that raised
            errors.append(e)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=300)
    assert not errors, errors[0]
    assert all(len(ids) == 1 for ids in seen.values()), "two kernel objects for one descriptor"
    assert len(seen) == len(combos)


def test_disk_key_names_a_user_descriptors_class_and_source(tmp_path, monkeypatch):
    """Two user composites' descriptors with the same class name and fields (repr alike)
    get different disk keys, and so does one whose module's source changed; a class whose
    source cannot be read is not stored on disk at all."""
    import importlib
    import sys
    from tpp import dispatch
    from tpp.descriptors import UnaryDesc
    from tpp.jit.types import DType

    body = "from dataclasses import dataclass\n@dataclass(frozen=True)\nclass Desc:\n    n: int = 1\n# {}\n"
    for name, tag in (("user_a", "a"), ("user_b", "b")):
        (tmp_path / f"{name}.py").write_text(body.format(tag))
    monkeypatch.syspath_prepend(str(tmp_path))
    a, b = importlib.import_module("user_a"), importlib.import_module("user_b")
    ga, gb = dispatch._generator(a.Desc()), dispatch._generator(b.Desc())
    assert repr(a.Desc()) == repr(b.Desc()) and ga != gb and ga.startswith("user_a.Desc:")
    (tmp_path / "user_a.py").write_text(body.format("edited"))
    assert dispatch._generator(a.Desc()) != ga
    assert dispatch._generator(UnaryDesc("relu", 4, 4, DType.F32, DType.F32)) == "tpp.descriptors.UnaryDesc"
    monkeypatch.setattr(sys.modules["user_b"], "__file__", None)
    assert dispatch._generator(b.Desc()) is None
