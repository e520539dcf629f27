"""Test operands: values drawn from a domain, placed in memory with a chosen
layout (contiguous, or a view into a bigger buffer: row stride > n, a column
offset, rows above), and hypothesis strategies for shapes and layouts.

A placed operand remembers its whole parent buffer, so a test can check that
a kernel wrote nothing outside an output view and nothing at all into an input.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from hypothesis import strategies as st

Domain = Callable[[np.random.Generator, tuple], np.ndarray]   # float64 values of a shape

SHAPES = [(1, 1), (7, 37), (16, 16), (33, 65)]   # scalar tile, remainders, exact vectors, both
REMAINDER_SHAPE = (7, 37)
SENTINEL_BYTE = 0xA5                              # fills output buffers around the view


# ---- value domains --------------------------------------------------------------------
def uniform(lo: float, hi: float) -> Domain:
    return lambda rng, shape: rng.uniform(lo, hi, shape)


def magnitude(lo: float, hi: float, signed: bool = False) -> Domain:
    """Log-uniform magnitudes in [lo, hi] (random signs if `signed`)."""
    def draw(rng, shape):
        x = np.exp(rng.uniform(np.log(lo), np.log(hi), shape))
        return x * rng.choice([-1.0, 1.0], shape) if signed else x
    return draw


def grid(lo: int, hi: int, nan_fraction: float = 0.0) -> Domain:
    """Small integers (many ties and equal pairs), with some NaNs."""
    def draw(rng, shape):
        x = rng.integers(lo, hi + 1, shape).astype(np.float64)
        x[rng.random(shape) < nan_fraction] = np.nan
        return x
    return draw


def values(domain: Domain, rng: np.random.Generator, shape: tuple, dtype) -> np.ndarray:
    with np.errstate(over="ignore"):
        return np.asarray(domain(rng, shape)).astype(dtype)


# ---- layouts ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Layout:
    row_off: int = 0   # parent rows above the view
    col_off: int = 0   # parent columns left of the view
    pad: int = 0       # parent columns right of the view (row stride = col_off + n + pad)

    def __str__(self) -> str:
        if self == CONTIGUOUS:
            return "contiguous"
        return f"view(+{self.row_off}r,+{self.col_off}c,+{self.pad}pad)"


CONTIGUOUS = Layout()
STRIDED = Layout(row_off=2, col_off=3, pad=5)


class Placed:
    """`view` (what the kernel gets) inside `parent`; a snapshot of the parent is kept."""

    def __init__(self, parent: np.ndarray, region):
        self.parent = parent
        self.region = region
        self.view = parent[region]
        self._before = parent.copy()

    def _raw(self, a: np.ndarray) -> np.ndarray:
        return a.view(np.dtype(f"u{a.dtype.itemsize}"))

    def assert_unchanged(self, what: str = "input") -> None:
        """Not one byte of the parent changed (inputs of out-of-place calls)."""
        changed = np.argwhere(self._raw(self.parent) != self._raw(self._before))
        assert changed.size == 0, f"{what} was modified at parent index {_index(changed)}"

    def assert_untouched_outside(self, what: str = "output") -> None:
        """Nothing outside the view changed (outputs: rows' padding, offsets)."""
        outside = np.ones(self.parent.shape, bool)
        outside[self.region] = False
        changed = np.argwhere(outside & (self._raw(self.parent) != self._raw(self._before)))
        assert changed.size == 0, f"{what}: a kernel wrote outside the view at parent index {_index(changed)}"


def _index(found: np.ndarray) -> tuple:
    return tuple(int(i) for i in found[0])


def place(a: np.ndarray, layout: Layout = CONTIGUOUS, *, fill=np.nan) -> Placed:
    """A view with `a`'s values and `layout`; the rest of the parent holds `fill`
    (NaN by default, so a kernel that reads outside an input view shows it)."""
    a = np.asarray(a)
    if a.ndim == 0:
        return Placed(a.copy(), ...)     # [...] keeps a 0-d array (not a numpy scalar)
    if a.ndim == 1:
        parent = np.empty(layout.col_off + a.shape[0] + layout.pad, a.dtype)
        region = (slice(layout.col_off, layout.col_off + a.shape[0]),)
    else:
        m, n = a.shape
        parent = np.empty((m + layout.row_off, layout.col_off + n + layout.pad), a.dtype)
        region = (slice(layout.row_off, None), slice(layout.col_off, layout.col_off + n))
    if a.dtype == np.bool_ or fill is None:
        parent.view(np.uint8).fill(SENTINEL_BYTE)
    else:
        parent.fill(fill)
    parent[region] = a
    return Placed(parent, region)


def blank(shape: tuple, dtype, layout: Layout = CONTIGUOUS) -> Placed:
    """An output buffer: every byte of the parent, the view included, is the sentinel."""
    p = place(np.zeros(shape, dtype), layout, fill=None)
    p.parent.view(np.uint8).fill(SENTINEL_BYTE)
    return Placed(p.parent, p.region)


# ---- hypothesis strategies ---------------------------------------------------------------
dims = st.integers(1, 67)
shapes = st.tuples(dims, dims)
layouts = st.builds(Layout, row_off=st.integers(0, 2), col_off=st.integers(0, 3), pad=st.integers(0, 4))
seeds = st.integers(0, 2 ** 32 - 1)
