"""tpp.ops.BertLayer / bert_layer: one BERT encoder layer (post-LN, GELU), like
torch.nn.TransformerEncoderLayer(d, heads, 4 d, activation="gelu", batch_first=True,
norm_first=False) in eval mode, built from tpp.ops' pieces:

    qkv = x Wqkv^T + bqkv                    one matmul, Q, K and V weights side by side
    a   = attention(q, k, v, mask)           q, k, v are strided views of qkv; a is written
                                             straight into the (B, S, H*Dh) layout
    x1  = layer_norm(a Wo^T + bo + x)        matmul (bias) + ONE equation: residual + norm
    f   = gelu(x1 W1^T + b1)                 matmul with the bias and erf-GELU fused
    y   = layer_norm(f W2^T + b2 + x1)       matmul (bias) + the residual-norm equation

BertLayer packs the weights once (tpp.ops.pack_b), so a call does no weight packing.
params: torch's names and layouts (nn.Linear weights are (out, in)):
q_w, q_b, k_w, k_b, v_w, v_b, o_w, o_b, ln1_w, ln1_b, ff1_w, ff1_b, ff2_w, ff2_b,
ln2_w, ln2_b.
"""
from __future__ import annotations

import numpy as np

from ..errors import DTypeError, ShapeError
from .attention import attention
from .matmul import matmul
from .norms import layer_norm
from .packed import pack_b

WHAT = "tpp.ops.bert_layer"
NAMES = ("q_w", "q_b", "k_w", "k_b", "v_w", "v_b", "o_w", "o_b", "ln1_w", "ln1_b", "ff1_w", "ff1_b",
         "ff2_w", "ff2_b", "ln2_w", "ln2_b")


def _param(params: dict, name: str, shape: tuple[int, ...]) -> np.ndarray:
    if name not in params:
        raise KeyError(f"{WHAT}: params has no {name!r} (needs {', '.join(NAMES)})")
    value = params[name]
    if not isinstance(value, np.ndarray) or value.shape != shape or value.dtype != np.float32:
        raise ShapeError(f"{WHAT}: params[{name!r}] must be a float32 array of shape {shape}, got "
                         f"{getattr(value, 'shape', type(value).__name__)} {getattr(value, 'dtype', '')}")
    return np.ascontiguousarray(value)


class BertLayer:
    """A BERT encoder layer with its weights packed once; call it on x (B, S, d)."""

    def __init__(self, params: dict, heads: int, eps: float = 1e-5):
        if not isinstance(params, dict):
            raise TypeError(f"{WHAT}: params must be a dict of arrays, got {type(params).__name__}")
        if "q_w" not in params or getattr(params["q_w"], "ndim", 0) != 2:
            raise ShapeError(f"{WHAT}: params['q_w'] must be a (d, d) float32 array")
        d = params["q_w"].shape[1]
        if type(heads) is not int or heads < 1 or d % heads:
            raise ValueError(f"{WHAT}: heads must be a positive int dividing d = {d}, got {heads!r}")
        ff = params.get("ff1_w", np.empty((0, 0))).shape[0]
        p = {name: _param(params, name, shape) for name, shape in (
            ("q_w", (d, d)), ("k_w", (d, d)), ("v_w", (d, d)), ("o_w", (d, d)),
            ("q_b", (d,)), ("k_b", (d,)), ("v_b", (d,)), ("o_b", (d,)),
            ("ln1_w", (d,)), ("ln1_b", (d,)), ("ln2_w", (d,)), ("ln2_b", (d,)),
            ("ff1_w", (ff, d)), ("ff1_b", (ff,)), ("ff2_w", (d, ff)), ("ff2_b", (d,)))}
        self.d, self.heads, self.ff, self.eps = d, heads, ff, float(eps)
        self.wqkv = pack_b(np.concatenate([p["q_w"], p["k_w"], p["v_w"]]).T)
        self.bqkv = np.concatenate([p["q_b"], p["k_b"], p["v_b"]])
        self.wo, self.w1, self.w2 = pack_b(p["o_w"].T), pack_b(p["ff1_w"].T), pack_b(p["ff2_w"].T)
        self.p = p

    def __call__(self, x: np.ndarray, key_padding_mask: np.ndarray | None = None, *,
                 threads: int | None = None) -> np.ndarray:
        """x: float32 (B, S, d). key_padding_mask: bool (B, S), True where a key is
        padding (torch's src_key_padding_mask)."""
        if not isinstance(x, np.ndarray) or x.ndim != 3 or x.shape[2] != self.d:
            raise ShapeError(f"{WHAT}: x must be a (B, S, {self.d}) array, got {getattr(x, 'shape', type(x).__name__)}")
        if x.dtype != np.float32:
            raise DTypeError(f"{WHAT}: x must be float32, got {x.dtype}")
        bsz, s, d = x.shape
        h, dh = self.heads, self.d // self.heads
        mask = None
        if key_padding_mask is not None:
            if not isinstance(key_padding_mask, np.ndarray) or key_padding_mask.shape != (bsz, s) \
                    or key_padding_mask.dtype != np.bool_:
                raise ShapeError(f"{WHAT}: key_padding_mask must be a bool array of shape {(bsz, s)}, got "
                                 f"{getattr(key_padding_mask, 'shape', type(key_padding_mask).__name__)}")
            mask = ~key_padding_mask[:, None, None, :]
        p = self.p
        rows = np.ascontiguousarray(x).reshape(bsz * s, d)
        qkv = matmul(rows, self.wqkv, epilogue=("bias",), bias=self.bqkv, threads=threads)

        def heads_of(part: int) -> np.ndarray:       # (B, H, S, Dh) view of qkv's columns
            return qkv[:, part * d:(part + 1) * d].reshape(bsz, s, h, dh).transpose(0, 2, 1, 3)
        ctx = np.empty((bsz * s, d), np.float32)
        attention(heads_of(0), heads_of(1), heads_of(2), mask, out=ctx.reshape(bsz, s, h, dh).transpose(0, 2, 1, 3),
                  threads=threads)
        o = matmul(ctx, self.wo, epilogue=("bias",), bias=p["o_b"], threads=threads)
        x1 = layer_norm(o, p["ln1_w"], p["ln1_b"], self.eps, residual=rows, threads=threads)
        f = matmul(x1, self.w1, epilogue=("bias", "gelu_erf"), bias=p["ff1_b"], threads=threads)
        y = matmul(f, self.w2, epilogue=("bias",), bias=p["ff2_b"], threads=threads)
        return layer_norm(y, p["ln2_w"], p["ln2_b"], self.eps, residual=x1, out=y, threads=threads).reshape(bsz, s, d)


def bert_layer(x: np.ndarray, params: dict, heads: int, key_padding_mask: np.ndarray | None = None, *,
               eps: float = 1e-5, threads: int | None = None) -> np.ndarray:
    """One BERT encoder layer on x (B, S, d); packs the weights on every call (keep a
    BertLayer to pack them once)."""
    return BertLayer(params, heads, eps)(x, key_padding_mask, threads=threads)
