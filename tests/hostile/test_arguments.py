"""Hostile call arguments for every family, one argument changed at a time: views
(slices, negative strides, transposed storage, a column stride), broadcasts (stride 0),
read-only and misaligned arrays (offset by 1-3 bytes in a uint8 buffer), other dtypes
and shapes, 0-size arrays, lists, None, an input passed twice, an output that is an
input (in place) or overlaps one in part, outputs that are views. A call that keeps the
values must work and match the float64 reference or raise a tpp error; one that cannot
be right (a wrong shape, a read-only or wrong-dtype output) must raise one; no call may
write outside its output.
"""
from __future__ import annotations

import zlib

import numpy as np
from numpy.lib.stride_tricks import as_strided

import tpp
from hostile import harness
from hostile.harness import BF16, Cases
from hostile.subjects import (brgemm_call, check_call, bias_act_call, matmul_call, primitive_call,
                              segment_sum_call)

CASES = Cases()


def _padded(x: np.ndarray, fill):
    """x inside a bigger array (one more row and column on each side)."""
    parent = np.full(tuple(d + 3 for d in x.shape), fill, x.dtype)
    index = tuple(slice(1, 1 + d) for d in x.shape)
    view = parent[index]
    view[...] = x
    inside = np.zeros(parent.shape, bool)
    inside[index] = True
    return view, (parent, parent.copy(), inside)


def _misaligned(x: np.ndarray, offset: int, fill=0x5A):
    buf = np.full(x.nbytes + 16, fill, np.uint8)
    view = buf[offset:offset + x.nbytes].view(x.dtype).reshape(x.shape)
    view[...] = x
    inside = np.zeros(buf.shape, bool)
    inside[offset:offset + x.nbytes] = True
    return view, (buf, buf.copy(), inside)


def _col_stride2(x: np.ndarray, fill):
    parent = np.full(x.shape[:-1] + (2 * x.shape[-1],), fill, x.dtype)
    view = parent[..., ::2]
    view[...] = x
    inside = np.zeros(parent.shape, bool)
    inside[..., ::2] = True
    return view, (parent, parent.copy(), inside)


def _flip(x: np.ndarray, axis: int):
    return np.flip(np.flip(x, axis).copy(), axis)


def _other_dtype(x: np.ndarray) -> np.dtype:
    return {np.dtype(np.float32): np.dtype(np.float64), np.dtype(np.float64): np.dtype(np.float32),
            BF16: np.dtype(np.float32), np.dtype(np.int64): np.dtype(np.int32),
            np.dtype(np.int32): np.dtype(np.int64)}.get(x.dtype, np.dtype(np.float32))


def _read_only(x: np.ndarray) -> np.ndarray:
    x = x.copy()
    x.flags.writeable = False
    return x


class Sub:
    """A changed argument: what the call gets, the values it stands for, the expectation."""

    def __init__(self, value, ref=None, expect="same", guard=None):
        self.value, self.ref, self.expect, self.guard = value, ref, expect, guard


def input_mutations(x: np.ndarray) -> dict:
    """name -> function(x) -> Sub, for an input array."""
    m = {
        "slice": lambda x: Sub(*_view(_padded(x, 0))),
        "neg_rows": lambda x: Sub(_flip(x, 0)),
        "neg_cols": lambda x: Sub(_flip(x, -1)),
        "col_stride2": lambda x: Sub(_col_stride2(x, 0)[0]),
        "read_only": lambda x: Sub(_read_only(x)),
        "misaligned1": lambda x: Sub(_misaligned(x, 1)[0]),
        "misaligned2": lambda x: Sub(_misaligned(x, 2)[0]),
        "misaligned3": lambda x: Sub(_misaligned(x, 3)[0]),
        "other_dtype": lambda x: Sub(x.astype(_other_dtype(x)), x.astype(_other_dtype(x)).astype(x.dtype)),
        "extra_col": lambda x: Sub(np.zeros(x.shape[:-1] + (x.shape[-1] + 1,), x.dtype), expect="refuse"),
        "zero_size": lambda x: Sub(x[..., :0], expect="refuse"),
        "list": lambda x: Sub(x.tolist(), x),
        "None": lambda x: Sub(None, expect="any"),
        "number": lambda x: Sub(1.5, expect="any"),
        "subclass": lambda x: Sub(x.view(_Sub), x),
    }
    if x.ndim == 0:                          # a scalar operand
        return {k: m[k] for k in ("read_only", "misaligned1", "misaligned3", "other_dtype", "list", "None",
                                   "number", "subclass")}
    if x.ndim >= 1 and x.shape[0] > 1:
        m["bcast_rows"] = lambda x: Sub(np.broadcast_to(x[:1], x.shape), np.broadcast_to(x[:1], x.shape).copy())
        m["bcast_writable"] = lambda x: Sub(as_strided(x[:1].copy(), x.shape, (0,) + x.strides[1:]),
                                            np.broadcast_to(x[:1], x.shape).copy())
    if x.ndim >= 2:
        m["fortran"] = lambda x: Sub(np.asfortranarray(x))
        m["transposed"] = lambda x: Sub(np.ascontiguousarray(np.swapaxes(x, -1, -2)),
                                        expect="refuse" if x.shape[-1] != x.shape[-2] else "any")
        m["one_more_axis"] = lambda x: Sub(x[None], expect="any")
    return m


