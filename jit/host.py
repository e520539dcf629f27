"""Facts about the machine this process runs on that tuning reads: the L1 data
cache's geometry and the last-level cache's size, from Linux's sysfs (defaults where
they are not exposed). Kept out of the Target: a target is what code can be generated
for, this is the chip under it. In the jit layer, below the kernels that tune to it
(prefetch distances, streaming-store thresholds); the disk cache keys code for a
target that runs here by `signature()` too."""
from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

_CACHES = Path("/sys/devices/system/cpu/cpu0/cache")


@dataclass(frozen=True)
class CacheGeometry:
    sets: int
    ways: int
    line: int                      # bytes

    @property
    def size(self) -> int:
        """Bytes."""
        return self.sets * self.ways * self.line

    def most_lines_in_one_set(self, count: int, stride: int) -> int:
        """Of the lines holding `count` addresses `stride` bytes apart, how many share
        the fullest set."""
        sets: dict[int, set] = {}
        for i in range(count):
            line = i * stride // self.line
            sets.setdefault(line % self.sets, set()).add(line)
        return max(len(lines) for lines in sets.values())


# what Zen 4 and most x86 cores since Skylake client have; Golden Cove has 12 ways
DEFAULT_L1D = CacheGeometry(sets=64, ways=8, line=64)
# a Zen 3 / Zen 4 CCX's L3 (32 MB, 16 ways)
DEFAULT_LAST_LEVEL = CacheGeometry(sets=32768, ways=16, line=64)


def _data_caches() -> dict[int, CacheGeometry]:
    """Level -> geometry of the data (or unified) caches cpu0 sees."""
    found = {}
    for index in sorted(_CACHES.glob("index*")):
        try:
            if (index / "type").read_text().strip() in ("Data", "Unified"):
                geometry = CacheGeometry(int((index / "number_of_sets").read_text()),
                                         int((index / "ways_of_associativity").read_text()),
                                         int((index / "coherency_line_size").read_text()))
                if min(geometry.sets, geometry.ways, geometry.line) > 0:    # 0: not reported
                    found[int((index / "level").read_text())] = geometry
        except (OSError, ValueError):
            return {}
    return found


@functools.lru_cache(maxsize=1)
def l1d() -> CacheGeometry:
    return _data_caches().get(1, DEFAULT_L1D)


@functools.lru_cache(maxsize=1)
def last_level() -> CacheGeometry:
    """The last-level cache (the L3 of the core's complex on Zen, shared by its cores)."""
    caches = _data_caches()
    return caches[max(caches)] if caches else DEFAULT_LAST_LEVEL


def signature() -> tuple[CacheGeometry, CacheGeometry]:
    """What of this chip the generated code depends on (part of the disk-cache key of
    code compiled for a target that runs here)."""
    return l1d(), last_level()
