"""Smoke tests of tpp-bench: tiny sizes, short repetitions, JSON fields."""
from __future__ import annotations

import json

import numpy as np
import pytest

import tpp
from tpp.bench import baselines, cli, repeat, suites

FAST = ["--repeat", "1", "--min-time", "0.2", "--no-pin", "--json"]


def _run(capsys, argv):
    assert cli.main(argv) == 0
    return json.loads(capsys.readouterr().out)


def test_repeat_loop_calls_the_kernel_count_times():
    add = tpp.binary("add", 3, 5)
    a = np.zeros((3, 5), np.float32)
    b = np.arange(15, dtype=np.float32).reshape(3, 5)
    run = repeat.kernel_runner(add, [a, b, a])       # a += b, natively, count times
    run(7)
    np.testing.assert_array_equal(a, 7 * b)


def test_repeat_loop_uses_row_strides():
    neg = tpp.unary("negate", 2, 3)
    big = np.arange(20, dtype=np.float32).reshape(4, 5)
    x, y = big[::2, 1:4], np.zeros((2, 8), np.float32)[:, :3]
    repeat.kernel_runner(neg, [x, y])(1)
    np.testing.assert_array_equal(y, -x)


def test_unary_json_fields(capsys):
    rows = _run(capsys, ["unary", "--kinds", "relu,exp", "-m", "8", "-n", "16", *FAST])
    assert [r["op"] for r in rows] == ["relu", "exp"]
    for r in rows:
        assert r["shape"] == "8x16" and r["dtype"] == "f32" and r["bytes"] == 2 * 8 * 16 * 4
        assert {"target", "cpu", "threads"} <= r.keys()
        for part in ("tpp_kernel", "tpp_call", "numpy"):
            assert r[part]["median_s"] > 0 and r[part]["gbps"] > 0
            assert r[part]["min_s"] <= r[part]["median_s"] <= r[part]["max_s"]
        assert r["ratio_kernel"] > 0 and r["ratio_call"] > 0
        assert r["baseline_agrees"] is True
    assert rows[1]["transcendental"] and not rows[0]["transcendental"]
    assert rows[0]["numpy"]["expr"] == "np.maximum(x, zeros, out=y)"


def test_binary_sizes_and_table(capsys):
    assert cli.main(["binary", "--kinds", "add,gt", "--sizes", "4x4,3x5",
                     "--repeat", "1", "--min-time", "0.2", "--no-pin"]) == 0
    text = capsys.readouterr().out
    assert "tpp-bench" in text and "GB/s" in text
    assert sum(line.startswith(("add ", "gt ")) for line in text.splitlines()) == 4


def test_unsupported_dtype_is_a_row_not_a_crash(capsys):
    rows = _run(capsys, ["unary", "--kinds", "exp", "-m", "4", "--dtype", "f64", *FAST])
    assert "error" in rows[0]


@pytest.mark.parametrize("family,table,catalog", [("unary", baselines.UNARY, suites.UNARY_KINDS),
                                                  ("binary", baselines.BINARY, suites.BINARY_KINDS)])
def test_baselines_agree_with_kernels(family, table, catalog):
    opts = suites.Options(repeat=1, min_time=1e-4, warmup=0)
    for kind in catalog:
        if kind not in table:
            continue
        row = suites.run_case(family, kind, 5, 19, "f32", opts)
        assert row.get("baseline_agrees") is True, (kind, row)


def test_compile_rows():
    rows = suites.compile_time.rows("copy", "f32", 1)
    assert [r["mode"] for r in rows] == ["cold", "disk"]
    assert all(r["ms"] > 0 for r in rows)
    assert rows[1]["verified_disk_hit"] is True


def test_gemm_json_fields_and_results(capsys):
    rows = _run(capsys, ["gemm", "--sizes", "16,8x24x5", *FAST])
    assert [(r["m"], r["n"], r["k"]) for r in rows] == [(16, 16, 16), (8, 24, 5)]
    for r in rows:
        assert r["suite"] == "gemm" and r["dtype"] == "f32" and r["beta"] == 0.0
        assert r["flops"] == 2 * r["m"] * r["n"] * r["k"] and r["layout"] == "A B"
        assert {"target", "cpu", "threads", "blas_threads", "machine_peak_gflops"} <= r.keys()
        assert r["peak"]["gflops"] > 0
        for part in ("tpp_kernel", "tpp_call", "numpy"):
            assert r[part]["median_s"] > 0 and r[part]["gflops"] > 0 and r[part]["us_per_call"] > 0
            assert r[part]["min_s"] <= r[part]["median_s"] <= r[part]["max_s"]
            assert 0 < r[part]["pct_peak_min"] <= r[part]["pct_peak"] <= r[part]["pct_peak_max"]
        assert r["ratio_kernel"] > 0 and r["ratio_call"] > 0
        assert r["numpy"]["expr"] == "np.matmul(a, b, out=c)"
        assert r["result_ok"] is True and r["baseline_agrees"] is True
        assert all(err <= r["tolerance"] for err in r["max_rel_err"].values())


def test_gemm_repeat_loop_computes_a_times_b_with_beta_0():
    """After a timed repetition each C holds op(A) op(B), not garbage + A B."""
    from tpp.bench import gemm_suite, timing
    c = gemm_suite.case(16, 16, 16, "f32", trans_a=True)
    timing.measure_many(c.runs(), repeat=2, min_time=1e-4, warmup=1)
    ref = c.a.astype(np.float64).T @ c.b.astype(np.float64)
    for name, out in c.outs.items():       # all started as NaN: beta=0 must not read C
        np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5, err_msg=name)


def test_gemm_table_and_bad_sizes(capsys):
    assert cli.main(["gemm", "--sizes", "8", "--trans-b", "--repeat", "1", "--min-time", "0.2",
                     "--no-pin"]) == 0
    text = capsys.readouterr().out
    assert "FMA peak f32" in text and "beta=0" in text and "%peak" in text
    assert any(line.startswith("gemm") and "A B^T" in line and line.endswith("ok")
               for line in text.splitlines())
    with pytest.raises(SystemExit):
        cli.main(["gemm", "--sizes", "8x8"])


def test_peak_loop_width_follows_the_target():
    from tpp.bench import peak
    target = tpp.current_target()
    pl = peak.loop(target, "f32")
    assert pl.lanes == target.vector_bits // 32 and pl.accumulators == peak.accumulators(target)
    assert f"<{target.vector_bits // 64} x double>" in peak.ir_text("p", target.vector_bits // 64, "f64", 2)
    pl.run(1)
    assert np.isfinite(np.frombuffer(peak.ffi.buffer(pl.out), np.float32)).all()
    assert peak.measure("f32", repeat=1, min_time=1e-3)["gflops"] > 0


def test_gemm_operands_are_64_byte_aligned():
    from tpp.bench import gemm_suite
    c = gemm_suite.case(5, 7, 3, "f64", trans_b=True)
    assert c.a.shape == (5, 3) and c.b.shape == (7, 3) and c.a.dtype == np.float64
    for x in [c.a, c.b, *c.outs.values()]:
        assert x.ctypes.data % 64 == 0 and x.flags.c_contiguous
