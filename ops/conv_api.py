"""tpp.ops.conv2d and tpp.ops.Conv2d: torch.nn.functional.conv2d's semantics on the
BRGEMM convolution of ops/conv.py.

`Conv2d(w, ...)` is the prepared form: the weights are packed once into the blocked
(groups, K/k, C/c, R, S, c, k) layout (VNNI pairs for bf16), a BatchNorm is folded
into weights and bias, and a call does no weight work. It takes plain NCHW arrays
(the kernel pads and blocks them in its first phase) or `Blocked` activations; the
output is of the input's kind unless `blocked=` says otherwise, so a chain of
prepared convolutions stays blocked. Depthwise convolutions (groups == C == K) run
on their own kernel (ops/depthwise.py).
"""
from __future__ import annotations

import functools

import numpy as np

from .. import compose
from ..dtypes import parse as parse_dtype, to_numpy
from ..errors import ArgumentError, DTypeError, ShapeError
from ..jit.types import DType
from .args import element_strides
from .bias_act import activation_arg
from .conv import WHAT, ConvDesc
from .conv1x1 import Conv1x1Desc
from .conv_geometry import channel_block, conv_window
from .layout import Blocked, default_block, from_blocked, to_blocked, unit_rows

DTYPES = (DType.F32, DType.BF16)
MAX_BLOCK = 64          # channels per block: K = c per batch entry, N = k per GEMM


def input_block(cg: int, groups: int, dtype: DType, lanes: int, fold: bool = False) -> int:
    """Channels per input block for a plain input: the whole group where it fits in one
    (the stem's 3 channels: one block, folded taps), else a vector's worth; bf16 blocks
    are even (VNNI pairs), except one block whose taps fold (fold: S > 1, no column
    dilation): its pairs run across the taps (K = S*c), so 3 channels stay 3."""
    c = channel_block(cg, groups, lanes, MAX_BLOCK)
    if dtype == DType.BF16 and not (fold and c == cg):
        c += c % 2              # a group's last block then ends in zero channels
    return c


def output_block(kg: int, groups: int) -> int:
    return channel_block(kg, groups, MAX_BLOCK, MAX_BLOCK)


