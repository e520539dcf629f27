"""The catalog's family records (kernels/family.py) are complete, the descriptors keep the
descriptor protocol (tpp/protocol.py), and the layers stay apart: every record has its
kinds, checks, operands, a numpy reference and, for every backend, an emitter or the
reason it has none; every target and every record agree on what is offered."""
from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest

import tpp
from tpp import descriptors, protocol
from tpp.jit.targets import Target, names
from tpp.kernels import binary as binary_k
from tpp.kernels import reduce as reduce_k
from tpp.kernels import unary as unary_k
from tpp.kernels.family import BACKENDS, Family, Lowering

RECORDS = {record.name: record for record in descriptors.RECORDS}
ROOT = Path(tpp.__file__).resolve().parent.parent

# one descriptor of each record, for the checks that need one
SAMPLES = {
    "unary": lambda: tpp.unary_desc("gelu_tanh", 5, 7),
    "binary": lambda: tpp.binary_desc("add", 5, 7, broadcast="row"),
    "reduce": lambda: tpp.unary_desc("reduce_max", 5, 7, axis=0, argidx=True),
    "transpose": lambda: tpp.unary_desc("transpose", 5, 7),
    "vnni_pack": lambda: tpp.unary_desc("vnni_pack", 5, 7, "bf16"),
    "gemm": lambda: tpp.gemm_desc(5, 7, 3, beta=0.0, epilogue=("bias", "relu")),
    "brgemm": lambda: tpp.brgemm_desc(5, 7, 3, beta=0.0),
}


def _inputs(desc, rng):
    """Inputs of the sample's shapes (a BRGEMM's two-block lists, then its C)."""
    ops = [op for op in desc.operands() if not op.output]
    arrays = [rng.standard_normal((op.rows, op.cols)) for op in ops]
    if desc.kind == "brgemm":
        return [[arrays[0]] * 2, [arrays[1]] * 2, *arrays[2:], np.zeros((desc.m, desc.n))]
    return arrays


@pytest.mark.parametrize("name", sorted(RECORDS))
def test_every_record_is_complete(name, rng):
    record = RECORDS[name]
    assert isinstance(record, Family) and record.kinds, name
    assert all(callable(f) for f in (record.validate, record.operands, record.reference)), name
    for backend in BACKENDS:
        lowering, reason = record.lowerings.get(backend), record.unsupported.get(backend)
        assert (lowering is None) != (reason is None), (name, backend, "an emitter xor a reason")
        if lowering is not None:
            assert isinstance(lowering, Lowering) and callable(lowering.emit), (name, backend)
            assert (lowering.threads is not None) == (backend == "simt"), (name, backend, "launch data")
        else:
            assert len(reason) > 20 and record.unsupported_reason(backend) == reason, (name, backend)
    assert set(record.lowerings) | set(record.unsupported) <= set(BACKENDS), name
    desc = SAMPLES[name]()
    assert desc.record is record and desc.family == record.family
    outs = [op for op in desc.operands() if op.output]
    result = desc.reference(*_inputs(desc, rng))
    results = result if isinstance(result, tuple) else (result,)
    assert [np.shape(r) for r in results] == [(op.cols,) if op.rows == 1 and op.bcast.name == "VEC"
                                              else (op.rows, op.cols) for op in outs], name


def test_samples_and_records_match():
    assert set(SAMPLES) == set(RECORDS)


def test_every_kind_has_exactly_one_record():
    unary = [kind for record in descriptors.UNARY_RECORDS for kind in record.kinds]
    assert sorted(unary) == sorted(tpp.UNARY_KINDS) and len(unary) == len(set(unary))
    assert RECORDS["unary"].kinds == tuple(unary_k.KINDS)
    assert RECORDS["reduce"].kinds == tuple(reduce_k.KINDS)
    assert RECORDS["binary"].kinds == tuple(binary_k.KINDS) == tpp.BINARY_KINDS


@pytest.mark.parametrize("target", names())
def test_targets_and_records_agree_on_what_is_offered(target):
    """A family without an emitter for a target's backend is listed by that target, so
    Target.unsupported_reason (what tests and users read) tells the whole story."""
    t = Target.named(target)
    assert t.model in BACKENDS
    for record in descriptors.RECORDS:
        if record.unsupported_reason(t.model) is not None:
            assert t.unsupported_reason(record.family), (target, record.name)


