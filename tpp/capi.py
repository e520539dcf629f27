"""The C ABI's Python side: what libtpp's exported functions do (see include/tpp.h).

libtpp.so (built by capi_build.py with cffi's embedding mode) starts an
interpreter on its first call and runs `bind(ffi, lib)`, which implements
tpp_init and the dispatches the library's C-side cache has not seen yet. A dispatch turns the C descriptor into the
same descriptor the Python API builds (tpp.unary_desc, ...), dispatches it
through the kernel cache and hands back the JIT-compiled function's address, so
the C caller calls the generated code directly. Nothing raises into C: every
failure becomes an error code and a message in the calling thread's error slot.
"""
from __future__ import annotations

from . import brgemm_desc, binary_desc, gemm_desc, unary_desc
from .dispatch import get_kernel
from .errors import DescriptorError, DTypeError, ShapeError, TargetError

# error codes and flags: include/tpp.h
OK, E_DESCRIPTOR, E_DTYPE, E_TARGET, E_ARGUMENT, E_INTERNAL = range(6)
TRANS_A, TRANS_B, BETA_0, B_VNNI, REDUCE_ROWS, REDUCE_COLS, ARGIDX, ALPHA = (1 << i for i in range(8))
KNOWN_FLAGS = (1 << 8) - 1


class ArgumentError(ValueError):
    """A C argument that is not a descriptor at all (NULL, unknown flag bits)."""


def _error_code(exc: BaseException) -> int:
    if isinstance(exc, DTypeError):
        return E_DTYPE
    if isinstance(exc, TargetError):
        return E_TARGET
    if isinstance(exc, (DescriptorError, ShapeError)):
        return E_DESCRIPTOR
    if isinstance(exc, ArgumentError):
        return E_ARGUMENT
    return E_INTERNAL


class _Fields:
    """Read access to a C tpp_desc: strings decoded, NULL as None."""

    def __init__(self, ffi, desc):
        if desc == ffi.NULL:
            raise ArgumentError("descriptor is NULL")
        self.ffi, self.d = ffi, desc
        if desc.flags & ~KNOWN_FLAGS:
            raise ArgumentError(f"unknown flag bits {desc.flags & ~KNOWN_FLAGS:#x}")

    def text(self, name: str, default: str | None = None) -> str | None:
        value = getattr(self.d, name)
        if value == self.ffi.NULL:
            return default
        raw = self.ffi.string(value)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:       # the caller's bytes, not a fault of ours
            raise ArgumentError(f"desc->{name} is not UTF-8 text (byte {raw[exc.start]:#04x} at offset "
                                f"{exc.start})") from None

    def ld(self, name: str) -> int | None:
        value = getattr(self.d, name)
        return None if value == 0 else int(value)

    def flag(self, bit: int) -> bool:
        return bool(self.d.flags & bit)

    def steps(self) -> tuple[str, ...]:
        text = self.text("epilogue", "")
        return tuple(step.strip() for step in text.split(",") if step.strip())

    def target(self) -> str | None:
        return self.text("target")


def unary_from_c(f: _Fields):
    kind = f.text("kind")
    if kind is None:
        raise DescriptorError("tpp_dispatch_unary: desc->kind is NULL; name a unary kind, e.g. \"relu\"")
    if f.flag(REDUCE_ROWS) and f.flag(REDUCE_COLS):
        raise DescriptorError("tpp_dispatch_unary: TPP_FLAG_REDUCE_ROWS and TPP_FLAG_REDUCE_COLS exclude each other")
    axis = 1 if f.flag(REDUCE_ROWS) else 0 if f.flag(REDUCE_COLS) else None
    # a non-finite alpha is refused by the descriptor (kernels/fields.real), as from Python
    alpha = float(f.d.alpha) if f.flag(ALPHA) else None
    return unary_desc(kind, f.d.m, f.d.n, f.text("dtype", "f32"), out_dtype=f.text("out_dtype"),
                      alpha=alpha, axis=axis, argidx=f.flag(ARGIDX))


def binary_from_c(f: _Fields):
    kind = f.text("kind")
    if kind is None:
        raise DescriptorError("tpp_dispatch_binary: desc->kind is NULL; name a binary kind, e.g. \"add\"")
    broadcast = (f.text("broadcast_a", "none"), f.text("broadcast_b", "none"))
    return binary_desc(kind, f.d.m, f.d.n, f.text("dtype", "f32"), broadcast=broadcast)


def _gemm_args(f: _Fields) -> dict:
    return dict(trans_a=f.flag(TRANS_A), trans_b=f.flag(TRANS_B), beta=0.0 if f.flag(BETA_0) else 1.0,
                lda=f.ld("lda"), ldb=f.ld("ldb"), ldc=f.ld("ldc"), out_dtype=f.text("out_dtype"),
                b_vnni=f.flag(B_VNNI), epilogue=f.steps())


def gemm_from_c(f: _Fields):
    return gemm_desc(f.d.m, f.d.n, f.d.k, f.text("dtype", "f32"), **_gemm_args(f))


