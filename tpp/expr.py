"""Equation TPPs from Python: build an expression, get a Kernel.

    from tpp import eq
    x = eq.arg(0)                          # an M x N input
    e = eq.exp(x - eq.max(x))
    softmax = tpp.equation(e / eq.sum(e), 64, 1000)
    y = softmax(a)                         # one pass per row block: exp computed once

    g, b = eq.arg(1, "row"), eq.arg(2, "row")   # 1 x N inputs, reused for every row
    mean = eq.sum(x) / 768
    d = x - mean
    rstd = eq.rsqrt(eq.sum(d * d) / 768 + 1e-5)
    layer_norm = tpp.equation(d * rstd * g + b, 4096, 768)

Inputs are numbered (`eq.arg(i, bcast)`, bcast one of full, row, col, scalar), in
the kernel's argument order; the output comes last (`k(x0, x1, ..., out=y)`). An
expression whose value is one number per row (a reduction and what is computed from
reductions alone) gives a 1-D output of M values. Python numbers are constants.
The kernel's descriptor holds the tree (kernels/equation_tree.py has the node format,
kernels/equation.py how it compiles), so equal expressions share one compiled kernel.
"""
from __future__ import annotations

import builtins
from dataclasses import dataclass

from .descriptors import Primitive, check_dims, check_extent
from .dispatch import get_kernel
from .dtypes import parse as parse_dtype
from .errors import DescriptorError
from .jit.types import DType
from .kernel import Kernel
from .kernels import equation as equation_k
from .kernels.operands import Bcast

_MODES = {"full": Bcast.FULL, "row": Bcast.ROW, "col": Bcast.COL, "scalar": Bcast.SCALAR}


class Expr:
    """A node of an equation and the broadcast mode of each input it uses."""
    __slots__ = ("node", "modes")
    __array_priority__ = 1000       # `2.0 * e` with a numpy scalar on the left stays an Expr

    def __init__(self, node: tuple, modes: dict[int, Bcast]):
        self.node, self.modes = node, modes

    def __repr__(self) -> str:
        return f"eq.Expr({self.node!r})"

    def __add__(self, other): return binary("add", self, other)
    def __radd__(self, other): return binary("add", other, self)
    def __sub__(self, other): return binary("sub", self, other)
    def __rsub__(self, other): return binary("sub", other, self)
    def __mul__(self, other): return binary("mul", self, other)
    def __rmul__(self, other): return binary("mul", other, self)
    def __truediv__(self, other): return binary("div", self, other)
    def __rtruediv__(self, other): return binary("div", other, self)
    def __neg__(self): return unary("negate", self)

    def __bool__(self):
        raise TypeError("an eq.Expr has no truth value (it is compiled, not evaluated)")


def _expr(value) -> Expr:
    if isinstance(value, Expr):
        return value
    if isinstance(value, bool) or not hasattr(value, "__float__"):
        raise TypeError(f"tpp.eq: expected an expression or a number, got {type(value).__name__}")
    return Expr(("const", float(value)), {})


def _merge(*exprs: Expr) -> dict[int, Bcast]:
    modes: dict[int, Bcast] = {}
    for e in exprs:
        for i, mode in e.modes.items():
            if modes.setdefault(i, mode) is not mode:
                raise DescriptorError(f"tpp.eq: input {i} is used as {modes[i].value} and as {mode.value}")
    return modes


def arg(index: int, bcast: str = "full") -> Expr:
    """Input `index` of the kernel: full (M x N), row (1 x N), col (M x 1) or scalar."""
    if type(index) is not int or index < 0:
        raise DescriptorError(f"tpp.eq.arg: index must be a non-negative int, got {index!r}")
    mode = _MODES.get(bcast) if isinstance(bcast, str) else None
    if mode is None:
        raise DescriptorError(f"tpp.eq.arg: bcast must be one of {', '.join(_MODES)}, got {bcast!r}")
    return Expr(("arg", index), {index: mode})


def unary(kind: str, x, alpha: float | None = None) -> Expr:
    """One of tpp.unary's one-input elementwise kinds applied to x."""
    x = _expr(x)
    return Expr(("unary", kind, None if alpha is None else float(alpha), x.node), x.modes)


def binary(kind: str, a, b) -> Expr:
    """add, sub, mul, div, max or min of a and b (numbers broadcast)."""
    a, b = _expr(a), _expr(b)
    return Expr(("binary", kind, a.node, b.node), _merge(a, b))


def _reduce(op: str):
    def fn(x) -> Expr:
        x = _expr(x)
        return Expr(("reduce", op, x.node), x.modes)
    fn.__name__ = op
    fn.__doc__ = f"The {op} over each row of x: one value per row."
    return fn


sum = _reduce("sum")    # noqa: A001 - named like the reduction
max = _reduce("max")    # noqa: A001
min = _reduce("min")    # noqa: A001


def maximum(a, b) -> Expr:
    return binary("max", a, b)


def minimum(a, b) -> Expr:
    return binary("min", a, b)


def _unary_fn(kind: str):
    def fn(x, alpha: float | None = None) -> Expr:
        return unary(kind, x, alpha)
    fn.__name__ = kind
    fn.__doc__ = f"tpp.unary's {kind!r}, elementwise."
    return fn


for _kind in equation_k.UNARY:
    globals()[_kind] = _unary_fn(_kind)
del _kind


