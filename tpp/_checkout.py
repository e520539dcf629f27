"""`import tpp` from the root of a source checkout (imported first by tpp/__init__.py).

In the repository, tpp's subpackages sit beside tpp/ at the top level (jit/,
kernels/, ops/, bench/; pyproject's package-dir maps them to tpp.jit, ...). Python
started in the checkout's root puts it first on sys.path, so the checkout's tpp/
shadows an installed copy (after `pip install .`, any script or subprocess run
there) and tpp.jit would not be found. Where this tpp/ is such a checkout's, the
root is added to tpp's __path__: tpp.jit is then <root>/jit, as the editable
install maps it (the other top-level folders hold no package). Installed copies
have the subpackages inside tpp/ and are left alone.
"""
from __future__ import annotations

import os
import sys


def checkout_root(package_dir: str) -> str | None:
    """The checkout whose tpp/ is `package_dir`, or None for an installed copy."""
    root = os.path.dirname(package_dir)
    if os.path.isdir(os.path.join(package_dir, "jit")):
        return None
    markers = (os.path.join(root, "pyproject.toml"), os.path.join(root, "jit", "__init__.py"))
    return root if all(os.path.isfile(m) for m in markers) else None


_tpp = sys.modules[__package__]
_root = checkout_root(os.path.dirname(os.path.abspath(__file__)))
if _root is not None and _root not in _tpp.__path__:
    _tpp.__path__.append(_root)
