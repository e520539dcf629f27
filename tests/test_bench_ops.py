"""tpp-bench ops: bias_act and segment_sum rows beside their baselines (small sizes here)."""
from __future__ import annotations

import json

from tpp.bench import cli, ops_suite

FAST = ["--repeat", "1", "--min-time", "0.05", "--json"]


def test_ops_rows_and_table(capsys, monkeypatch):
    monkeypatch.setattr(ops_suite, "BIAS_SHAPES", ((37, 70),))
    monkeypatch.setattr(ops_suite, "SEGMENT_SIZES", ((300, 5, "uniform"), (300, 5, "power-law")))
    assert cli.main(["ops", "--threads", "1,2", *FAST]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["op"], r["threads"]) for r in rows] == [
        ("bias_act relu", 1), ("bias_act relu", 2), ("segment_sum uniform", 1), ("segment_sum uniform", 2),
        ("segment_sum power-law", 1), ("segment_sum power-law", 2)]
    for r in rows:
        assert r["result_ok"] and r["tpp"] > 0 and r["base"] > 0 and r["ratio"] > 0
        assert r["base_name"] in r["stats"] and "tpp" in r["stats"]
    assert cli.main(["ops", "--threads", "1", "--repeat", "1", "--min-time", "0.05"]) == 0
    text = capsys.readouterr().out
    assert "tpp/base" in text and "segment_sum power-law" in text and "WRONG" not in text


def _small_transformer(monkeypatch):
    from tpp.bench import transformer_suite as ts
    monkeypatch.setattr(ts, "ATTENTION", ((1, 2, 70, 32, False), (1, 2, 70, 32, True)))
    monkeypatch.setattr(ts, "NORM_SHAPES", ((33, 100),))
    monkeypatch.setattr(ts, "BERT", ((1, 9, 32, 2),))
    return ts


def test_transformer_rows_with_whichever_baseline(capsys, monkeypatch):
    ts = _small_transformer(monkeypatch)
    for torch_present in (True, False):
        if not torch_present:
            monkeypatch.setattr(ts, "torch", None)          # the numpy baselines
        for command, ops in (("attention", ["attention", "attention causal"]), ("norm", ["layer_norm", "softmax"]),
                             ("bert", ["bert_layer"])):
            assert cli.main([command, "--threads", "1,2", *FAST]) == 0
            rows = json.loads(capsys.readouterr().out)
            assert sorted({r["op"] for r in rows}) == sorted(ops)
            assert {r["threads"] for r in rows} == {1, 2}
            for r in rows:
                assert r["result_ok"] and r["tpp"] > 0 and r["ratio"] > 0
                assert r["base_name"].startswith("torch" if ts.torch is not None else "numpy")