def output_mutations(x: np.ndarray) -> dict:
    m = {
        "slice": lambda x: Sub(*_view(_padded(x, 7))),
        "neg_rows": lambda x: Sub(_flip(x, 0)),
        "neg_cols": lambda x: Sub(_flip(x, -1)),
        "col_stride2": lambda x: Sub(*_view(_col_stride2(x, 7))),
        "misaligned1": lambda x: Sub(*_view(_misaligned(x, 1))),
        "misaligned3": lambda x: Sub(*_view(_misaligned(x, 3))),
        "read_only": lambda x: Sub(_read_only(x), expect="refuse"),
        "other_dtype": lambda x: Sub(x.astype(_other_dtype(x)), expect="refuse"),
        "extra_col": lambda x: Sub(np.zeros(x.shape[:-1] + (x.shape[-1] + 1,), x.dtype), expect="refuse"),
        "zero_size": lambda x: Sub(x[..., :0], expect="refuse"),
        "list": lambda x: Sub(x.tolist(), expect="refuse"),
        "number": lambda x: Sub(1.5, expect="refuse"),
    }
    if x.ndim >= 1 and x.shape[0] > 1:
        m["bcast_writable"] = lambda x: Sub(as_strided(x[:1].copy(), x.shape, (0,) + x.strides[1:]), expect="any")
    if x.ndim >= 2:
        m["fortran"] = lambda x: Sub(np.asfortranarray(x))
    return m


class _Sub(np.ndarray):
    pass


def _view(made):
    view, guard = made
    return view, None, "same", guard


# ---- the subjects: name -> function(rng) -> Call ------------------------------------------------
def _kernel(make):
    return lambda rng: primitive_call(make(), rng)


SUBJECTS = {
    "relu": _kernel(lambda: tpp.unary("relu", 5, 7)),
    "gelu_tanh_bf16": _kernel(lambda: tpp.unary("gelu_tanh", 6, 6, "bf16")),
    "sqrt_f64": _kernel(lambda: tpp.unary("sqrt", 3, 9, "f64")),
    "relu_grad": _kernel(lambda: tpp.unary("relu_grad", 5, 5)),
    "reduce_sum_rows": _kernel(lambda: tpp.unary("reduce_sum", 5, 7, axis=1)),
    "reduce_max_cols_argidx": _kernel(lambda: tpp.unary("reduce_max", 4, 9, axis=0, argidx=True)),
    "transpose": _kernel(lambda: tpp.unary("transpose", 5, 6)),
    "transpose_square": _kernel(lambda: tpp.unary("transpose", 6, 6)),
    "vnni_pack": _kernel(lambda: tpp.unary("vnni_pack", 4, 6, "bf16")),
    "cast_to_bf16": _kernel(lambda: tpp.unary("cast", 5, 7, "f32", out_dtype="bf16")),
    "add": _kernel(lambda: tpp.binary("add", 5, 7)),
    "mul_row": _kernel(lambda: tpp.binary("mul", 5, 7, broadcast="row")),
    "sub_col_scalar": _kernel(lambda: tpp.binary("sub", 5, 7, broadcast=("col", "scalar"))),
    "gt": _kernel(lambda: tpp.binary("gt", 5, 7)),
    "gemm": _kernel(lambda: tpp.gemm(6, 6, 6)),
    "gemm_beta0_bias_relu": _kernel(lambda: tpp.gemm(6, 6, 6, beta=0.0, epilogue=("bias", "relu"))),
    "gemm_trans_b": _kernel(lambda: tpp.gemm(5, 6, 7, trans_b=True)),
    "gemm_bf16": _kernel(lambda: tpp.gemm(6, 6, 6, "bf16", beta=0.0)),
    "brgemm_stride": lambda rng: brgemm_call(tpp.brgemm(4, 4, 4), rng),
    "brgemm_offset": lambda rng: brgemm_call(tpp.brgemm(4, 4, 4, variant="offset", beta=0.0), rng),
    "brgemm_address": lambda rng: brgemm_call(tpp.brgemm(4, 4, 4, variant="address", epilogue=("bias",)), rng),
    "matmul": lambda rng: matmul_call(rng, 6, 6, 6),
    "matmul_bias_relu_2threads": lambda rng: matmul_call(rng, 9, 17, 5, epilogue=("bias", "relu"), threads=2),
    "matmul_f64": lambda rng: matmul_call(rng, 5, 5, 5, np.float64),
    "bias_act": lambda rng: bias_act_call(rng, (3, 4, 6)),
    "bias_act_bf16_2d": lambda rng: bias_act_call(rng, (6, 6), BF16, "gelu_tanh", threads=2),
    "segment_sum": lambda rng: segment_sum_call(rng, 6, 6),
    "segment_sum_int32": lambda rng: segment_sum_call(rng, 5, 3, np.float64, np.int32, threads=2),
}


