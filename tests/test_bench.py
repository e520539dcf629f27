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


# ---- dot peaks, bf16/u8s8 GEMM, BRGEMM, matmul -------------------------------------

@pytest.mark.parametrize("dtype,instr,per_lane", [("bf16", "vdpbf16ps", 4), ("u8s8", "vpdpbusd", 8)])
def test_dot_peak_loops(dtype, instr, per_lane):
    from tpp.bench import peak
    from tpp.jit import compiler
    target = tpp.current_target()
    reason = peak.available(target, dtype)
    if reason is not None:       # reported, not measured
        assert peak.measure(dtype, repeat=1, min_time=1e-3) == {
            "dtype": dtype, "unit": peak.KINDS[dtype].unit, "what": peak.KINDS[dtype].what,
            "available": False, "reason": f"tpp-bench peak {dtype}: {reason}"}
        pytest.skip(reason)
    pl = peak.loop(target, dtype)
    assert pl.flops_per_instruction == per_lane * pl.lanes == per_lane * target.vector_bits // 32
    n_acc = peak.accumulators(target)
    text = peak.ir_text("p", pl.lanes, dtype, n_acc, peak.intrinsic(target, dtype))
    asm = compiler.emit_assembly(compiler.optimise(text, target), target)
    assert sum(instr in line for line in asm.splitlines()) == n_acc      # not folded away
    pl.run(1)
    got = peak.measure(dtype, repeat=1, min_time=1e-3)
    assert got["available"] and got["gflops"] > 0 and peak.intrinsic(target, dtype) in got["loop"]


def test_dot_peak_unavailable_on_a_target_without_the_instruction():
    from tpp.bench import peak
    avx2 = tpp.Target.named("x86-avx2")
    assert "bf16_dot.v8f32 is not in its intrinsic table" in peak.available(avx2, "bf16")
    got = peak.measure("bf16", repeat=1, min_time=1e-3, target=avx2)
    assert got["available"] is False and "bf16_dot" in got["reason"]
    with pytest.raises(peak.Unavailable):
        peak.loop(avx2, "bf16")


def test_gemm_bf16_rows(capsys):
    from tpp.bench import peak
    rows = _run(capsys, ["gemm", "--dtype", "bf16", "--sizes", "16,8x24x5", *FAST])
    has_peak = peak.available(None, "bf16") is None
    for r in rows:
        assert r["dtype"] == "bf16" and r["layout"] == "A B(vnni)" and r["unit"] == "GFLOP/s"
        assert r["packed_ok"] and r["result_ok"] and r["baseline_agrees"], r["max_rel_err"]
        assert 0 < r["max_rel_err"]["tpp_kernel"] <= r["tolerance"]      # rounded like f32, not exact
        assert "float32" in r["numpy"]["expr"]
        assert (r["tpp_kernel"]["pct_peak"] > 0) if has_peak else r["tpp_kernel"]["pct_peak"] is None
    assert rows[0]["machine_peak_gflops"] > 0 if has_peak else "machine_peak_gflops" not in rows[0]


def test_gemm_u8s8_rows_are_exact_and_compare_to_f32(capsys):
    rows = _run(capsys, ["gemm", "--dtype", "u8s8", "--sizes", "16,8x24x5", *FAST])
    for r in rows:
        assert r["unit"] == "GOP/s" and r["result_ok"] and r["packed_ok"] and r["baseline_agrees"]
        assert r["max_rel_err"] == {"tpp_kernel": 0.0, "tpp_call": 0.0, "numpy": 0.0, "tpp_f32": 0.0}
        assert r["tpp_f32"]["gflops"] > 0 and r["int8_over_f32"] > 0
        assert r["int8_over_f32_min"] <= r["int8_over_f32"] <= r["int8_over_f32_max"]


def test_dot_gemm_table_and_errors(capsys):
    assert cli.main(["gemm", "--dtype", "u8s8", "--sizes", "8", "--repeat", "1", "--min-time", "0.2",
                     "--no-pin"]) == 0
    text = capsys.readouterr().out
    assert "int8 dot peak (u8s8)" in text and "FMA peak f32" in text
    assert "kern GOP/s" in text and "i8/f32" in text
    assert any(line.startswith("gemm") and line.endswith("ok") for line in text.splitlines())
    with pytest.raises(SystemExit):
        cli.main(["gemm", "--dtype", "bf16", "--trans-a"])