@dataclass(frozen=True)
class EquationDesc(Primitive):
    """An equation TPP: an M x N tile through an expression tree (kernels/equation.py)."""
    m: int
    n: int
    tree: tuple
    inputs: tuple            # ((DType, Bcast), ...) per input, in argument order
    out_dtype: DType

    kind = "equation"
    record = equation_k.FAMILY

    def __post_init__(self) -> None:
        check_dims(self, "equation", "m", "n")
        self.record.validate(self)
        itemsize = builtins.max(dt.itemsize for dt in (*(d for d, _ in self.inputs), self.out_dtype))
        check_extent("equation", "x", "m, n", self.m, self.n, self.n, itemsize)

    @property
    def dtype(self) -> DType:
        """The first input's dtype (what messages and the C ABI call the kernel's dtype)."""
        return self.inputs[0][0]


def equation_desc(expr, m: int, n: int, dtype="f32", *, out_dtype=None, dtypes=None) -> EquationDesc:
    """The descriptor tpp.equation dispatches. dtype: every input's, unless `dtypes`
    gives one per input; out_dtype defaults to the first input's."""
    expr = _expr(expr)
    if not expr.modes:
        raise DescriptorError("tpp.equation: the expression uses no input (eq.arg)")
    count = 1 + builtins.max(expr.modes)
    missing = [i for i in range(count) if i not in expr.modes]
    if missing:
        raise DescriptorError(f"tpp.equation: inputs {missing} are not used (inputs are numbered from 0 "
                              "without gaps)")
    if dtypes is None:
        dts = (parse_dtype(dtype, "dtype"),) * count
    else:
        if len(dtypes) != count:
            raise DescriptorError(f"tpp.equation: dtypes gives {len(dtypes)} dtypes for {count} inputs")
        dts = tuple(parse_dtype(d, f"dtypes[{i}]") for i, d in enumerate(dtypes))
    odt = dts[0] if out_dtype is None else parse_dtype(out_dtype, "out_dtype")
    return EquationDesc(m, n, expr.node, tuple((dt, expr.modes[i]) for i, dt in enumerate(dts)), odt)


def equation(expr, m: int, n: int, dtype="f32", *, out_dtype=None, dtypes=None, target=None) -> Kernel:
    """Dispatch an equation TPP: the expression over an m x n tile, as one kernel."""
    return get_kernel(equation_desc(expr, m, n, dtype, out_dtype=out_dtype, dtypes=dtypes), target)


# ---- equations as node lists (the C ABI's tpp_eq_node array, tpp-aot's "nodes") ----------
NODE_OPS = ("arg", "const", "unary", "binary", "reduce")


def from_nodes(nodes, m: int, n: int, out_dtype=None, what: str = "tpp.equation") -> EquationDesc:
    """The descriptor of an equation given as a list of nodes in post-order (each node's
    operands are earlier nodes; the last is the root), each a dict:

        {"op": "arg", "index": 0, "bcast": "full", "dtype": "f32"}   (bcast, dtype optional)
        {"op": "const", "value": 0.5}
        {"op": "unary", "kind": "exp", "a": 3}                       ("alpha": optional)
        {"op": "binary", "kind": "sub", "a": 0, "b": 1}
        {"op": "reduce", "kind": "max", "a": 0}                      (sum, max, min)
    """
    if not isinstance(nodes, (list, tuple)) or not nodes:
        raise DescriptorError(f"{what}: nodes must be a non-empty list")
    if len(nodes) > equation_k.MAX_NODES:
        raise DescriptorError(f"{what}: more than {equation_k.MAX_NODES} nodes")
    built: list[Expr] = []
    dtypes: dict[int, str] = {}

    def operand(i: int, node: dict, key: str) -> Expr:
        j = node.get(key)
        if type(j) is not int or not 0 <= j < i:
            raise DescriptorError(f"{what}: node {i}'s {key!r} must name an earlier node (0..{i - 1}), got {j!r}")
        return built[j]
    for i, node in enumerate(nodes):
        if not isinstance(node, dict):
            raise DescriptorError(f"{what}: node {i} must be a mapping, got {type(node).__name__}")
        op = node.get("op")
        if op not in NODE_OPS:
            raise DescriptorError(f"{what}: node {i}'s op must be one of {', '.join(NODE_OPS)}, got {op!r}")
        unknown = set(node) - {"op", "index", "bcast", "dtype", "value", "kind", "a", "b", "alpha"}
        if unknown:
            raise DescriptorError(f"{what}: node {i} has unknown keys {sorted(unknown)}")
        if op == "arg":
            index = node.get("index")
            built.append(arg(index, node.get("bcast") or "full"))
            given = node.get("dtype") or "f32"
            if dtypes.setdefault(index, given) != given:
                raise DescriptorError(f"{what}: input {index} is given dtypes {dtypes[index]!r} and {given!r}")
        elif op == "const":
            value = node.get("value")
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise DescriptorError(f"{what}: node {i}'s value must be a number, got {value!r}")
            built.append(_expr(value))
        elif op == "unary":
            alpha = node.get("alpha")
            if alpha is not None and (isinstance(alpha, bool) or not isinstance(alpha, (int, float))):
                raise DescriptorError(f"{what}: node {i}'s alpha must be a number, got {alpha!r}")
            built.append(unary(node.get("kind"), operand(i, node, "a"), alpha))
        elif op == "binary":
            built.append(binary(node.get("kind"), operand(i, node, "a"), operand(i, node, "b")))
        else:
            x = operand(i, node, "a")
            built.append(Expr(("reduce", node.get("kind"), x.node), x.modes))
    root = built[-1]
    count = 1 + builtins.max(root.modes) if root.modes else 0
    return equation_desc(root, m, n, dtypes=[dtypes.get(i, "f32") for i in range(count)] or None,
                         out_dtype=out_dtype)
