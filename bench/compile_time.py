"""JIT compile time of one unary kernel: cold, and from the disk cache.

cold: `tpp.unary(...)` with `config.override(cache=False)` on a shape this
    process has never dispatched: IR generation, optimisation, object code
    emission and linking into the engine (the process is already warm: target
    machine and engine exist, as for every dispatch after the first).
disk: `tpp.unary(...)` on shapes whose object code a separate process wrote
    into a temporary cache directory, so this process has never linked those
    symbols: key hashing, file read and checksum, linking, Kernel creation.
    (Re-dispatching in the same process after clear_memory_cache() would not
    measure a disk load: the compiler skips objects whose symbols it already
    linked.) That nothing was recompiled is checked: timing the dispatches may
    add no file to the cache.
"""
from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import tpp
from tpp import config

from . import timing

_N = 256
_fresh = itertools.count(7001)       # row counts no other benchmark uses

_POPULATE = """
import sys, tpp
kind, dtype = sys.argv[1], sys.argv[2]
for shape in sys.argv[3:]:
    m, n = map(int, shape.split("x"))
    tpp.unary(kind, m, n, dtype)
"""


def _shapes(count: int) -> list[tuple[int, int]]:
    return [(next(_fresh), _N) for _ in range(count)]


def _row(kind: str, dtype: str, mode: str, samples: list[float], method: str, **extra) -> dict:
    st = timing.stats_of(samples)
    return {"suite": "compile", "op": kind, "mode": mode, "shape": f"fresh m x {_N}", "dtype": dtype,
            **st.as_dict(), "ms": st.median * 1e3, "min_ms": st.min * 1e3, "method": method, **extra}


def cold(kind: str, dtype: str, reps: int) -> dict:
    tpp.unary(kind, *_shapes(1)[0], dtype)          # warm: target machine, engine, source hash
    samples = []
    with config.override(cache=False):
        for m, n in _shapes(reps):
            samples.append(timing.once(lambda: tpp.unary(kind, m, n, dtype)))
    return _row(kind, dtype, "cold", samples,
                "tpp.unary on a never-dispatched shape with cache=False (generate+optimise+emit+link)")


def disk(kind: str, dtype: str, reps: int) -> dict:
    shapes = _shapes(reps)
    tmp = Path(tempfile.mkdtemp(prefix="tpp-bench-cache-"))
    try:
        env = {**os.environ, "TPP_CACHE": "1", "TPP_CACHE_DIR": str(tmp),
               "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
        if config.get().target:
            env["TPP_TARGET"] = config.get().target
        if config.get().host_limit:
            env["TPP_HOST_LIMIT"] = config.get().host_limit
        # The subprocess must import this very tpp (the cache keys hash its sources): its
        # root first on the path, and started in the cache directory, since a checkout's
        # root as the current directory would put its own tpp/ ahead of an installed one.
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(tpp.__file__).parents[1]),
                                                          env.get("PYTHONPATH")]))
        subprocess.run([sys.executable, "-c", _POPULATE, kind, dtype] + [f"{m}x{n}" for m, n in shapes],
                       env=env, cwd=tmp, check=True, capture_output=True, timeout=300)
        written = sorted(tmp.glob("*.o"))
        samples = []
        with config.override(cache=True, cache_dir=tmp):
            for m, n in shapes:
                samples.append(timing.once(lambda: tpp.unary(kind, m, n, dtype)))
        # the subprocess also wrote shared objects (the native Python entry): >= one per shape
        hit = len(written) >= len(shapes) and sorted(tmp.glob("*.o")) == written
        method = ("tpp.unary on shapes whose objects a separate process wrote to a temporary cache "
                  "(never linked in this process): hash key, read+checksum, link, Kernel")
        return _row(kind, dtype, "disk", samples, method, verified_disk_hit=hit)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def rows(kind: str, dtype: str, reps: int) -> list[dict]:
    reps = max(reps, 5)
    out = [cold(kind, dtype, reps)]
    try:
        out.append(disk(kind, dtype, reps))
    except (subprocess.SubprocessError, OSError) as exc:
        out.append({"suite": "compile", "op": kind, "mode": "disk", "dtype": dtype,
                    "error": f"could not populate a cache in a subprocess: {exc}"})
    return out
