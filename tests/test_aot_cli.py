"""tpp-aot as a user runs it: a subprocess per spec. Every bad spec ends in one line on
stderr that names the file, the kernel and the field, with exit status 1 and no
traceback; kernel names a C program cannot safely link are refused; a prefix makes
them safe. Compiles small kernels only, no C program is run."""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from tpp import aot, cnames

RELU = {"name": "relu_4", "kind": "unary", "op": "relu", "m": 4, "n": 4}


def tpp_aot(tmp_path: Path, spec: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """tpp-aot SPEC --out TMP/out --no-shared ARGS (args may end in --shared: both libraries)."""
    shared = args[-1:] == ("--shared",)
    args = args[:-1] if shared else (*args, "--no-shared")
    return subprocess.run([sys.executable, "-m", "tpp.aot", str(spec), "--out", str(tmp_path / "out"), *args],
                          capture_output=True, text=True, timeout=240, env=env)


def write(tmp_path: Path, data, name: str = "spec.json") -> Path:
    path = tmp_path / name
    if isinstance(data, bytes):
        path.write_bytes(data)
    else:
        path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


def refused(proc: subprocess.CompletedProcess, *words: str) -> str:
    """The one-line message of a refused run, checked to hold each of `words`."""
    assert proc.returncode == 1, (proc.returncode, proc.stdout, proc.stderr)
    err = proc.stderr.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert err.startswith("tpp-aot: "), err
    for word in words:
        assert word in err, (word, err)
    return err


def kernel(**fields) -> dict:
    return {"kernels": [{**RELU, **fields}]}


BAD_SPECS = {
    "not_utf8": (b'\xff\xfe{"kernels": []}', "spec.json", ["spec.json", "not UTF-8", "0xff"]),
    "bad_json": ('{"kernels": [', "spec.json", ["spec.json", "not valid JSON"]),
    "bad_toml": ("kernels = [ {name=", "spec.toml", ["spec.toml", "not valid TOML"]),
    "not_a_spec": ('"relu"', "spec.json", ["spec.json", "list of kernel tables"]),
    "unknown_top_level_key": ({"kernel": []}, "spec.json", ["spec.json", "'kernel'"]),
    "deep_nesting": ("[" * 100000, "spec.json", ["spec.json"]),
    "beta_a_string": ({"kernels": [{"name": "g", "kind": "gemm", "m": 4, "n": 4, "k": 4, "beta": "x"}]},
                      "spec.json", ["spec.json", "kernel g", "beta", "real number"]),
    "beta_nan": ('{"kernels": [{"name": "g", "kind": "gemm", "m": 4, "n": 4, "k": 4, "beta": NaN}]}',
                 "spec.json", ["kernel g", "beta must be finite"]),
    "alpha_a_string": (kernel(op="elu", alpha="big"), "spec.json", ["spec.json", "kernel relu_4", "alpha",
                                                                     "real number"]),
    "alpha_infinite": ('{"kernels": [{"name": "e", "kind": "unary", "op": "elu", "m": 4, "n": 4, '
                       '"alpha": 1e400}]}', "spec.json", ["kernel e", "alpha must be finite, got inf"]),
    "beta_null": ({"kernels": [{"name": "g", "kind": "gemm", "m": 4, "n": 4, "k": 4, "beta": None}]},
                  "spec.json", ["kernel g", "beta must be a real number"]),
    "flag_a_string": ({"kernels": [{"name": "g", "kind": "gemm", "m": 4, "n": 4, "k": 4,
                                    "trans_b": "false"}]},
                      "spec.json", ["kernel g", "trans_b must be True or False"]),
    "epilogue_a_number": ({"kernels": [{"name": "g", "kind": "gemm", "m": 4, "n": 4, "k": 4, "epilogue": 5}]},
                          "spec.json", ["kernel g", "'epilogue'"]),
    "size_a_string": (kernel(m="4"), "spec.json", ["kernel relu_4", "m must be an integer"]),
    "unknown_field": (kernel(colour=1), "spec.json", ["kernel relu_4", "colour"]),
    "nameless": ({"kernels": [{"kind": "unary"}]}, "spec.json", ["kernel #0", "'name'"]),
    "prefix_not_a_string": ({"prefix": 3, "kernels": [RELU]}, "spec.json", ["'prefix' must be a string"]),
}


@pytest.mark.parametrize("content,filename,words", BAD_SPECS.values(), ids=BAD_SPECS.keys())
def test_a_bad_spec_is_one_line(tmp_path, content, filename, words):
    refused(tpp_aot(tmp_path, write(tmp_path, content, filename)), *words)


def test_a_missing_spec_is_one_line(tmp_path):
    refused(tpp_aot(tmp_path, tmp_path / "nowhere.json"), "nowhere.json")


@pytest.mark.parametrize("target,words", [
    ("nvptx", ["unknown target 'nvptx'"]),
    ("nvptx-sm90", ["nvptx-sm90", "not object code", "tpp.cuda"]),   # was LLVM's "can't emit a file"
])
def test_a_target_without_object_code_is_one_line(tmp_path, target, words):
    proc = tpp_aot(tmp_path, write(tmp_path, kernel()), "--target", target)
    refused(proc, *words)
    assert "createMCCodeEmitter" not in proc.stderr


UNSAFE = ["malloc", "free", "abort", "main", "_start", "int", "void", "memcpy", "expf", "sqrt", "printf",
          "errno", "pthread_create", "__bzero", "_Exit", "_private", "tpp_dispatch_gemm", "TPP_OK", "class",
          "PyInit__tpp_capi", "Py_Initialize", "PyObject_Call"]


def test_a_missing_compiler_is_one_line(tmp_path):
    env = {**os.environ, "CC": "no-such-cc-for-tpp"}
    refused(tpp_aot(tmp_path, write(tmp_path, kernel()), "--shared", env=env),
            "cannot run the C compiler ($CC) 'no-such-cc-for-tpp'")


@pytest.mark.skipif(platform.machine() != "x86_64", reason="the hint is for objects of another architecture")
def test_a_cross_build_without_cc_says_what_to_set(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "CC"}
    proc = tpp_aot(tmp_path, write(tmp_path, kernel()), "--target", "aarch64-sve", "--shared", env=env)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "set CC to a C compiler for aarch64" in proc.stderr and "--no-shared" in proc.stderr


@pytest.mark.parametrize("name", ["malloc", "_start", "int", "tpp_dispatch_gemm"])
def test_unsafe_kernel_names_are_refused(tmp_path, name):
    refused(tpp_aot(tmp_path, write(tmp_path, kernel(name=name))), "spec.json", repr(name), "--prefix")


@pytest.mark.parametrize("name", UNSAFE)
def test_unsafe_kernel_names_are_refused_in_process(name):
    with pytest.raises(aot.SpecError, match=f"kernel name '{name}' .*--prefix mylib_"):
        aot.descriptor({**RELU, "name": name})


def test_a_prefix_makes_such_names_safe(tmp_path):
    """--prefix, or "prefix" in the spec (the option wins), goes before every name."""
    spec = write(tmp_path, {"prefix": "spec_", "kernels": [kernel(name="malloc")["kernels"][0],
                                                           kernel(name="free")["kernels"][0]]})
    proc = tpp_aot(tmp_path, spec)
    assert proc.returncode == 0, proc.stderr
    text = (tmp_path / "out" / "spec.h").read_text()
    assert "void spec_malloc(const tpp_tensor *args);" in text and " malloc(" not in text
    proc = tpp_aot(tmp_path, spec, "--prefix", "cli_")
    assert proc.returncode == 0, proc.stderr
    text = (tmp_path / "out" / "spec.h").read_text()
    assert "void cli_free(const tpp_tensor *args);" in text and "spec_" not in text


@pytest.mark.parametrize("prefix,words", [("tpp_", ["'tpp_relu_4'", "another prefix"]),
                                          ("_", ["'_relu_4'", "another prefix"]),
                                          ("my-lib", ["prefix 'my-lib'"])])
def test_a_bad_prefix_is_refused(tmp_path, prefix, words):
    refused(tpp_aot(tmp_path, write(tmp_path, kernel()), "--prefix", prefix), *words)


@pytest.mark.parametrize("library", ["tpp", "c", "m", "stdio", "math", "malloc"])
def test_library_names_that_shadow_the_system_are_refused(tmp_path, library):
    refused(tpp_aot(tmp_path, write(tmp_path, kernel()), "--name", library), repr(library))


def test_the_name_rules_without_a_subprocess():
    """cnames.problem: the lists, the reserved forms, and names that are fine."""
    for name in ("relu_64", "my_gemm", "exkernels_add", "Gemm32", "strided_copy", "topk", "PyTorchGemm"):
        assert cnames.problem(name) is None, name
    for name in ("1x", "a-b", "", "a b", None, "caller\u00e9"):
        assert "C identifier" in cnames.problem(name), name
    assert "keyword" in cnames.problem("restrict")
    assert "reserves" in cnames.problem("__anything")
    assert "C library" in cnames.problem("logf") and "C library" in cnames.problem("cexpf")
    with pytest.raises(aot.SpecError, match="appears twice"):
        aot.build_named([("k", None), ("k", None)], "x86-avx2", ".", "lib")
    with pytest.raises(aot.SpecError, match="'malloc'"):
        aot.build_named([("malloc", None)], "x86-avx2", ".", "lib")


def test_a_toml_spec_takes_a_prefix(tmp_path):
    pytest.importorskip("tomllib")
    path = write(tmp_path, 'prefix = "t_"\n\n[[kernels]]\nname = "free"\nkind = "unary"\nop = "relu"\n'
                           'm = 4\nn = 4\n', "spec.toml")
    spec = aot.load_spec(path)
    assert spec.prefix == "t_" and [name for name, _ in aot.describe(spec.kernels, spec.prefix)] == ["t_free"]
    assert aot.read_spec(path) == spec.kernels


def test_a_null_alpha_is_the_kinds_default():
    name, desc = aot.descriptor({"name": "e", "kind": "unary", "op": "elu", "m": 4, "n": 4, "alpha": None})
    assert name == "e" and desc.alpha is None and desc.alpha_value() == 1.0