@pytest.mark.parametrize("variant", ["stride", "offset", "address"])
def test_brgemm_raw_table_follows_the_abi(variant):
    """The hand-filled tpp_tensor table computes what br(...) computes: sum_i A_i B_i."""
    from tpp.bench import brgemm_suite, gemm_suite
    batch, m, n, k = 3, 5, 19, 7
    rng = np.random.default_rng(1)
    a = gemm_suite.aligned_empty((batch, m, k), np.float32)
    b = gemm_suite.aligned_empty((batch, k, n), np.float32)
    a[...], b[...] = rng.uniform(-1, 1, a.shape), rng.uniform(-1, 1, b.shape)
    br = tpp.brgemm(m, n, k, variant=variant, beta=0.0)
    c_raw, c_call = np.full((m, n), np.nan, np.float32), np.full((m, n), np.nan, np.float32)
    args, keep = brgemm_suite.kernel_args(variant, a, b, c_raw)
    repeat.address_runner(br.address, br.kernel.target, args, keep)(2)     # beta=0: twice = once
    brgemm_suite.call_fn(br, variant, a, b, c_call)()
    ref = np.einsum("imk,ikn->mn", a.astype(np.float64), b.astype(np.float64))
    np.testing.assert_allclose(c_raw, ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(c_raw, c_call)


def test_brgemm_rows(capsys):
    rows = _run(capsys, ["brgemm", "--sizes", "8x24x5", "--batch", "3", "--variant", "all", *FAST])
    assert [r["variant"] for r in rows] == ["stride", "offset", "address"]
    for r in rows:
        assert r["suite"] == "brgemm" and r["batch"] == 3 and r["flops"] == 2 * 8 * 24 * 5 * 3
        assert r["result_ok"] and r["baseline_agrees"], r["max_rel_err"]
        assert r["tpp_kernel"]["pct_peak"] > 0 and r["peak"]["gflops"] > 0
        assert r["numpy"]["candidates"] == 3 and r["numpy"]["expr"] in r["numpy"]["all_us"]
    with pytest.raises(SystemExit):
        cli.main(["brgemm", "--variant", "strided"])


def test_matmul_rows_and_table(capsys):
    rows = _run(capsys, ["matmul", "--sizes", "40x30x20", "--threads", "1,2", *FAST])
    assert [(r["threads"], r["shape"]) for r in rows] == [(1, "40x30x20"), (2, "40x30x20")]
    for r in rows:
        assert r["result_ok"] and r["baseline_agrees"], r["max_rel_err"]
        assert r["tpp"]["gflops"] > 0 and r["numpy"]["gflops"] > 0 and r["ratio"] > 0
    assert "speedup_vs_1" not in rows[0] and rows[1]["speedup_vs_1"] > 0
    assert cli.main(["matmul", "--sizes", "16", "--threads", "1", "--repeat", "1", "--min-time", "0.2"]) == 0
    text = capsys.readouterr().out
    assert "topology: CPUs" in text and "not pinned" in text and "tpp/np" in text
    with pytest.raises(SystemExit):
        cli.main(["matmul", "--cpu", "0"])


@pytest.mark.parametrize("dtype", ["bf16", "f64"])
def test_matmul_other_dtypes(dtype, capsys):
    rows = _run(capsys, ["matmul", "--sizes", "40x30x20", "--threads", "1", "--dtype", dtype, *FAST])
    (r,) = rows
    assert r["dtype"] == dtype and r["result_ok"] and r["baseline_agrees"], r["max_rel_err"]
    assert ("float32 copies" in r["numpy"]["expr"]) == (dtype == "bf16")


def test_matmul_transposed_views(capsys):
    (r,) = _run(capsys, ["matmul", "--sizes", "40x30x20", "--threads", "1", "--trans-a", "--trans-b", *FAST])
    assert r["layout"] == "A^T B^T" and r["result_ok"] and r["baseline_agrees"], r["max_rel_err"]
    assert "a = at.T, b = bt.T" in r["numpy"]["expr"]


def test_topology_facts():
    from tpp.bench import matmul_suite
    info = matmul_suite.topology(measure=False)
    assert info["cpus"] and set(info["siblings"]) == set(info["cpus"])
    assert "fma_scaling_2cpus" not in info
    assert "distinct core" in matmul_suite.describe_topology(info)


def test_prepare_hook_runs_untimed_before_each_repetition():
    from tpp.bench import timing
    calls = []
    noop = timing.loop(lambda: None)
    _, per_op = timing.sample_many({"x": noop, "y": noop}, repeat=3, min_time=1e-5,
                                        warmup=1, prepare={"x": lambda: calls.append(1)})
    assert len(per_op["x"]) == 3 and len(calls) == 1 + 1 + 3       # calibration, warm-up, repetitions


def test_quick_suite_has_the_brgemm_target():
    from tpp.bench import brgemm_suite
    assert brgemm_suite.QUICK == ((64, 64, 64, 16, "stride"),)


# ---- info, capi, --plot ----------------------------------------------------------------------
def test_info_json(capsys):
    found = _run(capsys, ["info", *FAST])
    assert found["target"] == tpp.current_target().name
    assert found["vector_bits"] in (256, 512) and found["threads"] >= 1
    assert {t["name"] for t in found["targets"]} >= {"x86-avx2", "x86-avx512"}
    f32 = next(p for p in found["peaks"] if p["dtype"] == "f32")
    assert f32["available"] and f32["gflops"] > 0
    assert found["cache_files"] >= 0 and "cache_dir" in found


def test_info_text(capsys):
    assert cli.main(["info", "--repeat", "1", "--min-time", "0.2"]) == 0
    out = capsys.readouterr().out
    assert "target:" in out and "cache:" in out and "peak:      FMA f32" in out


@pytest.mark.skipif(__import__("shutil").which("cc") is None, reason="no C compiler")
def test_capi_rows(capsys):
    rows = _run(capsys, ["capi", "--sizes", "16", *FAST])
    (row,) = rows
    assert "error" not in row, row.get("error")
    assert row["c"]["gflops"] > 0 and row["py_kernel"]["gflops"] > 0
    assert row["libxsmm_reference_gflops"] == 91.3
    assert row["cached_dispatch_us"] < row["first_dispatch_disk_ms"] * 1e3
    assert row["init_ms"] > 0 and row["first_dispatch_jit_ms"] > 0


def test_plot_writes_an_image(capsys, tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "gemm.png"
    assert cli.main(["gemm", "--sizes", "8,16", *FAST, "--plot", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    out2 = tmp_path / "unary.png"
    assert cli.main(["unary", "--kinds", "relu", "--sizes", "8x8,16x16", *FAST, "--plot", str(out2)]) == 0
    assert out2.stat().st_size > 1000


def test_progress_line_only_on_a_terminal(monkeypatch, capsys):
    class Tty:
        def __init__(self):
            self.text = ""

        def isatty(self):
            return True

        def write(self, s):
            self.text += s

        def flush(self):
            pass
    tty = Tty()
    monkeypatch.setattr(cli.sys, "stderr", tty)
    cli._progress("gemm 64x64x64", 1, 4)
    cli._progress("done", 4, 4)
    assert "[######..................] 1/4 gemm 64x64x64" in tty.text and tty.text.endswith("\n")
    monkeypatch.undo()
    cli._progress("quiet", 1, 2)                 # pytest's stderr is not a terminal
    assert capsys.readouterr().err == ""


def test_target_option(capsys):
    rows = _run(capsys, ["gemm", "--sizes", "16", "--target", "x86-avx2", *FAST])
    assert rows[0]["target"] == "x86-avx2" and rows[0]["result_ok"]
    with pytest.raises(SystemExit):
        cli.main(["gemm", "--target", "nvptx-sm90", *FAST])
    with pytest.raises(SystemExit):
        cli.main(["gemm", "--target", "riscv-v", *FAST])
    assert "unknown target" in capsys.readouterr().err


def test_gpu_rows_without_a_gpu_and_the_gemm_table(capsys):
    rows = _run(capsys, ["gpu", *FAST])
    if not tpp.cuda.available():
        assert {r["op"] for r in rows} >= {"add", "gemm"} and all("error" in r for r in rows)
    from tpp.bench import report
    fake = {"suite": "gpu", "table": "gpu_gemm", "op": "gemm", "shape": "4096x4096x4096", "dtype": "bf16",
            "target": "nvptx-sm90", "tflops": 300.0, "ms": 0.46, "torch_tflops": 700.0, "pct_torch": 42.9,
            "result_ok": True}
    text = report.table([fake, {**fake, "torch_tflops": None, "pct_torch": None}])
    assert "torch.matmul TFLOP/s" in text and "43%" in text and "ok" in text