def pack_weights(w: np.ndarray, groups: int, cblk: int, kblk: int, dtype: DType, fold: bool = False) -> np.ndarray:
    """(K, C/groups, R, S) -> (groups, K/k, C/c, R, S, c, k), zero-padded; bf16: the c
    axis in VNNI pairs (..., c/2, k, 2), or with folded taps (one block) the pairs across
    a filter row's S*c (groups, K/k, 1, R, ceil(S*c/2), k, 2). Done once per prepared
    convolution."""
    k, cg, r, s = w.shape
    kg = k // groups
    kbg, cbg = -(-kg // kblk), -(-cg // cblk)
    full = np.zeros((groups, kbg * kblk, cbg * cblk, r, s), np.float32)
    full[:, :kg, :cg] = np.asarray(w, np.float32).reshape(groups, kg, cg, r, s)
    blocks = full.reshape(groups, kbg, kblk, cbg, cblk, r, s).transpose(0, 1, 3, 5, 6, 4, 2)
    if dtype == DType.BF16 and fold and cbg == 1:
        taps = np.zeros((groups, kbg, 1, r, -(-s * cblk // 2) * 2, kblk), np.float32)
        taps[:, :, :, :, :s * cblk] = blocks.reshape(groups, kbg, 1, r, s * cblk, kblk)
        blocks = taps.reshape(groups, kbg, 1, r, -1, 2, kblk).transpose(0, 1, 2, 3, 4, 6, 5)
    elif dtype == DType.BF16:
        blocks = blocks.reshape(groups, kbg, cbg, r, s, cblk // 2, 2, kblk).transpose(0, 1, 2, 3, 4, 5, 7, 6)
    return np.ascontiguousarray(blocks.astype(to_numpy(dtype)))


def fold_batch_norm(w: np.ndarray, bias, bn) -> tuple[np.ndarray, np.ndarray]:
    """w, bias with an eval-mode BatchNorm (gamma, beta, mean, var, eps) folded in:
    gamma (conv(x) + b - mean) / sqrt(var + eps) + beta."""
    if not isinstance(bn, (tuple, list)) or len(bn) != 5:
        raise ArgumentError(f"{WHAT}: bn must be (gamma, beta, mean, var, eps), got {type(bn).__name__}")
    k = w.shape[0]
    gamma, beta, mean, var = (np.asarray(v, np.float64) for v in bn[:4])
    for name, v in zip(("gamma", "beta", "mean", "var"), (gamma, beta, mean, var)):
        if v.shape != (k,):
            raise ShapeError(f"{WHAT}: bn's {name} must have shape ({k},), got {v.shape}")
    eps = float(bn[4])
    scale = gamma / np.sqrt(var + eps)
    b = np.zeros(k) if bias is None else np.asarray(bias, np.float64)
    return (np.asarray(w, np.float64) * scale[:, None, None, None]).astype(np.float32), \
        ((b - mean) * scale + beta).astype(np.float32)


class Conv2d:
    """A prepared 2-D convolution (torch.nn.Conv2d's forward, optionally with an eval-mode
    BatchNorm folded in and an activation fused): `conv(x, residual=None)` returns
    act(conv(x, w) + bias + residual)."""

    def __init__(self, w: np.ndarray, bias: np.ndarray | None = None, stride=1, padding=0, dilation=1,
                 groups: int = 1, activation: str | None = None, bn=None, *, alpha: float | None = None):
        if not isinstance(w, np.ndarray) or w.ndim != 4:
            raise ShapeError(f"{WHAT}: argument 'w' must be a 4-D (K, C/groups, R, S) array, got "
                             f"{getattr(w, 'shape', type(w).__name__)}")
        self.dtype = parse_dtype(w.dtype, "w.dtype")
        if self.dtype not in DTYPES:
            raise DTypeError(f"{WHAT}: w must be float32 or bfloat16, got {w.dtype}")
        if isinstance(groups, bool) or not isinstance(groups, (int, np.integer)) or groups < 1:
            raise ArgumentError(f"{WHAT}: groups must be a positive int, got {groups!r}")
        self.groups = int(groups)
        k = w.shape[0]
        if k % self.groups:
            raise ArgumentError(f"{WHAT}: groups={groups} does not divide the {k} output channels")
        if bias is not None:
            if not isinstance(bias, np.ndarray) or bias.shape != (k,):
                raise ShapeError(f"{WHAT}: argument 'bias' must be an array of shape ({k},), got "
                                 f"{getattr(bias, 'shape', type(bias).__name__)}")
        if bn is not None:
            w, bias = fold_batch_norm(w, bias, bn)
        self.activation = activation_arg(WHAT, activation, ArgumentError)
        self.alpha = None if alpha is None else float(alpha)
        self.k, self.cg, self.r, self.s = w.shape
        self.c = self.cg * self.groups
        self.stride, self.padding, self.dilation = stride, padding, dilation
        # checks the arguments; a filter row's taps fold into K where they are adjacent
        self._fold = self.s > 1 and conv_window(WHAT, (1 << 20, 1 << 20), (self.r, self.s), stride, padding,
                                                dilation).dilation[1] == 1
        self._w = np.asarray(w, np.float32)
        self._bias = None if bias is None else np.asarray(bias, np.float32)
        self._packed: dict = {}
        self._plain = None          # (K, C/groups) weights and bias for the pixel GEMM
        self._memo = compose.Memo(64)          # checked call geometries of this convolution
        self._fast: dict = {}                  # (x's kind and shape, ...) -> replay
        self.depthwise = None
        if self.groups == self.c == self.k and self.c > 1:
            from .depthwise import Depthwise
            self.depthwise = Depthwise(w.astype(to_numpy(self.dtype)), None if bias is None else self._bias, stride,
                                       padding, dilation, self.activation)
        else:
            self._weights(self.block)

    @property
    def block(self) -> int:
        """The input channel block this convolution reads plain input in (for C <= 64
        the whole channel count: the stem's 3 channels fold its taps into K): what
        `to_blocked(x, conv.block)` should use for the first layer of a blocked chain."""
        return input_block(self.cg, self.groups, self.dtype, default_block(DType.F32), self._fold)

    def _weights(self, cblk: int):
        """The packed weights and bias for input blocks of cblk channels (made once)."""
        got = self._packed.get(cblk)
        if got is None:
            kblk = output_block(self.k // self.groups, self.groups)
            w = pack_weights(self._w, self.groups, cblk, kblk, self.dtype, self._fold)
            bias = None
            if self._bias is not None:
                kg, kbg = self.k // self.groups, -(-(self.k // self.groups) // kblk)
                full = np.zeros((self.groups, kbg * kblk), np.float32)
                full[:, :kg] = self._bias.reshape(self.groups, kg)
                bias = full.ravel().astype(to_numpy(self.dtype))   # the epilogue adds it in C's dtype
            got = self._packed[cblk] = (kblk, w, bias)
        return got

    def __call__(self, x, residual=None, *, blocked: bool | None = None, threads: int | None = None):
        threads = compose.threads_arg(WHAT, threads)
        # a call like an earlier one (same kinds and shapes): the remembered arrays and
        # program, the memo re-checking only what can differ (strides, addresses)
        fast = self._fast.get((type(x), getattr(x, "shape", None), type(residual), getattr(residual, "shape", None),
                               blocked))
        if fast is not None:
            got = fast(x, residual, threads)
            if got is not None:
                return got
        return self._call(x, residual, blocked, threads)

    def _remember(self, x, residual, blocked, fixed: list, out_shape, views, wrap) -> None:
        """After a checked call: how to replay it (fixed: the weight-side arrays; views:
        x, residual, out -> the arrays the program takes)."""
        def replay(x, residual, threads):
            xa = x.data if isinstance(x, Blocked) else x
            res = residual.data if isinstance(residual, Blocked) else residual
            out = np.empty(out_shape, xa.dtype)
            if self._memo.call(None, views(xa, fixed, res, out), threads):
                return wrap(out)
            return None
        if len(self._fast) > 64:
            self._fast.clear()
        self._fast[(type(x), x.shape, type(residual), getattr(residual, "shape", None), blocked)] = replay

    def _call(self, x, residual, blocked, threads):
        x_blocked = isinstance(x, Blocked)
        if not x_blocked and (not isinstance(x, np.ndarray) or x.ndim != 4):
            raise ShapeError(f"{WHAT}: argument 'x' must be a 4-D (N, C, H, W) array or a tpp.ops.Blocked, got "
                             f"{getattr(x, 'shape', type(x).__name__)}")
        out_blocked = x_blocked if blocked is None else bool(blocked)
        n, c, h, w = x.shape
        if c != self.c:
            raise ShapeError(f"{WHAT}: x has {c} channels, the weights expect {self.c} (C/groups = {self.cg}, "
                             f"groups = {self.groups})")
        dt = parse_dtype(x.dtype, "x.dtype")
        if dt != self.dtype:
            raise DTypeError(f"{WHAT}: x is {x.dtype} but the weights are {to_numpy(self.dtype)}")
        win = conv_window(WHAT, (h, w), (self.r, self.s), self.stride, self.padding, self.dilation)
        if self.depthwise is not None:
            return self._depthwise(x, residual, out_blocked, threads)
        if _pixel_gemm(x, win, out_blocked, residual) and (dt == DType.F32 or self.cg % 2 == 0):
            return self._pixels(x, residual, blocked, threads)
        cblk = x.block if x_blocked else self.block
        if x_blocked and self.groups > 1 and self.cg % cblk:
            raise ShapeError(f"{WHAT}: a Blocked input's block ({cblk}) must divide C/groups = {self.cg}")
        if x_blocked and dt == DType.BF16 and cblk % 2 and not (self._fold and cblk >= self.cg):
            raise ShapeError(f"{WHAT}: a bf16 Blocked input needs an even block (or one block of all "
                             f"{self.cg} channels where the filter's taps fold), got {cblk}")
        kblk, wp, bias = self._weights(cblk)
        xa = x.data if x_blocked else unit_rows(x)
        desc_args = dict(n=n, c=c, k=self.k, groups=self.groups, window=win, dtype=dt, out_dtype=dt, cblk=cblk,
                         kblk=kblk, x_blocked=x_blocked, out_blocked=out_blocked, bias=bias is not None,
                         activation=self.activation, alpha=self.alpha)
        probe = ConvDesc(**desc_args, x_strides=None, out_strides=None)
        out = np.empty(probe.out_shape(), x.dtype)
        res = _residual(residual, probe, out_blocked)
        if out.size == 0:
            return Blocked(out, self.k) if out_blocked else out
        # a plain output takes two rows per transpose where their tile stays small (+1%)
        rows = 2 if not out_blocked and 2 * win.q * kblk * x.dtype.itemsize <= 64 << 10 and win.p > 1 else 1
        desc = ConvDesc(**desc_args, rows=rows, x_strides=None if x_blocked else element_strides(xa),
                        out_strides=None if out_blocked else element_strides(out),
                        residual=None if res is None else ("blocked" if out_blocked else "plain"),
                        res_strides=None if res is None or out_blocked else element_strides(res))
        fixed = [wp] + ([bias] if bias is not None else []) + [_offsets(desc)]

        def views(xa, fixed, res, out):
            return [xa, *fixed] + ([res] if res is not None else []) + [out]

        def wrap(out):
            return Blocked(out, self.k) if out_blocked else out
        compose.run_checked(self._memo, None, compose.program(WHAT, desc), views(xa, fixed, res, out), threads)
        self._remember(x, residual, blocked, fixed, out.shape, views, wrap)
        return wrap(out)

    def _depthwise(self, x, residual, out_blocked: bool, threads: int):
        """Depthwise works in x's layout: an output asked for in the other one is converted
        (and a residual given in it converted to x's)."""
        if isinstance(x, Blocked) == out_blocked:
            return self.depthwise(x, residual, threads=threads)
        if out_blocked:
            res = residual.numpy() if isinstance(residual, Blocked) else residual
            return to_blocked(self.depthwise(x, res, threads=threads), threads=threads)
        res = to_blocked(residual, x.block) if isinstance(residual, np.ndarray) else residual
        return from_blocked(self.depthwise(x, res, threads=threads), threads=threads)

    def _pixels(self, x: np.ndarray, residual, blocked, threads: int) -> np.ndarray:
        """The 1x1 stride-1 convolution on NCHW as a GEMM over pixels (ops/conv1x1.py)."""
        n, c, h, w = x.shape
        if self._plain is None:
            self._plain = (np.ascontiguousarray(self._w.reshape(self.k, self.cg).astype(to_numpy(self.dtype))),
                           None if self._bias is None else self._bias.astype(to_numpy(self.dtype)))
        wt, bias = self._plain
        out = np.empty((n, self.k, h, w), x.dtype)
        res = None
        if residual is not None:
            if not isinstance(residual, np.ndarray) or residual.shape != out.shape:
                raise ShapeError(f"{WHAT}: argument 'residual' must be an array of shape {out.shape}, got "
                                 f"{getattr(residual, 'shape', type(residual).__name__)}")
            if residual.dtype != x.dtype:
                raise DTypeError(f"{WHAT}: residual must be {x.dtype}, got {residual.dtype}")
            res = residual if _pixels_contiguous(residual) else np.ascontiguousarray(residual)
        if out.size == 0:
            return out
        desc = Conv1x1Desc(n, c, self.k, self.groups, h * w, self.dtype, _image_strides(x), _image_strides(out),
                           bias is not None, None if res is None else _image_strides(res), self.activation)
        def views(x, fixed, res, out):
            flat = (lambda a: a.reshape(a.shape[0], a.shape[1], h * w))     # views: the pixels are one run
            return [flat(x), *fixed] + ([flat(res)] if res is not None else []) + [flat(out)]
        fixed = [wt] + ([bias] if bias is not None else [])
        compose.run_checked(self._memo, None, compose.program(WHAT, desc), views(x, fixed, res, out), threads)
        self._remember(x, residual, blocked, fixed, out.shape, views, lambda out: out)
        return out


def _pixels_contiguous(a: np.ndarray) -> bool:
    """H and W of each (image, channel) one run of pixels."""
    _, _, h, w = a.shape
    return (w <= 1 or a.strides[3] == a.itemsize) and (h <= 1 or a.strides[2] == w * a.itemsize)


def _image_strides(a: np.ndarray) -> tuple[int, int]:
    es = element_strides(a)
    return es[0], es[1]


def _pixel_gemm(x, win, out_blocked: bool, residual) -> bool:
    """Whether the convolution is a GEMM over NCHW pixels: 1x1, stride 1, no padding,
    plain input and output with each channel's pixels contiguous."""
    return (not isinstance(x, Blocked) and not out_blocked and (win.r, win.s) == (1, 1)
            and win.stride == (1, 1) and not any(win.pad) and _pixels_contiguous(x)
            and x.strides[1] > 0 and x.strides[0] > 0)


def conv2d(x, w: np.ndarray, bias: np.ndarray | None = None, stride=1, padding=0, dilation=1, groups: int = 1,
           activation: str | None = None, residual=None, *, threads: int | None = None):
    """torch.nn.functional.conv2d(x, w, bias, stride, padding, dilation, groups), then
    `+ residual` and `activation`, fused. x: (N, C, H, W) float32/bfloat16 or a Blocked;
    w: (K, C/groups, R, S). For repeated calls prepare a tpp.ops.Conv2d (this packs the
    weights on every call)."""
    return Conv2d(w, bias, stride, padding, dilation, groups, activation)(x, residual, threads=threads)


@functools.lru_cache(maxsize=256)
def _offsets(desc: ConvDesc) -> np.ndarray:
    return desc.offsets()


def _residual(residual, desc: ConvDesc, out_blocked: bool):
    if residual is None:
        return None
    win = desc.window
    shape = (desc.n, desc.k, win.p, win.q)
    if out_blocked:
        if not isinstance(residual, Blocked) or residual.shape != shape or residual.block != desc.kblk:
            raise ShapeError(f"{WHAT}: argument 'residual' must be a Blocked of shape {shape} with block "
                             f"{desc.kblk} (the output's), got {residual!r}")
        arr = residual.data
    else:
        if not isinstance(residual, np.ndarray) or residual.shape != shape:
            raise ShapeError(f"{WHAT}: argument 'residual' must be an array of shape {shape}, got "
                             f"{getattr(residual, 'shape', type(residual).__name__)}")
        arr = unit_rows(residual)
    if arr.dtype != to_numpy(desc.out_dtype):
        raise DTypeError(f"{WHAT}: residual must be {to_numpy(desc.out_dtype)}, got {arr.dtype}")
    return arr


__all__ = ["Conv2d", "conv2d", "fold_batch_norm", "pack_weights"]
