"""A bounded in-memory cache: what dispatch keeps compiled for the next caller.

`found` is a plain dict read without a lock (a hit costs a lookup and a stamp). Past
`size()` entries, the least recently used are dropped, an eighth at a time: what nobody
else refers to is then garbage, and its compiled code is freed with it (jit.compiler's
Code). What is still referred to elsewhere (a Kernel a user holds) stays reachable
through `alive`, so dispatching it again returns the same object instead of compiling
it a second time.
"""
from __future__ import annotations

import itertools
import weakref
from typing import Callable


class Recent:
    def __init__(self, size: Callable[[], int]):
        self.size = size
        self.found: dict = {}
        self.alive = weakref.WeakValueDictionary()
        self.tick = itertools.count().__next__

    def get(self, key):
        """The kept value, or None; no lock needed."""
        value = self.found.get(key)
        if value is not None:
            value._used = self.tick()
        return value

    def find(self, key):
        """The kept value, or one still alive elsewhere, or None (under the owner's lock)."""
        value = self.found.get(key)
        return value if value is not None else self.alive.get(key)

    def put(self, key, value) -> None:
        """Keep value (under the owner's lock)."""
        value._used = self.tick()
        self.found[key] = value
        self.alive[key] = value
        size = self.size()
        if len(self.found) > size:
            by_age = sorted(self.found.items(), key=lambda item: item[1]._used)
            for old, _ in by_age[:len(by_age) - (size - size // 8)]:
                self.found.pop(old, None)

    def clear(self) -> None:
        self.found.clear()
        self.alive.clear()

    def __len__(self) -> int:
        return len(self.found)
