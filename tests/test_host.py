"""tpp.jit.host: the cache geometry read from sysfs (defaults where it is missing), and the
tuning that reads it: streaming stores by the last-level cache's size."""
from __future__ import annotations

import pytest

import tpp
from tpp.jit import host

from targets import compile_only


def _index(root, name, level, kind, sets, ways, line=64):
    d = root / name
    d.mkdir()
    for field, value in (("level", level), ("type", kind), ("number_of_sets", sets),
                         ("ways_of_associativity", ways), ("coherency_line_size", line)):
        (d / field).write_text(f"{value}\n")


@pytest.fixture
def sysfs(tmp_path, monkeypatch):
    monkeypatch.setattr(host, "_CACHES", tmp_path)
    host.l1d.cache_clear()
    host.last_level.cache_clear()
    yield tmp_path
    host.l1d.cache_clear()
    host.last_level.cache_clear()


def test_geometry_from_sysfs(sysfs):
    _index(sysfs, "index0", 1, "Data", 64, 12)
    _index(sysfs, "index1", 1, "Instruction", 64, 8)
    _index(sysfs, "index2", 2, "Unified", 2048, 16)
    _index(sysfs, "index3", 3, "Unified", 49152, 12)
    assert host.l1d() == host.CacheGeometry(64, 12, 64)
    assert host.last_level().size == 36 << 20


def test_defaults_where_sysfs_says_nothing(sysfs):
    assert host.l1d() == host.DEFAULT_L1D and host.last_level() == host.DEFAULT_LAST_LEVEL
    host.l1d.cache_clear()
    host.last_level.cache_clear()
    _index(sysfs, "index0", 1, "Data", 64, 8)
    _index(sysfs, "index3", 3, "Unified", 0, 0)          # a level that reports no geometry
    assert host.last_level() == host.CacheGeometry(64, 8, 64)   # the last one reported


@pytest.mark.parametrize("family, kind, shape, streams", [
    ("unary", "copy", (1024, 1024), False),    # 8 MiB of operands stay in a 32 MB L3
    ("unary", "copy", (2048, 2048), True),
    ("unary", "relu", (4096, 4096), True),
    ("binary", "add", (1024, 1024), False),
    ("binary", "add", (1448, 1448), True),     # 24 MiB: two inputs, more than the output
    ("unary", "relu", (512, 512), False),
])
def test_streaming_stores_by_the_last_level_cache(family, kind, shape, streams):
    """Code for a target not run here assumes DEFAULT_LAST_LEVEL (32 MB)."""
    make = tpp.unary if family == "unary" else tpp.binary
    asm = make(kind, *shape, target=compile_only("x86-avx2")).asm
    assert ("vmovntps" in asm) == streams
