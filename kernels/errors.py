"""The errors the catalog raises when it checks a descriptor (its families' validation),
at the bottom of the tpp hierarchy; tpp.errors adds the call-time ones and exports all.
They subclass the builtin a Python user would expect and always name the field."""


class TppError(Exception):
    """Base of every tpp error."""

    # where users import them: tracebacks, reprs and pickles (the worker pool, child
    # processes) name tpp.errors, as before these moved down a layer
    __module__ = "tpp.errors"


class DTypeError(TppError, TypeError):
    """An array or descriptor has an unsupported dtype."""

    __module__ = "tpp.errors"


class DescriptorError(TppError, ValueError):
    """A kernel cannot be built for this descriptor (unknown kind, m=0, ...)."""

    __module__ = "tpp.errors"
