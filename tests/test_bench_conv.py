"""tpp-bench conv: the ResNet-50 conv rows beside their baseline (tiny shapes here, the
numpy baseline forced so that torch is not needed)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from tpp.bench import cli, conv_suite
from tpp.bench.conv_suite import Shape

FAST = ["--repeat", "1", "--min-time", "1", "--no-pin"]

TINY = (Shape("tiny_3x3", 8, 9, 9, 16, 3, 3, 1), Shape("tiny_s2", 16, 10, 10, 8, 1, 1, 2),
        Shape("tiny_stem", 3, 20, 20, 8, 7, 7, 2), Shape("tiny_dw", 16, 9, 9, 16, 3, 3, 1, groups=16))


@pytest.fixture
def tiny(monkeypatch):
    monkeypatch.setattr(conv_suite, "SHAPES", TINY)
    return TINY


def _rows(capsys, argv):
    assert cli.main(["conv", *argv, *FAST, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_the_resnet_shapes_and_the_depthwise_row():
    got = {(s.c, s.h, s.w, s.k, s.r, s.s, s.stride) for s in conv_suite.SHAPES if s.groups == 1}
    assert got >= {(64, 56, 56, 64, 1, 1, 1), (64, 56, 56, 64, 3, 3, 1), (64, 56, 56, 256, 1, 1, 1),
                   (128, 28, 28, 128, 3, 3, 1), (256, 14, 14, 256, 3, 3, 1), (512, 7, 7, 512, 3, 3, 1),
                   (256, 56, 56, 512, 1, 1, 2), (3, 224, 224, 64, 7, 7, 2)}
    (dw,) = [s for s in conv_suite.SHAPES if s.groups > 1]
    assert (dw.c, dw.h, dw.k, dw.r, dw.stride, dw.groups, dw.padding) == (256, 28, 256, 3, 1, 256, 1)
    stem = next(s for s in conv_suite.SHAPES if s.name == "stem")
    assert stem.padding == 3 and stem.out_hw == (112, 112) and stem.label() == "C3 224x224 K64 7x7 s2"
    assert stem.flops(1) == 2 * 64 * 3 * 49 * 112 * 112
    assert dw.flops(1) == 2 * 256 * 1 * 9 * 28 * 28
    assert [s.name for s in conv_suite.pick_shapes("1,stem,1")] == ["c2_3x3", "stem"]
    assert len(conv_suite.pick_shapes("resnet")) == len(conv_suite.SHAPES) - 1
    with pytest.raises(ValueError, match="unknown shape"):
        conv_suite.pick_shapes("c9_9x9")


@pytest.mark.parametrize("groups, stride, pad", [(1, 1, 1), (1, 2, 0), (2, 2, 3), (8, 1, 1)])
def test_numpy_baseline_is_conv2d(groups, stride, pad, rng):
    x = rng.standard_normal((2, 8, 11, 10), dtype=np.float32)
    k, r, s = 8, 3, 2
    w = rng.standard_normal((k, 8 // groups, r, s), dtype=np.float32)
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    p, q = (xp.shape[2] - r) // stride + 1, (xp.shape[3] - s) // stride + 1
    want = np.zeros((2, k, p, q))
    cg, kg = 8 // groups, k // groups
    for o in range(k):
        g = o // kg
        for i in range(p):
            for j in range(q):
                patch = xp[:, g * cg:(g + 1) * cg, i * stride:i * stride + r, j * stride:j * stride + s]
                want[:, o, i, j] = (patch * w[o]).sum(axis=(1, 2, 3))
    got = conv_suite.numpy_conv(x, w, stride, pad, groups)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_rows_with_the_numpy_baseline(capsys, tiny, monkeypatch):
    monkeypatch.setattr(conv_suite, "SETTLE", 0.01)      # the untimed waits between multi-thread repetitions
    rows = _rows(capsys, ["--threads", "1,2", "--baseline", "numpy"])
    assert [(r["name"], r["op"], r["threads"]) for r in rows] == [
        (s.name, op, t) for s in tiny for t in (1, 2) for op in ("conv", "conv blocked")]
    for r in rows:
        assert r["suite"] == "conv" and r["dtype"] == "f32" and r["result_ok"], r
        assert r["max_rel_err"] <= r["tolerance"] == 1e-3
        assert r["base_name"].startswith("numpy im2col") and r["baseline_kind"] == "numpy"
        assert ("BLAS 2 thr" in r["base_name"]) == (r["threads"] == 2)
        for part in ("tpp", "baseline"):
            assert r[part]["gflops"] > 0 and r[part]["ms_per_call"] > 0 and r[part]["reps"] == 1
        sh = next(s for s in tiny if s.name == r["name"])
        assert r["gflop"] == pytest.approx(sh.flops(1) / 1e9)
        assert r["tpp"]["gflops"] == pytest.approx(r["gflop"] / r["tpp"]["median_s"])
        assert r["ratio"] == pytest.approx(r["baseline"]["median_s"] / r["tpp"]["median_s"])
        assert r["peak_gflops"] > 0 and r["pct_peak"] > 0     # medians over repetitions (one here)
        assert r["pct_peak"] == pytest.approx(100 * r["tpp"]["gflops"] / (r["threads"] * r["peak_gflops"]))
        assert r["resnet"] == (sh.groups == 1) and r["padding"] == sh.r // 2
        assert (r["block"] is None) == (r["op"] == "conv")
    stem = next(r for r in rows if r["name"] == "tiny_stem" and r["op"] == "conv blocked")
    assert stem["block"] == 3            # C, not to_blocked's 16-channel default


def test_table_summary_and_bf16(capsys, tiny):
    assert cli.main(["conv", "--shapes", "0,tiny_dw", "--baseline", "numpy", "--dtype", "bf16", *FAST]) == 0
    text = capsys.readouterr().out
    assert "tpp/base" in text and "%peak" in text and "conv blocked c16" in text and "WRONG" not in text
    assert "bf16" in text and "numpy im2col+matmul f32 math" in text
    (summary,) = [line for line in text.splitlines() if line.startswith("summary")]
    assert "threads 1" in summary and "over 1 ResNet row(s)" in summary and "geomean" in summary
    assert "worst" in summary and "C8 9x9 K16 3x3 s1" in summary


def test_auto_baseline_without_torch(capsys, tiny, monkeypatch):
    monkeypatch.setattr(conv_suite, "torch", None)
    rows = _rows(capsys, ["--shapes", "tiny_s2"])
    assert {r["baseline_kind"] for r in rows} == {"numpy"} and all(r["result_ok"] for r in rows)
    with pytest.raises(SystemExit):
        cli.main(["conv", "--baseline", "torch", *FAST])
    assert "torch is not installed" in capsys.readouterr().err


def test_torch_baseline_where_installed(capsys, tiny):
    pytest.importorskip("torch")
    rows = _rows(capsys, ["--shapes", "tiny_stem,tiny_dw", "--baseline", "torch"])
    assert {r["base_name"] for r in rows} == {"torch conv2d"} and all(r["result_ok"] for r in rows)


def test_depthwise_row_skipped_when_its_kernel_is_missing(capsys, tiny, monkeypatch):
    monkeypatch.setattr(conv_suite, "_depthwise_missing", lambda: "tpp.ops.depthwise does not import (test)")
    rows = _rows(capsys, ["--shapes", "tiny_dw,tiny_s2", "--baseline", "numpy"])
    assert [r.get("error") for r in rows[:1]] == ["tpp.ops.depthwise does not import (test)"]
    assert [r["op"] for r in rows[1:]] == ["conv", "conv blocked"]
    assert cli.main(["conv", "--shapes", "tiny_dw", "--baseline", "numpy", *FAST]) == 0
    assert "skipped conv C16 9x9 K16 3x3 s1 g16 f32 threads 1: tpp.ops.depthwise" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["--shapes", "nope"], "unknown shape"), (["--shapes", ","], "picked no rows"),
    (["--threads", "0"], "--threads must be >= 1"), (["--threads", "x"], "bad thread count"),
    (["--dtype", "f64"], "invalid choice"), (["--baseline", "mkl"], "invalid choice"),
    (["--threads", "1,2", "--cpu", "0"], "--cpu applies to --threads 1"), (["--batch", "0"], "--batch")])
def test_bad_options_error_cleanly(capsys, argv, message):
    with pytest.raises(SystemExit) as exc:
        cli.main(["conv", *argv])
    assert exc.value.code == 2
    captured = capsys.readouterr()
    assert message in captured.err and captured.out == ""


def test_plot(capsys, tiny, tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "conv.png"
    assert cli.main(["conv", "--shapes", "tiny_3x3,tiny_s2", "--baseline", "numpy", *FAST, "--json",
                     "--plot", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "plot:" in capsys.readouterr().err
