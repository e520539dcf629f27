"""Running NVPTX kernels on an NVIDIA GPU (the CUDA driver API through ctypes).

    k = tpp.binary("add", 4096, 4096, target="nvptx-sm90")   # PTX: k.asm
    gk = tpp.cuda.load(k)                                    # loaded into the current GPU
    gk(a, b, out=c)      # device arrays: __cuda_array_interface__ (CuPy, PyTorch, tpp.cuda.DeviceArray)
                         # or DLPack (__dlpack__: PyTorch, CuPy, JAX), strided views included
    y = gk(x_numpy, b_numpy)                                 # numpy: copied in, result copied back

Importing this module needs no GPU; using it without one (no libcuda, no
device) raises tpp.TargetError saying so. Launches are asynchronous on the
default stream; a call with numpy arguments, and `synchronize()`, wait.
"""
from __future__ import annotations

import ctypes
import threading
from dataclasses import dataclass

import numpy as np

from . import arrayabi, dlpack
from .dtypes import to_numpy
from .errors import DTypeError, ShapeError, TargetError
from .kernel import Kernel

BLOCK = 256                       # threads per block (the tensor-core GEMM's block is built for this)
_SM_COUNT = 16                    # CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT
_CC_MAJOR, _CC_MINOR = 75, 76     # CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR / _MINOR


class CudaError(TargetError):
    """The CUDA driver refused something (the message has its error name)."""


class _Driver:
    """libcuda, initialised once, with the primary context of device 0 made current."""

    def __init__(self):
        try:
            self.lib = ctypes.CDLL("libcuda.so.1")
        except OSError as exc:
            raise TargetError(f"tpp.cuda: no NVIDIA driver on this machine (libcuda.so.1: {exc})") from None
        self.check(self.lib.cuInit(0), "cuInit")
        count = ctypes.c_int()
        self.check(self.lib.cuDeviceGetCount(ctypes.byref(count)), "cuDeviceGetCount")
        if count.value < 1:
            raise TargetError("tpp.cuda: the NVIDIA driver sees no GPU")
        self.device = ctypes.c_int()
        self.check(self.lib.cuDeviceGet(ctypes.byref(self.device), 0), "cuDeviceGet")
        self.context = ctypes.c_void_p()
        self.check(self.lib.cuDevicePrimaryCtxRetain(ctypes.byref(self.context), self.device),
                   "cuDevicePrimaryCtxRetain")
        self.lib.cuLaunchKernel.argtypes = [ctypes.c_void_p] + [ctypes.c_uint] * 7 + [
            ctypes.c_void_p, ctypes.POINTER(ctypes.c_void_p), ctypes.c_void_p]
        self.lib.cuMemcpyHtoD_v2.argtypes = [ctypes.c_uint64, ctypes.c_void_p, ctypes.c_size_t]
        self.lib.cuMemcpyDtoH_v2.argtypes = [ctypes.c_void_p, ctypes.c_uint64, ctypes.c_size_t]
        self.lib.cuMemcpyDtoD_v2.argtypes = [ctypes.c_uint64, ctypes.c_uint64, ctypes.c_size_t]
        self.lib.cuMemFree_v2.argtypes = [ctypes.c_uint64]
        self.lib.cuModuleLoadData.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_char_p]
        self.lib.cuModuleGetFunction.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_void_p,
                                                 ctypes.c_char_p]

    def current(self) -> None:
        self.check(self.lib.cuCtxSetCurrent(self.context), "cuCtxSetCurrent")

    def check(self, status: int, what: str) -> None:
        if status != 0:
            name = ctypes.c_char_p()
            self.lib.cuGetErrorName(status, ctypes.byref(name))
            raise CudaError(f"tpp.cuda: {what} failed: {(name.value or b'?').decode()} ({status})")

    def attribute(self, which: int) -> int:
        value = ctypes.c_int()
        self.check(self.lib.cuDeviceGetAttribute(ctypes.byref(value), which, self.device), "cuDeviceGetAttribute")
        return value.value


_driver: _Driver | None = None
_lock = threading.Lock()


def driver() -> _Driver:
    global _driver
    with _lock:
        if _driver is None:
            _driver = _Driver()
        _driver.current()
        return _driver


def available() -> bool:
    """Whether a GPU can be used here (never raises)."""
    try:
        driver()
        return True
    except TargetError:
        return False


