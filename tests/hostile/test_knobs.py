"""Hostile knob values, each in a fresh interpreter (knob_probe.py: import tpp, a kernel, a
GEMM and every composite): TPP_NUM_THREADS (0, -1, huge, words), TPP_CACHE spellings,
TPP_TARGET and TPP_HOST_LIMIT names (bogus, a GPU, AVX-512 on an AVX2-only host),
TPP_OPT_LEVEL, TPP_KERNEL_CACHE_SIZE, TPP_CACHE_DIR. Each step must work and match numpy
or raise a tpp error (at import or at the call) naming the knob; no crash, no hang, no
thread count past the cap.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from hostile import harness

PROBE = Path(__file__).with_name("knob_probe.py")
TIMEOUT = 90
CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
MAX_THREADS_ALIVE = 4 * CORES + 8            # the pool's cap (4 per CPU) and the interpreter's own


def _threads(value):
    return {"TPP_NUM_THREADS": value}


CASES: dict[str, tuple[dict, str]] = {}      # name -> (environment, what to check)
for _v in ("0", "-1", " 2 ", "1000", "100000", str(2 ** 63), "abc", "2.5"):
    CASES[f"TPP_NUM_THREADS={_v!r}"] = (_threads(_v), "threads")
for _v in ("False", "OFF", " no "):
    CASES[f"TPP_CACHE={_v!r}"] = ({"TPP_CACHE": _v}, "cache_off")
for _v in ("TRUE", "on"):
    CASES[f"TPP_CACHE={_v!r}"] = ({"TPP_CACHE": _v}, "cache_on")
for _v in ("bogus", "2"):
    CASES[f"TPP_CACHE={_v!r}"] = ({"TPP_CACHE": _v}, "refused:TPP_CACHE")
for _v in ("bogus", "nvptx-sm90", "aarch64-sve", "X86-AVX2", "x86-avx2"):
    CASES[f"TPP_TARGET={_v!r}"] = ({"TPP_TARGET": _v}, "target")
CASES["TPP_TARGET=x86-avx512 on an AVX2-only host"] = (
    {"TPP_TARGET": "x86-avx512", "TPP_HOST_LIMIT": "x86-avx2"}, "target")
for _v in ("bogus", "nvptx-sm90"):
    CASES[f"TPP_HOST_LIMIT={_v!r}"] = ({"TPP_HOST_LIMIT": _v}, "target")
for _v in ("4", "x"):
    CASES[f"TPP_OPT_LEVEL={_v!r}"] = ({"TPP_OPT_LEVEL": _v}, "plain")
for _v in ("0", "-1"):
    CASES[f"TPP_KERNEL_CACHE_SIZE={_v!r}"] = ({"TPP_KERNEL_CACHE_SIZE": _v}, "plain")
for _label, _v in (("dev_null", "/dev/null"), ("relative", "relative/tpp-cache")):
    CASES[f"TPP_CACHE_DIR={_label}"] = ({"TPP_CACHE_DIR": _v}, "plain")


def run_case(name: str, kernel_cache_dir) -> str:
    env, check = CASES[name]
    quick = check in ("cache_on", "cache_off")        # a private cache: one kernel, not all
    with tempfile.TemporaryDirectory(prefix="tpp-knob-") as tmp:
        full = harness.child_env(Path(tmp) / "cache" if quick else kernel_cache_dir)
        full.pop("TPP_NUM_THREADS", None)
        if check in ("cache_on", "cache_off"):
            full.pop("TPP_CACHE", None)
        full.update(env)
        try:
            proc = subprocess.run([sys.executable, str(PROBE)] + ["quick"] * quick, capture_output=True, text=True, env=full,
                                  timeout=TIMEOUT, cwd=tmp, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired as exc:
            return f"hung (killed after {TIMEOUT} s); output:\n{harness._text(exc.stdout)[-2000:]}"
        if proc.returncode:
            how = (f"killed by {signal.Signals(-proc.returncode).name}" if proc.returncode < 0
                   else f"exit status {proc.returncode}")
            return f"{how}\n{proc.stdout[-2000:]}\n{proc.stderr[-2500:]}"
        records = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
        entries = [p for p in (Path(tmp) / "cache").rglob("*") if p.is_file()] \
            if (Path(tmp) / "cache").is_dir() else []
    problems = []
    for r in records:
        if "error" in r and not r["documented"]:
            problems.append(f"{r['step']}: undocumented {r['type']}: {r['error']}")
        if "error" in r and r["step"] == "relu" and check in ("threads", "plain"):
            problems.append(f"a plain kernel failed: {r['type']}: {r['error']}")
    imported = records and "error" not in records[0]
    if not records or (imported and records[-1].get("step") != "end"):
        problems.append(f"the probe did not finish: {proc.stdout[-1500:]}")
    if check.startswith("refused:"):
        knob = check.partition(":")[2]
        if imported:
            problems.append(f"{knob}={env[knob]!r} was accepted")
        elif knob not in records[0]["error"]:
            problems.append(f"the error does not name {knob}: {records[0]['error']}")
    if check == "cache_off" and imported and entries:
        problems.append(f"the disk cache is on: {len(entries)} entries written")
    if check == "cache_on" and imported and not entries:
        problems.append("the disk cache is off")
    if check == "threads" and imported and records[-1].get("threads_alive", 0) > MAX_THREADS_ALIVE:
        problems.append(f"{records[-1]['threads_alive']} threads alive after the calls (cap {MAX_THREADS_ALIVE})")
    if not imported and records and "TPP_" not in records[0]["error"]:
        problems.append(f"the import error names no knob: {records[0]['error']}")
    return "ok" if not problems else "\n".join(problems) + "\n--- the probe's output ---\n" + proc.stdout[-3000:]


results = harness.pooled_results(CASES, run_case)
test_case = harness.case_test(CASES)
