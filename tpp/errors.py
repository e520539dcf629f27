"""Exceptions raised for bad input. They subclass the builtin a Python user
would expect (ValueError for shapes/values, TypeError for dtypes) and always
name the argument and what was expected."""

from .kernels.errors import DescriptorError, DTypeError, TppError  # noqa: F401  (the catalog's, below)


class ShapeError(TppError, ValueError):
    """An array has the wrong shape, strides or layout."""


class AliasError(TppError, ValueError):
    """An output partially overlaps an input (only exact in-place is allowed)."""


class TargetError(TppError, RuntimeError):
    """The kernel's target cannot run on this machine."""


class ArgumentError(TppError, ValueError):
    """A call argument that is not an array has a bad value (an op's threads=)."""


class IndexRangeError(TppError, IndexError):
    """An index operand holds an index outside the indexed extent (gather, scatter_add)."""