def brgemm_from_c(f: _Fields):
    variant = f.text("variant", "stride")
    strides = dict(stride_a=f.ld("stride_a"), stride_b=f.ld("stride_b")) if variant == "stride" else {}
    return brgemm_desc(f.d.m, f.d.n, f.d.k, f.text("dtype", "f32"), variant=variant, **strides,
                       **_gemm_args(f))


BUILDERS = {"unary": unary_from_c, "binary": binary_from_c, "gemm": gemm_from_c, "brgemm": brgemm_from_c}
EQ_OPS = ("arg", "const", "unary", "binary", "reduce")       # TPP_EQ_* in order
MAX_EQ_NODES = 4096


def equation_from_c(ffi, desc):
    """(descriptor, target) of a C tpp_equation_desc: its nodes as tpp.expr.from_nodes reads them."""
    from .expr import from_nodes
    what = "tpp_dispatch_equation"
    if desc == ffi.NULL:
        raise ArgumentError("descriptor is NULL")
    if not 0 < desc.count <= MAX_EQ_NODES or desc.nodes == ffi.NULL:
        raise ArgumentError(f"{what}: desc->count must be 1..{MAX_EQ_NODES} with desc->nodes set, got "
                            f"{desc.count}")

    def text(obj, name: str, where: str) -> str | None:
        value = getattr(obj, name)
        if value == ffi.NULL:
            return None
        raw = ffi.string(value)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ArgumentError(f"{what}: {where}{name} is not UTF-8 text (byte {raw[exc.start]:#04x} at offset "
                                f"{exc.start})") from None
    nodes = []
    for i in range(desc.count):
        c = desc.nodes[i]
        where = f"nodes[{i}]."
        if not 0 <= c.op < len(EQ_OPS):
            raise DescriptorError(f"{what}: nodes[{i}].op must be a TPP_EQ_* value (0..{len(EQ_OPS) - 1}), "
                                  f"got {c.op}")
        if c.flags & ~ALPHA:
            raise ArgumentError(f"{what}: nodes[{i}].flags has unknown bits {c.flags & ~ALPHA:#x}")
        op = EQ_OPS[c.op]
        node = {"op": op}
        if op == "arg":
            node.update(index=int(c.a), bcast=text(c, "kind", where), dtype=text(c, "dtype", where))
        elif op == "const":
            node["value"] = float(c.value)
        else:
            node.update(kind=text(c, "kind", where), a=int(c.a))
            if op == "binary":
                node["b"] = int(c.b)
            if op == "unary" and c.flags & ALPHA:
                node["alpha"] = float(c.value)
        nodes.append(node)
    d = from_nodes(nodes, desc.m, desc.n, text(desc, "out_dtype", ""), what)
    return d, text(desc, "target", "")


def kernel_address(ffi, kind: str, desc) -> int:
    """The entry address of the kernel a C descriptor names (raises on any problem)."""
    fields = _Fields(ffi, desc)
    d = BUILDERS[kind](fields)
    kernel = get_kernel(d, fields.target())
    if not kernel.address:
        raise TargetError(f"tpp_dispatch_{kind}: target {kernel.target.name} cannot run on this machine; "
                          f"build its kernels ahead of time with tpp-aot")
    return kernel.address


def bind(ffi, lib) -> None:
    """Implement libtpp's exported functions with `ffi` (cffi's embedding module)."""

    def fail(exc: BaseException) -> int:
        code = _error_code(exc)
        message = str(exc) if code != E_INTERNAL else f"{type(exc).__name__}: {exc}"
        lib.tpp_capi_set_error(code, message.encode("utf-8", "replace"))
        return code

    @ffi.def_extern(name="tpp_init")
    def _init():
        lib.tpp_capi_set_error(OK, b"")
        return OK

    kinds = tuple(BUILDERS)                      # `which` of tpp_capi_dispatch (capi_build.py)

    @ffi.def_extern(name="tpp_capi_dispatch_equation")
    def _dispatch_equation(desc):
        try:
            d, target = equation_from_c(ffi, desc)
            kernel = get_kernel(d, target)
            if not kernel.address:
                raise TargetError(f"tpp_dispatch_equation: target {kernel.target.name} cannot run on this "
                                  "machine; build its kernels ahead of time with tpp-aot")
        except BaseException as exc:            # nothing may raise into C
            fail(exc)
            return ffi.NULL
        lib.tpp_capi_set_error(OK, b"")
        return ffi.cast("tpp_kernel", kernel.address)

    @ffi.def_extern(name="tpp_capi_dispatch")
    def _dispatch(which, desc):
        """A dispatch the library's C cache has not seen (see capi_build._C_SOURCE)."""
        try:
            address = kernel_address(ffi, kinds[which], desc)
        except BaseException as exc:            # nothing may raise into C
            fail(exc)
            return ffi.NULL
        lib.tpp_capi_set_error(OK, b"")
        return ffi.cast("tpp_kernel", address)
