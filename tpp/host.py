"""Facts about the machine this process runs on that tuning reads: the L1 data
cache's geometry, from Linux's sysfs (a default where it is not exposed). Kept out
of the Target: a target is what code can be generated for, this is the chip under it."""
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


@functools.lru_cache(maxsize=1)
def l1d() -> CacheGeometry:
    for index in sorted(_CACHES.glob("index*")):
        try:
            if (index / "level").read_text().strip() == "1" and \
                    (index / "type").read_text().strip() in ("Data", "Unified"):
                return CacheGeometry(int((index / "number_of_sets").read_text()),
                                     int((index / "ways_of_associativity").read_text()),
                                     int((index / "coherency_line_size").read_text()))
        except (OSError, ValueError):
            break
    return DEFAULT_L1D