def compute_capability() -> tuple[int, int]:
    d = driver()
    return d.attribute(_CC_MAJOR), d.attribute(_CC_MINOR)


def synchronize() -> None:
    d = driver()
    d.check(d.lib.cuCtxSynchronize(), "cuCtxSynchronize")


# ---- device memory ---------------------------------------------------------------------------
class DeviceArray:
    """A C-contiguous array in GPU memory (with __cuda_array_interface__)."""

    def __init__(self, shape, dtype):
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)
        self.nbytes = int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize
        d = driver()
        ptr = ctypes.c_uint64()
        d.check(d.lib.cuMemAlloc_v2(ctypes.byref(ptr), ctypes.c_size_t(max(self.nbytes, 1))), "cuMemAlloc")
        self.ptr = ptr.value
        self._lib = d.lib

    @classmethod
    def from_numpy(cls, x: np.ndarray) -> "DeviceArray":
        x = np.ascontiguousarray(x)
        out = cls(x.shape, x.dtype)
        d = driver()
        d.check(d.lib.cuMemcpyHtoD_v2(out.ptr, x.ctypes.data, x.nbytes), "cuMemcpyHtoD")
        return out

    def numpy(self) -> np.ndarray:
        host = np.empty(self.shape, self.dtype)
        d = driver()
        d.check(d.lib.cuMemcpyDtoH_v2(host.ctypes.data, self.ptr, self.nbytes), "cuMemcpyDtoH")
        return host

    def copy_from(self, other: "DeviceArray") -> None:
        d = driver()
        d.check(d.lib.cuMemcpyDtoD_v2(self.ptr, other.ptr, min(self.nbytes, other.nbytes)), "cuMemcpyDtoD")

    @property
    def __cuda_array_interface__(self) -> dict:
        return {"shape": self.shape, "typestr": self.dtype.str, "data": (self.ptr, False), "version": 3,
                "strides": None}

    def __del__(self):
        if getattr(self, "ptr", 0):
            self._lib.cuMemFree_v2(self.ptr)
            self.ptr = 0


