#!/usr/bin/env bash
# The GPU checks, as one prepared run on a lent NVIDIA machine (no network there):
# installs the carried wheels (.whl: llvmlite 0.50, cffi, pycparser for the image's
# Python) and tpp itself, runs the gpu-marked tests and `tpp-bench gpu`, and times
# torch's own add and device copy for comparison. Logs go to $OUT.
#   here:  pip download ... -d .whl llvmlite==0.50.0 cffi pycparser   (cp312 manylinux)
#   there: bash tools/gpu_check.sh     (carry .whl)
set -uo pipefail
OUT=${OUT:-/tmp/gpu-out}
mkdir -p "$OUT"
repo=$(pwd)
PY=python3
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
$PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site
$PY -m pip install -q --no-index --no-deps --no-build-isolation --no-compile --target /tmp/tpp . >/dev/null || exit 1
export PYTHONPATH=/tmp/tpp:/tmp/site TPP_CACHE_DIR=/tmp/tpp-cache PYTHONUNBUFFERED=1
cd /tmp || exit 1
$PY -c "import tpp, llvmlite; print('tpp', tpp.__file__, 'llvmlite', llvmlite.__version__, 'gpu', tpp.cuda.available(), tpp.cuda.compute_capability())"
$PY -m pytest -q -m gpu -p no:cacheprovider "$repo/tests/test_gpu.py" 2>&1 | tee "$OUT/gpu_tests.log" | tail -25
$PY -m tpp.bench.cli gpu --no-pin --repeat 20 2>&1 | tee "$OUT/gpu_bench.log"
$PY - <<'PYEOF' 2>&1 | tee "$OUT/torch_baseline.log"
import torch
n = 16384 * 16384
a = torch.rand(n, device="cuda"); b = torch.rand(n, device="cuda"); c = torch.empty_like(a)
def timed(fn, reps=20):
    fn(); torch.cuda.synchronize()
    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    ts = []
    for _ in range(reps):
        s.record(); fn(); e.record(); e.synchronize(); ts.append(s.elapsed_time(e) / 1e3)
    ts.sort(); return ts[len(ts) // 2]
t_add = timed(lambda: torch.add(a, b, out=c))
t_copy = timed(lambda: c.copy_(a))
print(f"torch add 256M f32: {3 * 4 * n / t_add / 1e9:.0f} GB/s; torch copy: {2 * 4 * n / t_copy / 1e9:.0f} GB/s")
x = torch.randn(4096, 4096, device="cuda", dtype=torch.bfloat16); y = torch.randn_like(x)
t_mm = timed(lambda: torch.matmul(x, y))
print(f"torch.matmul bf16 4096^3: {2 * 4096 ** 3 / t_mm / 1e12:.0f} TFLOP/s (cuBLAS)")
PYEOF
