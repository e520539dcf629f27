"""JIT code keeps working when the process holds large address ranges (CUDA reserves
hundreds of GB; so do other GPU runtimes). With one long-lived MCJIT memory manager,
an object's code and constants could be mapped more than 2 GB apart once such
ranges sat between its blocks, and RuntimeDyldELF aborted the process on the
32-bit offsets between them (seen on a GPU machine; reproduced here, though not on
every run, by reserving 8 GB between kernel loads)."""
from __future__ import annotations

CODE = """
import ctypes, numpy as np, tpp
libc = ctypes.CDLL(None)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
PROT_NONE, MAP_PRIVATE, MAP_ANONYMOUS, MAP_NORESERVE = 0, 0x02, 0x20, 0x4000
kinds = ["relu", "exp", "tanh", "sigmoid", "gelu_tanh", "log", "sqrt", "square"]
held = []
for i in range(48):
    k = tpp.unary(kinds[i % len(kinds)], 5 + i, 33)
    x = np.random.default_rng(i).uniform(0.5, 2, (5 + i, 33)).astype(np.float32)
    np.testing.assert_allclose(k(x), tpp.unary(kinds[i % len(kinds)], 5 + i, 33).descriptor.reference(x),
                               rtol=1e-5, atol=1e-6)
    held.append(libc.mmap(None, 8 << 30, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0))
print("ok")
"""


def test_kernels_load_between_large_reservations(run_python, tmp_path):
    # a cache of its own: every kernel is compiled and loaded fresh
    ran = run_python(CODE, env={"TPP_CACHE_DIR": str(tmp_path)})
    assert ran.check().stdout.strip() == "ok"
