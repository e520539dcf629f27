"""tpp.ops.conv2d_backward: the gradients of torch.nn.functional.conv2d(x, w, b, stride,
padding, dilation, groups) for an upstream gradient dy, as torch's autograd gives them:

    dx = conv_transpose2d(dy, w, ...)     (N, C, H, W)
    dw[k, c, r, s] = sum over (n, p, q) of dy[n, k, p, q] x_pad[n, g c, p sh + r dh, q sw + s dw]
    dbias = dy summed over (N, P, Q)

ONE composite computes all three (ops/conv_backward_plan.py): padded blocked copies of
x and dy and the K <-> C transposed filter in blocks, then a BRGEMM per dx row phase
(the backward-data convolution: dy against the transposed filter, only the taps that
reach each row, so a strided convolution costs no extra flops) and per (dw block, tap)
BRGEMMs over image rows. Python only checks the arguments and builds the offset tables
(once per geometry); the filter's rearrangement (a per-call transpose pass: the filter
changes every training step) runs in the kernel like everything else.
"""
from __future__ import annotations

import functools

import numpy as np

from .. import compose
from ..errors import ArgumentError, DTypeError, ShapeError
from .args import element_strides
from .conv_backward_plan import CHUNK_BYTES, ConvBackwardDesc, dw_chunk
from .conv_geometry import channel_block, conv_window

WHAT = "tpp.ops.conv2d_backward"
MAX_BLOCK = 64      # channels per GEMM operand block
# dx's reduction block over dy channels where K/groups > MAX_BLOCK: 32 beat 16 and 64 by
# 3-5% at K = C = 128 and 256 (3x3, 28x28 / 14x14, Zen 4, min of 21 runs)
KD_BLOCK = 32
# dw's output channels per GEMM: 32 ran as fast as 64 on one thread and doubles the blocks
# that threads share (64 channels, 3x3: 6, not 3 for two threads)
KW_BLOCK = 32
SWAP_LANES = 16     # one f32 vector of AVX-512


def _array(name: str, a, ndim: int, shape_doc: str) -> np.ndarray:
    if not isinstance(a, np.ndarray) or a.ndim != ndim:
        raise ShapeError(f"{WHAT}: argument '{name}' must be a {ndim}-D {shape_doc} array, got "
                         f"{getattr(a, 'shape', type(a).__name__)}")
    if a.dtype != np.float32:
        raise DTypeError(f"{WHAT}: argument '{name}' must be float32, got {a.dtype}")
    # the kernel reads unit-stride rows with positive strides; anything else is copied
    if a.size and (any(st <= 0 for st, e in zip(a.strides, a.shape) if e > 1)
                   or a.shape[-1] > 1 and a.strides[-1] != a.itemsize
                   or a.shape[1] > 1 and a.strides[1] < a.shape[2] * a.shape[3] * a.itemsize):
        a = np.ascontiguousarray(a)
    return a


@functools.lru_cache(maxsize=256)
def _tables(desc: ConvBackwardDesc) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    offs, counts = desc.dx_offsets()
    return offs, counts, desc.dw_offsets()


def conv2d_backward(dy: np.ndarray, x: np.ndarray, w: np.ndarray, stride=1, padding=0, dilation=1,
                    groups: int = 1, *, threads: int | None = None):
    """(dx, dw, dbias) of y = torch.nn.functional.conv2d(x, w, b, stride, padding, dilation,
    groups) for the upstream gradient dy: float32 NCHW arrays dy (N, K, P, Q), x (N, C, H,
    W), w (K, C/groups, R, S); padding an int, a pair, "same" or "valid". dx has x's
    shape, dw w's, dbias is (K,) (dy summed over N, P, Q; use it or not as the forward
    had a bias)."""
    threads = compose.threads_arg(WHAT, threads)
    dy = _array("dy", dy, 4, "(N, K, P, Q)")
    x = _array("x", x, 4, "(N, C, H, W)")
    w = np.ascontiguousarray(_array("w", w, 4, "(K, C/groups, R, S)"))
    if isinstance(groups, bool) or not isinstance(groups, (int, np.integer)) or groups < 1:
        raise ArgumentError(f"{WHAT}: groups must be a positive int, got {groups!r}")
    groups = int(groups)
    n, c, h, wd = x.shape
    k, cg, r, s = w.shape
    if k % groups:
        raise ArgumentError(f"{WHAT}: groups={groups} does not divide the {k} output channels of w")
    if cg * groups != c:
        raise ShapeError(f"{WHAT}: x has {c} channels, w expects {cg * groups} (C/groups = {cg}, "
                         f"groups = {groups})")
    if r < 1 or s < 1:
        raise ShapeError(f"{WHAT}: argument 'w' must have a non-empty filter, got {w.shape}")
    win = conv_window(WHAT, (h, wd), (r, s), stride, padding, dilation)
    want = (n, k, win.p, win.q)
    if dy.shape != want:
        raise ShapeError(f"{WHAT}: argument 'dy' must have shape {want} (the output of x {x.shape} and w "
                         f"{w.shape}), got {dy.shape}")
    if dy.size == 0 or x.size == 0 or w.size == 0:
        return np.zeros(x.shape, np.float32), np.zeros(w.shape, np.float32), np.zeros(k, np.float32)
    kg = k // groups
    kd = channel_block(kg, groups, KD_BLOCK, MAX_BLOCK)
    cd = min(cg, MAX_BLOCK)
    cw, kw = channel_block(cg, groups, MAX_BLOCK, MAX_BLOCK), min(kg, KW_BLOCK)
    # dw's GEMMs are vectorised along their N: the input channels, or (swapped) the output
    # channels of a padded dy block where those fill more lanes (the stem: 3 input channels)
    swap = min(kd, SWAP_LANES) > min(cw, SWAP_LANES)
    if swap:
        kw = kd
    desc = ConvBackwardDesc(n, c, k, groups, win, element_strides(x), element_strides(dy), cw=cw, kw=kw, kd=kd,
                            cd=cd, chunk=dw_chunk(n, win, kw, cw, CHUNK_BYTES), dw_swap=swap)
    offs, counts, dwoffs = _tables(desc)
    dx, dw, dbias = np.empty(x.shape, np.float32), np.empty(w.shape, np.float32), np.empty(k, np.float32)
    arrays = [dy, x, w, offs, counts, dwoffs, dx, dw, dbias]
    compose.run_checked(None, None, compose.program(WHAT, desc), arrays, threads)
    return dx, dw, dbias


__all__ = ["conv2d_backward"]
