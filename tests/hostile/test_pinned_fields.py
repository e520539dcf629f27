"""Bugs the hostile field cases found, pinned in this process (each failed before its fix)."""
from __future__ import annotations

import numpy as np
import pytest

import tpp
import tpp.ops


def test_matmul_plan_fields_are_python_ints():
    """np.int8(16) as MatmulPlan.mb wrapped in the scratch sizes (mb * kb): a too-small
    panel buffer and a segfault."""
    plan = tpp.ops.MatmulPlan(mb=np.int8(16), nb=np.uint16(16), kb=np.int64(32), b_strip=np.uint8(2))
    assert all(type(getattr(plan, f)) is int for f in ("mb", "nb", "kb", "b_strip"))
    a, b = np.ones((37, 70), np.float32), np.ones((70, 29), np.float32)
    np.testing.assert_array_equal(tpp.ops.matmul(a, b, plan=plan, threads=2), np.full((37, 29), 70, np.float32))


@pytest.mark.parametrize("fields, match", [
    ({"mb": True}, "MatmulPlan.mb must be an integer, got the bool True"),
    ({"kb": 2.0}, "MatmulPlan.kb must be an integer"),
    ({"nb": 0}, r"MatmulPlan.nb must be in 1\.\."),
    ({"kb": 2 ** 40}, r"MatmulPlan.kb must be in 1\.\."),
    ({"order": ("mb",)}, "MatmulPlan.order must be"),
    ({"a_layout": None}, "MatmulPlan.a_layout must be one of"),
])
def test_bad_matmul_plans_are_refused(fields, match):
    with pytest.raises(tpp.DescriptorError, match=match):
        tpp.ops.MatmulPlan(**fields)


@pytest.mark.parametrize("epilogue, match", [
    (None, "epilogue must be a tuple of step names"), (5, "epilogue must be a tuple"),
    (("bias", "bias"), "adds 'bias' more than once"), (("softmax",), "step 'softmax' is not one of"),
    (("relu_grad",), "step 'relu_grad' is not one of"), ([["relu"]], "epilogue must be a tuple"),
])
def test_matmul_refuses_bad_epilogues(epilogue, match):
    """("bias", "bias") ended in "composite: tensor and scratch names must be unique", a
    plain ValueError; None and 5 in TypeError: 'NoneType' object is not iterable."""
    a = np.ones((4, 4), np.float32)
    with pytest.raises(tpp.DescriptorError, match=match):
        tpp.ops.matmul(a, a, epilogue=epilogue, bias=np.ones(4, np.float32))


@pytest.mark.parametrize("beta", ["x", None, 1j, [1.0], 2 ** 1000])
def test_gemm_beta_that_is_not_a_number(beta):
    """float(beta) raised a plain ValueError/TypeError/OverflowError."""
    for make in (tpp.gemm, tpp.brgemm):
        with pytest.raises(tpp.DescriptorError, match="beta must be"):
            make(4, 4, 4, beta=beta)


@pytest.mark.parametrize("epilogue", [None, 5])
def test_gemm_epilogue_that_is_not_a_sequence(epilogue):
    with pytest.raises(tpp.DescriptorError, match="epilogue must be a tuple of step names"):
        tpp.gemm(4, 4, 4, epilogue=epilogue)


@pytest.mark.parametrize("alpha", ["x", 1j, [0.5], True])
def test_bias_act_alpha_that_is_not_a_real_number(alpha):
    x = np.ones((2, 3), np.float32)
    with pytest.raises(tpp.DescriptorError, match="alpha must be None or a real number"):
        tpp.ops.bias_act(x, np.ones(3, np.float32), "leaky_relu", alpha=alpha)
