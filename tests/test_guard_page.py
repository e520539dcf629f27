"""No kernel reads or writes past its operands: remainder-shaped unary, binary,
reduction, transpose and cast kernels (f32 and bf16, contiguous and strided,
for each x86 target) run on arrays that touch a PROT_NONE guard page, in a separate process
(guard_page_check.py) so that a fault fails one test and names its case."""
from __future__ import annotations

import signal
from pathlib import Path

import pytest

from targets import X86, require

SCRIPT = Path(__file__).with_name("guard_page_check.py")
GROUPS = ["unary", "binary", "reduce", "transpose", "cast", "large"]


@pytest.mark.parametrize("where, offset", [("end", "a.nbytes"), ("start", "-4")])
def test_the_guard_pages_really_fault(where, offset, run_python):
    """The harness itself: one float past the end (or before the start) kills the process."""
    code = (f"import ctypes, sys; sys.path.insert(0, {str(SCRIPT.parent)!r}); import numpy as np; "
            f"import guard_page_check as g; a = g.fenced(3, np.float32, at_end={where == 'end'}); "
            f"a[:] = 1; print(ctypes.c_float.from_address(a.ctypes.data + {offset}).value)")
    assert run_python(code).returncode == -signal.SIGSEGV


@pytest.mark.parametrize("target", X86)
@pytest.mark.parametrize("group", GROUPS)
def test_kernels_stay_inside_their_operands(group, target, run_python):
    require(target)
    ran = run_python(SCRIPT, group, env={"TPP_TARGET": target})
    assert ran.returncode == 0, ran.report()
    assert ran.stdout.startswith(f"target {target}\n")
    assert ran.stdout.rstrip().endswith("all cases passed")