@pytest.mark.parametrize("target", ["x86-avx2", "nvptx-sm90"])
def test_simt_launch_sizes_come_from_the_records(target):
    t = Target.named(target)
    for name, make in SAMPLES.items():
        desc = make()
        if desc.record.unsupported_reason(t.model):
            continue
        lowering = desc.record.lowering(t.model)
        assert (lowering.threads(desc) >= 1) if t.model == "simt" else lowering.threads is None, name


def test_a_backend_without_an_emitter_is_refused_with_the_records_reason():
    with pytest.raises(LookupError, match="VNNI layouts"):
        RECORDS["vnni_pack"].lowering("simt")


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_descriptors_keep_the_protocol(name):
    desc = SAMPLES[name]()
    assert isinstance(desc, protocol.Descriptor)
    for attribute in protocol.ATTRIBUTES:
        assert hasattr(desc, attribute), (name, attribute)
    assert isinstance(desc.positional_output, bool) and isinstance(desc.output_required, bool)
    assert isinstance(desc.native_python_entry, bool) and isinstance(desc.elementwise, bool)
    hash(desc)


def test_descriptor_fields_are_unchanged():
    """The composition layer, ops and the C ABI construct descriptors positionally."""
    fields = {cls.__name__: list(cls.__dataclass_fields__) for cls in
              (descriptors.UnaryDesc, descriptors.BinaryDesc, descriptors.GemmDesc, descriptors.BrgemmDesc)}
    assert fields == {
        "UnaryDesc": ["kind", "m", "n", "dtype", "out_dtype", "alpha", "axis", "argidx"],
        "BinaryDesc": ["kind", "m", "n", "dtype", "bcast_a", "bcast_b"],
        "GemmDesc": ["m", "n", "k", "dtype", "trans_a", "trans_b", "beta", "lda", "ldb", "ldc", "out_dtype",
                     "b_vnni", "epilogue", "what"],
        "BrgemmDesc": ["m", "n", "k", "dtype", "variant", "trans_a", "trans_b", "beta", "lda", "ldb", "ldc",
                       "stride_a", "stride_b", "out_dtype", "b_vnni", "epilogue"]}


def _imports(path: Path) -> set[str]:
    """Every module a file imports, at any depth of its code (relative names as written)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            found.add("." * node.level + (node.module or ""))
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def test_kernel_does_not_import_dispatch():
    """tpp.kernel sits below tpp.dispatch: Kernel is handed dispatch.get_kernel."""
    assert not {name for name in _imports(ROOT / "tpp" / "kernel.py") if "dispatch" in name}


def test_kernels_import_nothing_above_them():
    """The catalog (kernels/) imports only the jit layer and itself (DESIGN.md's layers)."""
    upward = {(p.name, name) for p in (ROOT / "kernels").glob("*.py") for name in _imports(p)
              if name.startswith("..") and not name.startswith("..jit")}
    assert upward == set()


def test_shared_kernel_code_never_asks_for_the_backend():
    """Emitters are picked by the records' (backend -> lowering) tables, not by tests of
    target.model in the kernels (STYLE.md: shared code never asks which ISA it runs on)."""
    offenders = [p.name for p in (ROOT / "kernels").glob("*.py")
                 if p.name != "family.py" and ".model" in p.read_text()]   # family.py: the table lookup
    assert offenders == []


def test_gemm_with_an_epilogue_runs_on_views(rng):
    """A view's row stride gets a sibling kernel compiled for it: with_lds takes one ld per
    operand that has one compiled in (A, B, C; not the bias)."""
    g = tpp.gemm(8, 8, 8, beta=0.0, epilogue=("bias", "relu"))
    if not g.target.runs_on_host:
        pytest.skip("the host cannot run this target")
    big = rng.standard_normal((8, 16)).astype(np.float32)
    b = rng.standard_normal((8, 8)).astype(np.float32)
    bias = rng.standard_normal(8).astype(np.float32)
    got = g(big[:, :8], b, bias)
    np.testing.assert_allclose(got, np.maximum(big[:, :8] @ b + bias, 0), rtol=1e-5, atol=1e-5)
