"""Shared fixtures: a private kernel cache for the session, a per-test seeded
random generator, a runner for code that must live in its own process (a
crash there fails one test instead of killing the run), and the hypothesis
profile. Every new shape JIT-compiles a kernel (~20-50 ms), hence few examples
and no deadline."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

import tpp

settings.register_profile("tpp", max_examples=30, deadline=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("thorough", parent=settings.get_profile("tpp"), max_examples=300)
settings.load_profile(os.environ.get("TPP_HYPOTHESIS_PROFILE", "tpp"))


def pytest_report_header(config) -> str:
    """Which target this run tests (CI runs the suite natively and as an AVX2-only host)."""
    t, limit = tpp.current_target(), tpp.config.get().host_limit
    how = ", ".join(f"{k}={v}" for k, v in (("TPP_TARGET", tpp.config.get().target),
                                             ("TPP_HOST_LIMIT", limit)) if v) or "the host's best"
    return f"tpp target: {t.name} ({t.cpu}; {how}); host probe: {tpp.Target.host().name}"


@pytest.fixture(scope="session")
def kernel_cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("tpp-cache")


@pytest.fixture(scope="session", autouse=True)
def private_kernel_cache(kernel_cache_dir):
    """No test reads kernels an earlier run left behind or writes to ~/.cache."""
    with tpp.config.override(cache=True, cache_dir=kernel_cache_dir):
        yield


@pytest.fixture
def rng(request) -> np.random.Generator:
    """Seeded from the test's id: reruns see the same values."""
    return np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))


class Ran:
    """A finished subprocess; `check()` asserts it exited 0 and says how it ended otherwise
    (a negative return code is a signal: SIGSEGV for a bad memory access)."""

    def __init__(self, proc: subprocess.CompletedProcess):
        self.returncode, self.stdout, self.stderr = proc.returncode, proc.stdout, proc.stderr

    def report(self) -> str:
        rc = self.returncode
        how = f"killed by {signal.Signals(-rc).name}" if rc < 0 else f"exit status {rc}"
        return (f"{how}\n--- stdout (tail) ---\n{self.stdout[-3000:]}"
                f"\n--- stderr (tail) ---\n{self.stderr[-3000:]}")

    def check(self) -> "Ran":
        assert self.returncode == 0, self.report()
        return self


@pytest.fixture(scope="session")
def run_python(kernel_cache_dir):
    """run_python(code_or_script, *args, env={...}) -> Ran, in a fresh interpreter
    that uses the session's kernel cache unless env says otherwise."""
    def run(code: str | Path, *args: str, env: dict | None = None, timeout: float = 240) -> Ran:
        full_env = {**os.environ, "TPP_CACHE_DIR": str(kernel_cache_dir), **(env or {})}
        cmd = [sys.executable, str(code)] if isinstance(code, Path) else [sys.executable, "-c", code]
        return Ran(subprocess.run(cmd + list(args), env=full_env, capture_output=True, text=True,
                                  timeout=timeout))
    return run
