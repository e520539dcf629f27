"""Run AOT-compiled kernels of an aarch64-sve target under qemu-user.

cases: (C name, descriptor, input arrays, output specs [(shape, numpy dtype, ld)]).
The kernels go into one static library (tpp.aot, the target's objects), a C main
generated here embeds the inputs as bytes, calls every kernel once with
tpp_tensor {data, ld} arguments and writes every output's bytes to stdout; the
program is linked statically by the cross compiler and run by qemu-aarch64 at
the target's vector length. Returns each case's outputs as numpy arrays.
"""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np

from tpp import aot

QEMU = shutil.which("qemu-aarch64")
CROSS = shutil.which("aarch64-linux-gnu-gcc")
MISSING = None if QEMU and CROSS else (
    "the AArch64 cross tools are missing (apt-get install qemu-user gcc-aarch64-linux-gnu)")


def _bytes(name: str, data: bytes, const: bool = True) -> str:
    body = ",".join(str(b) for b in data) or "0"
    return (f"static {'const ' if const else ''}unsigned char {name}[] __attribute__((aligned(64))) = "
            f"{{{body}}};\n")


def qemu_command(exe: Path, bits: int) -> list[str]:
    return [QEMU, "-cpu", f"max,sve{bits}=on,sve-default-vector-length={bits // 8}", str(exe)]


def build(cases, target: str, tmp: Path, name: str = "svek") -> Path:
    """The static aarch64 program running every case; returns its path."""
    paths = aot.build_named([(c[0], c[1]) for c in cases], target, tmp, name, shared=False)
    src = ["#include <stdio.h>\n", f'#include "{name}.h"\n']
    calls = []
    for i, (cname, _, inputs, outputs) in enumerate(cases):
        args = []
        for j, (x, ld) in enumerate(inputs):
            src.append(_bytes(f"in_{i}_{j}", np.ascontiguousarray(x).tobytes()))
            args.append(f"{{(void *)in_{i}_{j}, {ld}}}")
        for j, (shape, dtype, ld) in enumerate(outputs):
            nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
            src.append(f"static unsigned char out_{i}_{j}[{max(nbytes, 1)}] __attribute__((aligned(64)));\n")
            args.append(f"{{out_{i}_{j}, {ld}}}")
            calls.append((i, j, nbytes))
        src.append(f"static void run_{i}(void) {{ {cname}((tpp_tensor[]){{{', '.join(args)}}}); }}\n")
    src.append("int main(void) {\n")
    src += [f"    run_{i}();\n" for i in range(len(cases))]
    src += [f"    fwrite(out_{i}_{j}, 1, {n}, stdout);\n" for i, j, n in calls]
    src.append("    return 0;\n}\n")
    c_file = tmp / "main.c"
    c_file.write_text("".join(src))
    exe = tmp / "main"
    proc = subprocess.run([CROSS, "-O1", "-static", f"-I{tmp}", str(c_file), str(paths["static"]), "-o", str(exe)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return exe


def run(cases, target: str, bits: int, tmp: Path) -> list[list[np.ndarray]]:
    exe = build(cases, target, tmp)
    proc = subprocess.run(qemu_command(exe, bits), capture_output=True, timeout=300)
    assert proc.returncode == 0, f"qemu exit {proc.returncode}: {proc.stderr.decode()[-2000:]}"
    data, at, results = proc.stdout, 0, []
    for _, _, _, outputs in cases:
        outs = []
        for shape, dtype, _ in outputs:
            n = int(np.prod(shape)) * np.dtype(dtype).itemsize
            outs.append(np.frombuffer(data[at:at + n], dtype=dtype).reshape(shape))
            at += n
        results.append(outs)
    assert at == len(data), "the program wrote more or less than the outputs"
    return results
