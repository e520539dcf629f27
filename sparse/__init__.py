"""tpp.sparse: sparse matrices in composable formats (SparseTIR's axes on the CPU).

A format is a chain of axes (axes.py: dense_fixed, dense_variable, sparse_fixed,
sparse_variable), a SparseMatrix is a shape, the axes with their index arrays, and the values
(formats.py); csr / coo / bsr / ell / from_dense build the named chains (convert.py),
from_scipy / to_scipy share arrays with scipy.sparse (scipy_io.py), and decompose / hyb cut a
matrix into parts of several formats (hyb.py). numpy only: the kernels (tpp.ops) read these
arrays directly and key their compiled code on `SparseMatrix.format`."""
from .axes import (PAD, Axis, AxisFormat, AxisKind, dense_fixed, dense_variable,  # noqa: F401
                   sparse_fixed, sparse_variable)
from .convert import bsr, coo, csr, ell, from_coords, from_dense  # noqa: F401
from .formats import Format, SparseMatrix  # noqa: F401
from .hyb import HYB_MAX_WIDTH, Decomposed, Part, Rule, decompose, hyb, hyb_rules  # noqa: F401
from .scipy_io import from_scipy, to_scipy  # noqa: F401