# ---- kernels ---------------------------------------------------------------------------------
class GpuKernel:
    """A tpp kernel of an NVPTX target, loaded into the GPU; call it like a Kernel."""

    def __init__(self, kernel: Kernel):
        if kernel.target.model != "simt" or not kernel.code:
            raise TargetError(f"tpp.cuda: {kernel!r} is not a GPU kernel (dispatch it with target='nvptx-sm90')")
        self.kernel = kernel
        d = driver()
        major, minor = compute_capability()
        needed = int(kernel.target.cpu.split("_")[1])
        if major * 10 + minor < needed:
            raise TargetError(f"tpp.cuda: this GPU is sm_{major}{minor}; the kernel needs {kernel.target.cpu}")
        self._module = ctypes.c_void_p()
        d.check(d.lib.cuModuleLoadData(ctypes.byref(self._module), kernel.code + b"\0"), "cuModuleLoadData")
        self._function = ctypes.c_void_p()
        d.check(d.lib.cuModuleGetFunction(ctypes.byref(self._function), self._module, kernel.symbol.encode()),
                "cuModuleGetFunction")
        self._operands = kernel.descriptor.operands()
        self._np = [to_numpy(op.dtype) for op in self._operands]
        self._sms = d.attribute(_SM_COUNT)
        desc = kernel.descriptor
        self._work = desc.record.lowering(kernel.target.model).threads(desc)   # the backend's launch size

    def __repr__(self) -> str:
        return f"<tpp.cuda.GpuKernel {self.kernel.descriptor} on {self.kernel.target.name}>"

    def _device(self, op, value, dtype) -> tuple[int, int, object, object]:
        """(device pointer, ld, the (device, host) pair to copy back or None, what to keep
        alive until the kernel has run) for one argument."""
        shapes = arrayabi.accepted_shapes(op)
        what = f"tpp.cuda {self.kernel.descriptor.kind}"
        if isinstance(value, np.ndarray):
            if value.dtype != dtype:
                raise DTypeError(f"{what}: argument '{op.name}' must have dtype {dtype}, got {value.dtype}")
            if value.shape not in shapes:
                raise ShapeError(f"{what}: argument '{op.name}' must have shape {shapes[0]}, got {value.shape}")
            dev = DeviceArray.from_numpy(value)          # contiguous on the device
            ld = value.shape[-1] if value.ndim else 1
            if op.ld is not None and value.ndim == 2 and value.shape[0] > 1 and ld != op.ld:
                raise ShapeError(f"{what}: argument '{op.name}' becomes row stride {ld} on the device; "
                                 f"the kernel was compiled for {op.ld}")
            return dev.ptr, ld, (dev, value), dev
        view = _device_view(value)
        if view is None:
            raise TypeError(f"{what}: argument '{op.name}' must be a numpy array or a GPU array "
                            f"(__cuda_array_interface__ or DLPack), got {type(value).__name__}")
        if isinstance(view, np.ndarray):                  # a DLPack array in host memory
            return self._device(op, view, dtype)
        if view.dtype != dtype and not (dtype.itemsize == 2 and view.dtype.itemsize == 2 and dtype.kind == "V"):
            raise DTypeError(f"{what}: argument '{op.name}' must have dtype {dtype}, got {view.dtype}")
        if view.shape not in shapes:
            raise ShapeError(f"{what}: argument '{op.name}' must have shape {shapes[0]}, got {view.shape}")
        shape, strides = view.shape, view.strides
        ld = shape[-1] if shape else 1
        if strides is not None and len(shape) == 2:
            if shape[1] > 1 and strides[1] != 1:
                raise ShapeError(f"{what}: argument '{op.name}' must have unit element stride")
            if shape[0] > 1:
                if strides[0] < shape[1]:
                    raise ShapeError(f"{what}: argument '{op.name}' has an unusable row stride {strides[0]}")
                ld = strides[0]
        if op.ld is not None and len(shape) == 2 and shape[0] > 1 and ld != op.ld:
            raise ShapeError(f"{what}: argument '{op.name}' has row stride {ld}; the kernel was compiled for {op.ld}")
        return view.data, ld, None, view.keep

    def __call__(self, *args, out=None):
        if out is None:
            if not all(isinstance(a, np.ndarray) for a in args):
                raise TypeError("tpp.cuda: pass out= (a device array) when the inputs are on the GPU")
            outs = [(op, dt) for op, dt in zip(self._operands, self._np) if op.output]
            out = tuple(np.empty(arrayabi.accepted_shapes(op)[0], dt) for op, dt in outs)
            if len(out) == 1:
                out = out[0]
        pointers, keep, copy_back = self.prepare(*args, out=out)
        self.launch(pointers)
        _copy_back(copy_back)
        del keep
        return out

    def prepare(self, *args, out):
        """The launch parameters for these arguments: (pointers for launch(), what they
        point into, the (device, host) pairs of numpy outputs to copy back). Timing
        loops prepare once and launch many times."""
        n_in = sum(not op.output for op in self._operands)
        if len(args) != n_in:
            raise TypeError(f"tpp.cuda: expected {n_in} input(s), got {len(args)}")
        out_list = list(out) if isinstance(out, tuple) else [out]
        params, keep, copy_back = [], [], []
        for op, dt, value in zip(self._operands, self._np, list(args) + out_list):
            ptr, ld, host, alive = self._device(op, value, dt)
            params += [ctypes.c_uint64(ptr), ctypes.c_int64(ld)]
            keep.append(alive)
            if host is not None and op.output:
                copy_back.append(host)
        return _parameters(params), (keep, params), copy_back

    def launch(self, pointers) -> None:
        """One launch on the default stream with the kernel's parameter pointers."""
        blocks = max(1, min(-(-self._work // BLOCK), self._sms * 32))
        d = driver()
        d.check(d.lib.cuLaunchKernel(self._function, blocks, 1, 1, BLOCK, 1, 1, 0, None, pointers, None),
                "cuLaunchKernel")


class GpuBatchKernel(GpuKernel):
    """A BRGEMM of an NVPTX target, called as on the CPU:
    stride:  br(a, b, [bias, residual,] c)             a (batch, m, k), b (batch, k, n) stacks
    offset:  br(a, b, [...,] c, a_offsets, b_offsets)  flat buffers, int64 element offsets
    address: br([a0, ...], [b0, ...], [...,] c)        lists of blocks
    Arrays are numpy (copied in, c copied back) or GPU arrays; the stacks' strides must be
    the ones the kernel was compiled for (tight by default)."""

    def __init__(self, kernel):
        super().__init__(kernel.kernel if hasattr(kernel, "kernel") else kernel)
        self._variant = self.kernel.descriptor.variant

    def __call__(self, a, b, *rest):
        d = self.kernel.descriptor
        n_extra = len(self._operands) - 3
        want = n_extra + (3 if self._variant == "offset" else 1)
        if len(rest) != want:
            raise TypeError(f"tpp.cuda brgemm({self._variant}): expected {2 + want} arguments, got {2 + len(rest)}")
        extras, c, tail = list(rest[:n_extra]), rest[n_extra], rest[n_extra + 1:]
        ops = self._operands
        keep, copy_back, params = [], [], []

        def add(ptr, ld):
            params.extend([ctypes.c_uint64(ptr), ctypes.c_int64(ld)])

        def upload(x: np.ndarray) -> int:
            dev = DeviceArray.from_numpy(np.ascontiguousarray(x))
            keep.append(dev)
            return dev.ptr

        def stack(name, x, op, dtype, stride, ld):
            """A (batch, rows, cols) stack: (pointer, batch)."""
            shape = (op.rows, op.cols)
            if isinstance(x, np.ndarray):
                if x.dtype != dtype or x.ndim != 3 or x.shape[1:] != shape:
                    raise ShapeError(f"tpp.cuda brgemm: '{name}' must be a ({'batch'}, {shape[0]}, {shape[1]}) "
                                     f"{dtype} stack, got {x.shape} {x.dtype}")
                x = np.ascontiguousarray(x)
                if shape[0] * shape[1] != stride or shape[1] != ld:
                    raise ShapeError(f"tpp.cuda brgemm: the kernel was compiled for '{name}' strides {stride}, "
                                     f"{ld}; a tight stack has {shape[0] * shape[1]}, {shape[1]}")
                return upload(x), x.shape[0]
            view = _device_view(x)
            if isinstance(view, np.ndarray):
                return stack(name, view, op, dtype, stride, ld)
            if view is None or len(view.shape) != 3 or view.shape[1:] != shape:
                raise ShapeError(f"tpp.cuda brgemm: '{name}' must be a (batch, {shape[0]}, {shape[1]}) stack")
            strides = view.strides or (shape[0] * shape[1], shape[1], 1)
            if strides[0] != stride or (shape[0] > 1 and strides[1] != ld) or strides[2] != 1:
                raise ShapeError(f"tpp.cuda brgemm: '{name}' has strides {strides}; the kernel was compiled "
                                 f"for {stride}, {ld}, 1 elements")
            keep.append(view.keep)
            return view.data, view.shape[0]

        if self._variant == "stride":
            pa, count = stack("a", a, ops[0], self._np[0], d.stride_a, d.lda)
            pb, count_b = stack("b", b, ops[1], self._np[1], d.stride_b, d.ldb)
            if count != count_b:
                raise ShapeError(f"tpp.cuda brgemm: a and b must have the same batch, got {count} and {count_b}")
            add(pa, d.lda)
            add(pb, d.ldb)
            aux = [(0, count)]
        elif self._variant == "offset":
            offsets = [np.ascontiguousarray(t, dtype=np.int64) for t in tail]
            if offsets[0].shape != offsets[1].shape or offsets[0].ndim != 1:
                raise ShapeError("tpp.cuda brgemm: a_offsets and b_offsets must be 1-D and of one length")
            for name, buf, dtype, ld in (("a", a, self._np[0], d.lda), ("b", b, self._np[1], d.ldb)):
                if not isinstance(buf, np.ndarray) or buf.dtype != dtype:
                    raise TypeError(f"tpp.cuda brgemm: buffer '{name}' must be a numpy {dtype} array here")
                add(upload(buf.reshape(-1)), ld)
            aux = [(upload(offsets[0]), offsets[0].size), (upload(offsets[1]), offsets[1].size)]
        else:
            if not isinstance(a, (list, tuple)) or not isinstance(b, (list, tuple)) or len(a) != len(b):
                raise TypeError("tpp.cuda brgemm(address): a and b must be lists of blocks of one length")
            for blocks, op, dtype, ld in ((a, ops[0], self._np[0], d.lda), (b, ops[1], self._np[1], d.ldb)):
                table = []
                for x in blocks:
                    if isinstance(x, np.ndarray):
                        table.append(upload(np.ascontiguousarray(x)))
                    else:
                        ptr, _, _, alive = self._device(op, x, dtype)
                        keep.append(alive)
                        table.append(ptr)
                table = np.array(table, np.int64)
                add(upload(table), ld)
            aux = [(0, len(a))]
        for op, dt, x in zip(ops[2:-1], self._np[2:-1], extras):
            ptr, ld, _, alive = self._device(op, x, dt)
            keep.append(alive)
            add(ptr, ld)
        ptr, ld, host, alive = self._device(ops[-1], c, self._np[-1])
        keep.append(alive)
        if host is not None:
            copy_back.append(host)
        add(ptr, ld)
        for ptr, count in aux:
            add(ptr, count)
        self.launch(_parameters(params))
        synchronize()
        _copy_back(copy_back)     # keep and params held the launch's memory until here
        return c


@dataclass
class _View:
    """A GPU array as a kernel argument: strides in elements (None: compact)."""
    data: int
    shape: tuple
    strides: tuple | None
    dtype: np.dtype
    keep: object                    # what must stay alive while the kernel runs


def _device_view(value) -> _View | np.ndarray | None:
    """`value` through __cuda_array_interface__ or DLPack: a _View of GPU memory, a numpy
    array for DLPack arrays in host memory, or None for neither."""
    face = getattr(value, "__cuda_array_interface__", None)
    if face is not None:
        dtype = np.dtype(face["typestr"])
        strides = face.get("strides")
        if strides is not None:
            if any(s % dtype.itemsize for s in strides):
                raise ShapeError("tpp.cuda: a GPU array's strides must be whole elements")
            strides = tuple(s // dtype.itemsize for s in strides)
        return _View(face["data"][0], tuple(face["shape"]), strides, dtype, value)
    if dlpack.has_dlpack(value):
        kind, _ = dlpack.device_of(value)
        if kind == dlpack.CPU:
            return np.from_dlpack(value)
        if kind not in (dlpack.CUDA, dlpack.CUDA_MANAGED, dlpack.CUDA_HOST):
            raise TargetError(f"tpp.cuda: a DLPack array on device type {kind} is neither CUDA nor host memory")
        t = dlpack.describe(value, stream=1)     # 1: the legacy default stream, the one we launch on
        return _View(t.data, t.shape, t.strides, t.dtype, (value, t.capsule))
    return None


def _parameters(values: list) -> ctypes.Array:
    """cuLaunchKernel's kernelParams: a pointer to each ctypes value (keep the values alive)."""
    return (ctypes.c_void_p * len(values))(*[ctypes.cast(ctypes.pointer(x), ctypes.c_void_p) for x in values])


def _copy_back(pairs: list) -> None:
    """Wait for the GPU, then copy each (device array, numpy output) pair back."""
    if pairs:
        synchronize()
        for dev, host in pairs:
            host[...] = dev.numpy()


def load(kernel) -> GpuKernel:
    """Load a kernel dispatched for an NVPTX target into the GPU (a BatchReduceKernel
    becomes a GpuBatchKernel)."""
    if getattr(kernel, "descriptor", None) is not None and kernel.descriptor.kind == "brgemm":
        return GpuBatchKernel(kernel)
    return GpuKernel(kernel)


def copy_bandwidth(nbytes: int, repeat: int = 20) -> float:
    """Device-to-device copy speed in GB/s (bytes read + written), cuMemcpyDtoD, timed by events."""
    src, dst = DeviceArray((nbytes,), np.uint8), DeviceArray((nbytes,), np.uint8)

    def copies() -> None:
        for _ in range(10):
            dst.copy_from(src)
    return 10 * 2 * nbytes / time_on_gpu(copies, repeat) / 1e9


def time_on_gpu(fn, repeat: int = 20) -> float:
    """Median seconds of fn() between two CUDA events, after one warm-up."""
    d = driver()
    fn()
    start, stop = ctypes.c_void_p(), ctypes.c_void_p()
    d.check(d.lib.cuEventCreate(ctypes.byref(start), 0), "cuEventCreate")
    d.check(d.lib.cuEventCreate(ctypes.byref(stop), 0), "cuEventCreate")
    times = []
    for _ in range(repeat):
        d.check(d.lib.cuEventRecord(start, None), "cuEventRecord")
        fn()
        d.check(d.lib.cuEventRecord(stop, None), "cuEventRecord")
        d.check(d.lib.cuEventSynchronize(stop), "cuEventSynchronize")
        ms = ctypes.c_float()
        d.check(d.lib.cuEventElapsedTime(ctypes.byref(ms), start, stop), "cuEventElapsedTime")
        times.append(ms.value / 1e3)
    d.lib.cuEventDestroy_v2(start)
    d.lib.cuEventDestroy_v2(stop)
    return float(np.median(times))
