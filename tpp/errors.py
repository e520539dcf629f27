"""Exceptions raised for bad input. They subclass the builtin a Python user
would expect (ValueError for shapes/values, TypeError for dtypes) and always
name the argument and what was expected."""


class TppError(Exception):
    """Base of every tpp error."""


class ShapeError(TppError, ValueError):
    """An array has the wrong shape, strides or layout."""


class DTypeError(TppError, TypeError):
    """An array or descriptor has an unsupported dtype."""


class AliasError(TppError, ValueError):
    """An output partially overlaps an input (only exact in-place is allowed)."""


class DescriptorError(TppError, ValueError):
    """A kernel cannot be built for this descriptor (unknown kind, m=0, ...)."""


class TargetError(TppError, RuntimeError):
    """The kernel's target cannot run on this machine."""
