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