def argument_case(subject, slot_index, mutation, seed) -> None:
    rng = np.random.default_rng(seed)
    call = SUBJECTS[subject](rng)
    slot = call.slots[slot_index]
    vals = call.values()
    ref_vals = list(vals)
    x = slot.value
    if isinstance(x, list):                  # BRGEMM's address variant: change the first block
        table = input_mutations(x[0])
        sub = table[mutation](x[0])
        vals[slot_index] = [sub.value] + x[1:]
        ref_vals[slot_index] = [x[0] if sub.ref is None else sub.ref] + x[1:]
    else:
        table = (input_mutations if slot.role == "in" else output_mutations)(x)
        sub = table[mutation](x)
        if subject == "brgemm_offset" and slot.name in ("a", "b") and mutation == "extra_col":
            sub = Sub(sub.value, sub.value)  # a longer flat buffer is fine: the offsets say where blocks are
        vals[slot_index] = sub.value
        if slot.role == "out":
            ref_vals[slot_index] = x         # the reference writes no output
        elif sub.ref is not None:
            ref_vals[slot_index] = sub.ref
        elif isinstance(sub.value, np.ndarray) and sub.value.shape == x.shape:
            ref_vals[slot_index] = np.array(sub.value)
    if slot.role == "out" and isinstance(sub.value, np.ndarray) and sub.expect == "refuse":
        before = sub.value.copy()
        check_call(call, vals, ref_vals, "refuse", why=f"{subject}: output {slot.name} {mutation}")
        if not np.array_equal(before, sub.value, equal_nan=True):
            raise harness.Wrong(f"{subject}: a refused call wrote into output {slot.name} ({mutation})")
        return
    check_call(call, vals, ref_vals, sub.expect, guards=[sub.guard] if sub.guard else [],
               why=f"{subject}: {slot.name} {mutation}")


def alias_case(subject, out_index, in_index, how, seed) -> None:
    """Output `out_index` is input `in_index` itself ("same": in place) or a view of its
    buffer one element further on ("partial")."""
    rng = np.random.default_rng(seed)
    call = SUBJECTS[subject](rng)
    vals = call.values()
    x, out = vals[in_index], vals[out_index]
    if how == "same":
        vals[out_index] = x
        ref_vals = list(vals)
        ref_vals[in_index] = x.copy()
        check_call(call, vals, ref_vals, "same", why=f"{subject}: output {call.slots[out_index].name} is "
                                                      f"input {call.slots[in_index].name}")
        return
    flat = np.zeros(max(x.size, out.size) + 1, x.dtype)
    shifted_in = flat[:x.size].reshape(x.shape)
    shifted_in[...] = x
    vals[in_index] = shifted_in
    vals[out_index] = flat[1:1 + out.size].reshape(out.shape)
    if call.slots[out_index].role == "inout":
        vals[out_index][...] = out
    ref_vals = list(vals)
    ref_vals[in_index] = x.copy()
    check_call(call, vals, ref_vals, "same", why=f"{subject}: output overlaps input {call.slots[in_index].name}")


def twice_case(subject, i, j, seed) -> None:
    """Input j is input i again (both read, nothing written twice)."""
    rng = np.random.default_rng(seed)
    call = SUBJECTS[subject](rng)
    vals = call.values()
    vals[j] = vals[i]
    check_call(call, vals, list(vals), "same", why=f"{subject}: input {call.slots[j].name} is input "
                                                   f"{call.slots[i].name}")


def _build() -> None:
    rng = np.random.default_rng(0)
    for subject, make in SUBJECTS.items():
        call = make(rng)
        slots = call.slots
        for i, slot in enumerate(slots):
            x = slot.value
            first = x[0] if isinstance(x, list) else x
            table = (input_mutations if slot.role == "in" or isinstance(x, list) else output_mutations)(first)
            for mutation in table:
                name = f"{subject}-{slot.name}-{mutation}"
                CASES.add(name, argument_case, subject, i, mutation, zlib.crc32(name.encode()))
        arrays = [(i, s) for i, s in enumerate(slots) if isinstance(s.value, np.ndarray)]
        for i, s in arrays:
            for j, t in arrays:
                if s.role == "in" and t.role == "in" and i < j and s.value.shape == t.value.shape \
                        and s.value.dtype == t.value.dtype:
                    name = f"{subject}-{t.name}-is-{s.name}"
                    CASES.add(name, twice_case, subject, i, j, zlib.crc32(name.encode()))
                if s.role != "in" and t.role == "in" and t.value.dtype == s.value.dtype:
                    hows = ("same", "partial") if t.value.shape == s.value.shape else ("partial",)
                    for how in hows:
                        name = f"{subject}-{s.name}-{how}-{t.name}"
                        CASES.add(name, alias_case, subject, i, j, how, zlib.crc32(name.encode()))


_build()
results = harness.results_fixture(CASES, __name__)
test_case = harness.case_test(CASES)

if __name__ == "__main__":
    harness.main(CASES)
