"""Timing: calibrate a repetition to at least `min_time`, warm up, repeat, and
keep the median and the spread (Triton's do_bench and timeit do the same).

Everything timed is a `run(count)` callable that performs the operation
`count` times; the per-operation time of one repetition is its wall time over
`count`. A repetition of >= 20 ms keeps perf_counter's resolution and the cost
of one timer read far below 0.1 %.
"""
from __future__ import annotations

import gc
import itertools
import math
import statistics
import time
from dataclasses import dataclass
from typing import Callable

RunFn = Callable[[int], None]


@dataclass(frozen=True)
class Stats:
    """Seconds per operation over the repetitions."""
    median: float
    min: float
    max: float
    reps: int
    inner: int          # operations per repetition

    @property
    def spread(self) -> float:
        """(max - min) / median: how noisy the repetitions were."""
        return (self.max - self.min) / self.median if self.median > 0 else 0.0

    def as_dict(self) -> dict:
        return {"median_s": self.median, "min_s": self.min, "max_s": self.max,
                "spread": round(self.spread, 4), "reps": self.reps, "inner": self.inner}


def _time(run: RunFn, count: int) -> float:
    t0 = time.perf_counter()
    run(count)
    return time.perf_counter() - t0


def calibrate(run: RunFn, min_time: float) -> int:
    """The smallest power-ish count whose repetition lasts >= min_time (also warms up)."""
    run(1)                       # first touch of the pages, lazy initialisation
    count = 1
    while True:
        dt = _time(run, count)
        if dt >= min_time:
            return count
        grow = math.ceil(count * 1.25 * min_time / dt) if dt > 0 else count * 100
        count = min(count * 100, max(count * 2, grow))


def measure(run: RunFn, *, repeat: int = 5, min_time: float = 0.02, warmup: int = 1) -> Stats:
    """Median/min/max seconds per operation of `run` over `repeat` repetitions."""
    return measure_many({"run": run}, repeat=repeat, min_time=min_time, warmup=warmup)["run"]


def measure_many(runs: dict[str, RunFn], *, repeat: int = 5, min_time: float = 0.02,
                 warmup: int = 1) -> dict[str, Stats]:
    """Like measure, for several contenders whose repetitions are interleaved
    (a b c a b c ...), so that a noisy stretch of time hits them all alike and
    their ratios stay fair on a shared machine."""
    counts, per_op = sample_many(runs, repeat=repeat, min_time=min_time, warmup=warmup)
    return {name: stats_of(per_op[name], counts[name]) for name in runs}


def sample_many(runs: dict[str, RunFn], *, repeat: int = 5, min_time: float = 0.02, warmup: int = 1,
                min_times: dict[str, float] | None = None,
                prepare: dict[str, Callable[[], object]] | None = None
                ) -> tuple[dict[str, int], dict[str, list[float]]]:
    """The interleaved repetitions of measure_many, unreduced: the count of each
    contender's repetition and its seconds per operation in every repetition, in
    order (per_op[x][r] and per_op[y][r] ran back to back). min_times overrides
    min_time for some contenders; prepare[x]() runs, untimed, before each of x's
    repetitions (and its calibration), e.g. to set numpy's BLAS thread count."""
    min_times = min_times or {}
    prepare = prepare or {}

    def ready(name: str) -> RunFn:
        if name in prepare:
            prepare[name]()
        return runs[name]
    gc_was = gc.isenabled()
    gc.disable()                 # a collection inside a repetition is noise, not the kernel
    try:
        counts = {name: calibrate(ready(name), min_times.get(name, min_time)) for name in runs}
        for _ in range(warmup):
            for name in runs:
                ready(name)(counts[name])
        per_op: dict[str, list[float]] = {name: [] for name in runs}
        for _ in range(max(1, repeat)):
            for name in runs:
                run = ready(name)
                per_op[name].append(_time(run, counts[name]) / counts[name])
    finally:
        if gc_was:
            gc.enable()
    return counts, per_op


def loop(fn: Callable[[], object]) -> RunFn:
    """run(count) calling fn() count times (the Python loop costs ~15 ns a turn)."""
    def run(count: int) -> None:
        for _ in itertools.repeat(None, count):
            fn()
    return run


def best(results: dict[str, Stats]) -> tuple[str, Stats]:
    """The fastest (lowest median) of several ways to do the same thing."""
    name = min(results, key=lambda k: results[k].median)
    return name, results[name]


def once(fn: Callable[[], object]) -> float:
    """Seconds of a single call (for things that cannot be repeated, like a cold compile)."""
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def stats_of(samples: list[float], inner: int = 1) -> Stats:
    return Stats(statistics.median(samples), min(samples), max(samples), len(samples), inner)
