"""`tpp-bench attention | norm | bert`: the transformer pieces beside their baselines,
same data, repetitions interleaved, one row per (op, shape, threads).

    attention  tpp.ops.attention(q, k, v, causal=)  vs  torch's scaled_dot_product_attention
               (GFLOP/s: 4 B H Sq Sk D, halved for causal)
    norm       tpp.ops.layer_norm / softmax on (4096, 768)  vs  torch.nn.functional's
               (GB/s: x read, y written)
    bert       tpp.ops.BertLayer(params, heads)(x)  vs  torch.nn.TransformerEncoderLayer
               (d, heads, 4 d, gelu, batch_first, post-LN) in eval mode (ms; tpp/base is
               the latency ratio)

The baseline is torch where it is installed (the CPU wheel: `pip install
torch==2.13.0+cpu`), set to the same thread count, else the numpy expression of the same computation; the
"baseline is" column says which. Every result is checked against the baseline's.
"""
from __future__ import annotations

import time

import numpy as np

import tpp.ops

from . import timing
from .ops_suite import _row

try:
    import torch
except ImportError:        # the bench's optional extra
    torch = None


def _threads(n: int) -> None:
    if torch is not None:
        torch.set_num_threads(n)


SETTLE = 0.2     # s: torch's OpenMP threads spin after a multi-thread call (as OpenBLAS's do)


def _measure(runs: dict, threads: int, opts) -> dict:
    """Interleaved repetitions; with several threads each contender first waits, untimed,
    for the one before to stop spinning on the CPUs it wants (bench/matmul_suite.py)."""
    prepare = {name: (lambda: time.sleep(SETTLE)) for name in runs} if threads > 1 else None
    counts, per_op = timing.sample_many(runs, repeat=opts.repeat, min_time=opts.min_time, prepare=prepare)
    return {name: timing.stats_of(per_op[name], counts[name]) for name in runs}


def _numpy_attention(q, k, v, causal):
    s = np.matmul(q, np.swapaxes(k, -1, -2)) / np.sqrt(q.shape[-1])
    if causal:
        s = s + np.where(np.tri(s.shape[-2], s.shape[-1], dtype=bool), 0, -np.inf).astype(np.float32)
    s = np.exp(s - s.max(-1, keepdims=True))
    return np.matmul(s / s.sum(-1, keepdims=True), v)


ATTENTION = ((1, 12, 512, 64, False), (1, 12, 2048, 64, False), (1, 12, 2048, 64, True))


def attention_rows(thread_counts, opts, cases=None, dtype="f32") -> list[dict]:
    rows = []
    cases = ATTENTION if cases is None else cases
    rng = np.random.default_rng(0)
    for b, h, s, d, causal in cases:
        q, k, v = (rng.standard_normal((b, h, s, d), dtype=np.float32) for _ in range(3))
        flops = 4 * b * h * s * s * d / (2 if causal else 1)
        for threads in thread_counts:
            _threads(threads)
            runs = {"tpp": timing.loop(lambda: tpp.ops.attention(q, k, v, causal=causal, threads=threads))}
            if torch is not None:
                tq, tk, tv = (torch.from_numpy(x) for x in (q, k, v))
                sdpa = torch.nn.functional.scaled_dot_product_attention
                runs["torch sdpa"] = timing.loop(lambda: sdpa(tq, tk, tv, is_causal=causal))
                want = sdpa(tq, tk, tv, is_causal=causal).numpy()
            else:
                runs["numpy sdpa"] = timing.loop(lambda: _numpy_attention(q, k, v, causal))
                want = _numpy_attention(q, k, v, causal)
            stats = _measure(runs, threads, opts)
            ok = np.allclose(tpp.ops.attention(q, k, v, causal=causal), want, rtol=1e-4, atol=1e-4)
            rows.append(_row("attention" + (" causal" if causal else ""), f"B{b} H{h} S{s} D{d}", dtype, threads,
                             "GFLOP/s", flops / 1e9, stats, "tpp", ok))
    return rows


NORM_SHAPES = ((4096, 768),)


def norm_rows(thread_counts, opts, shapes=None) -> list[dict]:
    rows = []
    shapes = NORM_SHAPES if shapes is None else shapes
    rng = np.random.default_rng(1)
    for m, n in shapes:
        x = rng.standard_normal((m, n), dtype=np.float32)
        w, b = rng.standard_normal(n, dtype=np.float32), rng.standard_normal(n, dtype=np.float32)
        y = np.empty_like(x)
        gbytes = 2 * x.nbytes / 1e9
        for threads in thread_counts:
            _threads(threads)
            for name, ours, theirs, np_fn in (
                    ("layer_norm", lambda: tpp.ops.layer_norm(x, w, b, out=y, threads=threads),
                     lambda tx, tw, tb: torch.nn.functional.layer_norm(tx, (n,), tw, tb),
                     lambda: _numpy_layer_norm(x, w, b)),
                    ("softmax", lambda: tpp.ops.softmax(x, out=y, threads=threads),
                     lambda tx, tw, tb: torch.softmax(tx, -1), lambda: _numpy_softmax(x))):
                runs = {"tpp": timing.loop(ours)}
                if torch is not None:
                    tx, tw, tb = (torch.from_numpy(a) for a in (x, w, b))
                    runs["torch"] = timing.loop(lambda: theirs(tx, tw, tb))
                    want = theirs(tx, tw, tb).numpy()
                else:
                    runs["numpy"] = timing.loop(np_fn)
                    want = np_fn()
                stats = _measure(runs, threads, opts)
                ours()
                ok = np.allclose(y, want, rtol=1e-4, atol=1e-5)
                rows.append(_row(name, f"{m}x{n}", "f32", threads, "GB/s", gbytes, stats, "tpp", ok))
    return rows


