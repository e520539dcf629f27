"""How tpp meets the machine it runs on: TPP_HOST_LIMIT's stand-in for an AVX2-only
CPU (what the suite's AVX2 run in CI uses), and `import tpp` from a source checkout's
root, where the checkout's tpp/ shadows an installed copy."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import tpp
from tpp import _checkout

from targets import require

ROOT = Path(__file__).resolve().parent.parent

LIMITED = """
import numpy as np, tpp
from tpp.jit.targets import Target
print(Target.host().name, Target.named("x86-avx512").runs_on_host, Target.named("x86-avx2").runs_on_host,
      tpp.current_target().name, tpp.unary("relu", 3, 5).target.name)
k = tpp.unary("relu", 3, 5, target="x86-avx512")
assert k.asm and "zmm" in k.asm                     # its code is still generated
try:
    k(np.zeros((3, 5), np.float32))
except tpp.TargetError as e:
    print("refused:", "cannot run" in str(e))
"""


def test_host_limit_makes_the_probe_see_an_avx2_only_cpu(run_python):
    ran = run_python(LIMITED, env={"TPP_HOST_LIMIT": "x86-avx2", "TPP_TARGET": ""}).check()
    assert ran.stdout.split("\n")[:2] == ["x86-avx2 False True x86-avx2 x86-avx2", "refused: True"]


def test_host_limit_override_in_process():
    before = tpp.jit.targets.host_limit()
    with tpp.config.override(host_limit="x86-avx2"):
        assert tpp.Target.host().name == "x86-avx2"
        assert not tpp.Target.named("x86-avx512").runs_on_host
        if tpp.config.get().target is None:
            assert tpp.current_target().name == "x86-avx2"
    assert tpp.jit.targets.host_limit() == before == tpp.config.get().host_limit      # restored


def test_host_limit_above_the_cpu_changes_nothing():
    with tpp.config.override(host_limit="x86-avx512"):
        assert tpp.Target.host() == tpp.jit.targets.x86.probe_host()


def test_bad_host_limit_is_refused(run_python):
    ran = run_python("import tpp", env={"TPP_HOST_LIMIT": "aarch64-sve"})
    assert ran.returncode != 0
    assert "host limit 'aarch64-sve' is not one of x86-avx2, x86-avx512 (TPP_HOST_LIMIT)" in ran.stderr


def test_limited_host_runs_what_it_can(rng):
    """Under the limit the AVX2 kernels are the host's and compute the same results."""
    with tpp.config.override(host_limit="x86-avx2", target=None):
        k = require(tpp.unary("sigmoid", 4, 9))
        assert k.target.name == "x86-avx2"
        x = rng.uniform(-5, 5, (4, 9)).astype(np.float32)
        np.testing.assert_allclose(k(x), k.reference(x), rtol=2e-6)


# ---- a source checkout --------------------------------------------------------------------
def test_checkout_root_is_found_only_for_a_checkout(tmp_path):
    assert _checkout.checkout_root(str(ROOT / "tpp")) == str(ROOT)
    installed = tmp_path / "site-packages" / "tpp"
    (installed / "jit").mkdir(parents=True)
    assert _checkout.checkout_root(str(installed)) is None
    bare = tmp_path / "elsewhere" / "tpp"                   # no pyproject.toml, no jit/ beside it
    bare.mkdir(parents=True)
    assert _checkout.checkout_root(str(bare)) is None


@pytest.mark.parametrize("cwd", ["root", "elsewhere"])
def test_subpackages_import_from_the_checkout_root(cwd, tmp_path, kernel_cache_dir):
    """Started in the checkout's root, `python -c 'import tpp'` takes the checkout's tpp/
    (first on sys.path) and must still find tpp.jit, tpp.kernels, tpp.ops, tpp.bench."""
    code = ("import tpp, tpp.jit, tpp.kernels, tpp.ops, tpp.bench, numpy as np; "
            "print(tpp.unary('relu', 2, 3)(np.full((2, 3), -1, np.float32)).sum())")
    env = {**os.environ, "TPP_CACHE_DIR": str(kernel_cache_dir)}
    env.pop("PYTHONPATH", None)
    ran = subprocess.run([sys.executable, "-c", code], cwd=ROOT if cwd == "root" else tmp_path, env=env,
                         capture_output=True, text=True, timeout=120)
    assert ran.returncode == 0, ran.stderr[-3000:]
    assert ran.stdout.strip() == "0.0"
