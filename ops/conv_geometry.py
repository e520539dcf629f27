"""Convolution and pooling geometry with torch's semantics: argument parsing (int or
pair; padding "same"/"valid"), output sizes, and the padding each side needs.

Shared by conv2d, the depthwise kernel, the pools and the backward pass so that
each reads its arguments and reports bad ones the same way.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import ArgumentError, ShapeError


def pair(what: str, name: str, value, least: int) -> tuple[int, int]:
    """An int or a pair of ints, each >= least, as a pair."""
    items = value if isinstance(value, (tuple, list)) else (value, value)
    if len(items) != 2 or any(isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer))
                              for v in items):
        raise ArgumentError(f"{what}: {name} must be an int or a pair of ints, got {value!r}")
    out = (int(items[0]), int(items[1]))
    if min(out) < least:
        raise ArgumentError(f"{what}: {name} must be >= {least}, got {value!r}")
    return out


@dataclass(frozen=True)
class Window:
    """A sliding window over (H, W): kernel (R, S), stride, dilation and the padding on
    each side (top, bottom, left, right), and the output size (P, Q)."""
    h: int
    w: int
    r: int
    s: int
    stride: tuple[int, int]
    dilation: tuple[int, int]
    pad: tuple[int, int, int, int]

    @property
    def p(self) -> int:
        return _out(self.h, self.r, self.stride[0], self.dilation[0], self.pad[0] + self.pad[1])

    @property
    def q(self) -> int:
        return _out(self.w, self.s, self.stride[1], self.dilation[1], self.pad[2] + self.pad[3])

    @property
    def padded(self) -> tuple[int, int]:
        """The padded input's (H, W)."""
        return self.h + self.pad[0] + self.pad[1], self.w + self.pad[2] + self.pad[3]

    def row_taps(self, p: int) -> tuple[int, int]:
        """The filter rows [lo, hi) of output row p that land inside the input."""
        return _taps(p * self.stride[0] - self.pad[0], self.h, self.r, self.dilation[0])


def channel_block(channels: int, groups: int, wide: int, most: int = 64) -> int:
    """Channels per block of a grouped tensor: all of them where they fit in one (at most
    `most`), else `wide`, unless groups > 1 and `wide` does not divide them: a group's
    channels must start a block, so then the largest divisor up to `most`."""
    if channels <= most:
        return channels
    if groups == 1 or channels % wide == 0:
        return wide
    return max(d for d in range(1, most + 1) if channels % d == 0)


class Grouped:
    """For descriptors with c, k and groups fields: the channels of one group."""

    @property
    def cg(self) -> int:
        return self.c // self.groups

    @property
    def kg(self) -> int:
        return self.k // self.groups


def _taps(first: int, size: int, k: int, dil: int) -> tuple[int, int]:
    """Taps t in [lo, hi) with 0 <= first + t * dil < size (empty: lo == hi)."""
    lo = max(0, -(first // dil)) if first < 0 else 0
    hi = min(k, (size - 1 - first) // dil + 1)
    return lo, max(lo, hi)


def _out(size: int, k: int, stride: int, dil: int, pads: int) -> int:
    return (size + pads - dil * (k - 1) - 1) // stride + 1


def conv_window(what: str, hw: tuple[int, int], rs: tuple[int, int], stride, padding, dilation) -> Window:
    """torch.nn.functional.conv2d's geometry: stride and dilation >= 1, padding an int,
    a pair, "valid" (0) or "same" (stride 1 only; the extra pixel of an odd total on the
    bottom/right, as torch). A kernel larger than the padded input is an error."""
    stride = pair(what, "stride", stride, 1)
    dilation = pair(what, "dilation", dilation, 1)
    if isinstance(padding, str):
        if padding == "valid":
            pad = (0, 0, 0, 0)
        elif padding == "same":
            if stride != (1, 1):
                raise ArgumentError(f"{what}: padding='same' is not supported for strided convolutions")
            tot_h, tot_w = dilation[0] * (rs[0] - 1), dilation[1] * (rs[1] - 1)
            pad = (tot_h // 2, tot_h - tot_h // 2, tot_w // 2, tot_w - tot_w // 2)
        else:
            raise ArgumentError(f"{what}: padding must be an int, a pair, 'same' or 'valid', got {padding!r}")
    else:
        ph, pw = pair(what, "padding", padding, 0)
        pad = (ph, ph, pw, pw)
    win = Window(hw[0], hw[1], rs[0], rs[1], stride, dilation, pad)
    hp, wp = win.padded
    if dilation[0] * (rs[0] - 1) + 1 > hp or dilation[1] * (rs[1] - 1) + 1 > wp:
        raise ShapeError(f"{what}: the kernel ({rs[0]}x{rs[1]}, dilation {dilation}) is larger than the padded "
                         f"input ({hp}x{wp})")
    return win


def pool_window(what: str, hw: tuple[int, int], kernel, stride, padding, dilation, ceil_mode: bool) -> Window:
    """torch's max_pool2d / avg_pool2d geometry: stride defaults to the kernel, padding at
    most half the kernel, ceil_mode lets the last window start inside the left padding
    or the input (never in the right padding only), as torch."""
    r, s = pair(what, "kernel_size", kernel, 1)
    stride = (r, s) if stride is None or (isinstance(stride, (tuple, list)) and len(stride) == 0) \
        else pair(what, "stride", stride, 1)
    ph, pw = pair(what, "padding", padding, 0)
    dilation = pair(what, "dilation", dilation, 1)
    if ph > r // 2 or pw > s // 2:
        raise ArgumentError(f"{what}: padding should be at most half of the kernel size, got padding "
                            f"{(ph, pw)} for kernel {(r, s)}")
    sizes = []
    for size, k, st, dil, p in ((hw[0], r, stride[0], dilation[0], ph), (hw[1], s, stride[1], dilation[1], pw)):
        span = size + 2 * p - dil * (k - 1) - 1
        out = (-(-span // st) if ceil_mode else span // st) + 1
        if ceil_mode and (out - 1) * st >= size + p:
            out -= 1
        if out < 1:
            raise ShapeError(f"{what}: the output would be empty (input {hw}, kernel {(r, s)}, padding {(ph, pw)}, "
                             f"dilation {dilation})")
        sizes.append(out)
    # the bottom/right padding that the last window may reach in ceil mode
    bottom = max(ph, (sizes[0] - 1) * stride[0] + dilation[0] * (r - 1) + 1 - hw[0] - ph)
    right = max(pw, (sizes[1] - 1) * stride[1] + dilation[1] * (s - 1) + 1 - hw[1] - pw)
    return Window(hw[0], hw[1], r, s, stride, dilation, (ph, bottom, pw, right))