def _numpy_layer_norm(x, w, b):
    mu = x.mean(-1, keepdims=True)
    d = x - mu
    return d / np.sqrt((d * d).mean(-1, keepdims=True) + 1e-5) * w + b


def _numpy_softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


BERT = ((1, 128, 768, 12), (1, 512, 768, 12))


def random_params(d: int, rng, ff: int | None = None) -> dict:
    """A BERT layer's parameters (torch's names and layouts), scaled like an initialised model."""
    ff = 4 * d if ff is None else ff
    shapes = {"q_w": (d, d), "k_w": (d, d), "v_w": (d, d), "o_w": (d, d), "ff1_w": (ff, d), "ff2_w": (d, ff)}
    params = {name: (rng.standard_normal(shape) / np.sqrt(shape[1])).astype(np.float32)
              for name, shape in shapes.items()}
    for name, n in (("q_b", d), ("k_b", d), ("v_b", d), ("o_b", d), ("ff1_b", ff), ("ff2_b", d),
                    ("ln1_b", d), ("ln2_b", d)):
        params[name] = (0.1 * rng.standard_normal(n)).astype(np.float32)
    for name in ("ln1_w", "ln2_w"):
        params[name] = (1 + 0.1 * rng.standard_normal(d)).astype(np.float32)
    return params


def numpy_bert_layer(x, params, heads, key_padding_mask=None, eps=1e-5):
    """The same layer in float64 numpy (tests' and the bench's reference)."""
    from math import erf
    p = {k: v.astype(np.float64) for k, v in params.items()}
    b, s, d = x.shape
    dh = d // heads
    x = x.astype(np.float64)

    def split(t):
        return t.reshape(b, s, heads, dh).transpose(0, 2, 1, 3)
    q, k, v = (split(x @ p[f"{n}_w"].T + p[f"{n}_b"]) for n in "qkv")
    scores = q @ k.transpose(0, 1, 3, 2) / np.sqrt(dh)
    if key_padding_mask is not None:
        scores = scores + np.where(key_padding_mask[:, None, None, :], -np.inf, 0.0)
    e = np.exp(scores - scores.max(-1, keepdims=True))
    a = ((e / e.sum(-1, keepdims=True)) @ v).transpose(0, 2, 1, 3).reshape(b, s, d)

    def norm(t, w, bias):
        mu = t.mean(-1, keepdims=True)
        return (t - mu) / np.sqrt(((t - mu) ** 2).mean(-1, keepdims=True) + eps) * w + bias
    x1 = norm(x + a @ p["o_w"].T + p["o_b"], p["ln1_w"], p["ln1_b"])
    hidden = x1 @ p["ff1_w"].T + p["ff1_b"]
    hidden = hidden * 0.5 * (1 + np.vectorize(erf)(hidden / np.sqrt(2)))
    return norm(x1 + hidden @ p["ff2_w"].T + p["ff2_b"], p["ln2_w"], p["ln2_b"])


def bert_rows(thread_counts, opts, cases=None) -> list[dict]:
    rows = []
    cases = BERT if cases is None else cases
    rng = np.random.default_rng(2)
    for b, s, d, heads in cases:
        params = random_params(d, rng)
        x = rng.standard_normal((b, s, d), dtype=np.float32)
        layer = tpp.ops.BertLayer(params, heads)
        for threads in thread_counts:
            _threads(threads)
            runs = {"tpp": timing.loop(lambda: layer(x, threads=threads))}
            if torch is not None:
                ref = _torch_layer(params, d, heads)
                tx = torch.from_numpy(x)

                def torch_run():
                    with torch.inference_mode():
                        return ref(tx)
                runs["torch TransformerEncoderLayer"] = timing.loop(torch_run)
                want = torch_run().numpy()
            else:
                runs["numpy"] = timing.loop(lambda: numpy_bert_layer(x, params, heads))
                want = numpy_bert_layer(x, params, heads)
            stats = _measure(runs, threads, opts)
            ok = np.allclose(layer(x), want, rtol=1e-3, atol=1e-3)
            # latency: "tpp" and "baseline" columns are calls per second; tpp/base the speed-up
            rows.append(_row("bert_layer", f"B{b} S{s} d{d} H{heads}", "f32", threads, "calls/s", 1.0, stats,
                             "tpp", ok))
    return rows


def _torch_layer(params, d, heads):
    layer = torch.nn.TransformerEncoderLayer(d, heads, 4 * d, dropout=0.0, activation="gelu", batch_first=True,
                                             norm_first=False)
    layer.eval()
    sd = {"self_attn.in_proj_weight": np.concatenate([params["q_w"], params["k_w"], params["v_w"]]),
          "self_attn.in_proj_bias": np.concatenate([params["q_b"], params["k_b"], params["v_b"]]),
          "self_attn.out_proj.weight": params["o_w"], "self_attn.out_proj.bias": params["o_b"],
          "linear1.weight": params["ff1_w"], "linear1.bias": params["ff1_b"],
          "linear2.weight": params["ff2_w"], "linear2.bias": params["ff2_b"],
          "norm1.weight": params["ln1_w"], "norm1.bias": params["ln1_b"],
          "norm2.weight": params["ln2_w"], "norm2.bias": params["ln2_b"]}
    layer.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in sd.items()})
    return layer
