"""Reading DLPack tensors (`__dlpack__` / `__dlpack_device__`, the array API's exchange
protocol: PyTorch, CuPy, JAX, numpy) without copying, for tpp.cuda.

`describe(obj)` asks the producer for its capsule, reads the DLManagedTensor in it
(data pointer + byte offset, device, dtype, shape, strides in elements) and returns
them with the capsule, which the caller keeps alive while the memory is in use. The
capsule is left unconsumed (its name stays "dltensor"), so when it is collected the
producer's destructor calls the tensor's deleter, as the protocol lays down for a
capsule nobody renamed.
"""
from __future__ import annotations

import ctypes
from dataclasses import dataclass

import numpy as np

from .dtypes import NUMPY
from .jit.types import DType

# DLDeviceType
CPU, CUDA, CUDA_HOST, CUDA_MANAGED = 1, 2, 3, 13
# DLDataTypeCode
_INT, _UINT, _FLOAT, _BFLOAT = 0, 1, 2, 4
_NUMPY = {(_FLOAT, 32): np.dtype(np.float32), (_FLOAT, 64): np.dtype(np.float64),
          (_FLOAT, 16): np.dtype(np.float16), (_INT, 8): np.dtype(np.int8),
          (_INT, 32): np.dtype(np.int32), (_INT, 64): np.dtype(np.int64),
          (_UINT, 8): np.dtype(np.uint8), (_UINT, 1): np.dtype(np.bool_),
          (_BFLOAT, 16): NUMPY[DType.BF16]}


class _Device(ctypes.Structure):
    _fields_ = [("device_type", ctypes.c_int32), ("device_id", ctypes.c_int32)]


class _DataType(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint8), ("bits", ctypes.c_uint8), ("lanes", ctypes.c_uint16)]


class _Tensor(ctypes.Structure):
    _fields_ = [("data", ctypes.c_void_p), ("device", _Device), ("ndim", ctypes.c_int32),
                ("dtype", _DataType), ("shape", ctypes.POINTER(ctypes.c_int64)),
                ("strides", ctypes.POINTER(ctypes.c_int64)), ("byte_offset", ctypes.c_uint64)]


class _Managed(ctypes.Structure):     # DLManagedTensor: the tensor comes first
    _fields_ = [("dl_tensor", _Tensor), ("manager_ctx", ctypes.c_void_p), ("deleter", ctypes.c_void_p)]


_get_pointer = ctypes.pythonapi.PyCapsule_GetPointer
_get_pointer.restype = ctypes.c_void_p
_get_pointer.argtypes = [ctypes.py_object, ctypes.c_char_p]


@dataclass
class Tensor:
    data: int                          # address of element [0, 0, ...] (byte_offset applied)
    device: tuple[int, int]            # (DLDeviceType, device id)
    dtype: np.dtype
    shape: tuple[int, ...]
    strides: tuple[int, ...] | None    # elements; None: compact row-major
    capsule: object                    # keep while the memory is used


def has_dlpack(obj) -> bool:
    return hasattr(obj, "__dlpack__") and hasattr(obj, "__dlpack_device__")


def device_of(obj) -> tuple[int, int]:
    kind, index = obj.__dlpack_device__()
    return int(kind), int(index)


def describe(obj, stream: int | None = None) -> Tensor:
    """The tensor behind obj.__dlpack__(); `stream` as the protocol defines it (for CUDA,
    1 is the legacy default stream, which tpp.cuda launches on)."""
    try:
        capsule = obj.__dlpack__() if stream is None else obj.__dlpack__(stream=stream)
    except TypeError:                  # producers from before the stream argument
        capsule = obj.__dlpack__()
    try:
        address = _get_pointer(capsule, b"dltensor")
    except ValueError as e:
        raise TypeError(f"__dlpack__ of {type(obj).__name__} did not return an unused DLPack capsule") from e
    t = _Managed.from_address(address).dl_tensor
    key = (t.dtype.code, t.dtype.bits)
    if t.dtype.lanes != 1 or key not in _NUMPY:
        raise TypeError(f"DLPack dtype code {t.dtype.code}, {t.dtype.bits} bits x {t.dtype.lanes} lanes "
                        "has no numpy equivalent here")
    shape = tuple(t.shape[i] for i in range(t.ndim))
    strides = tuple(t.strides[i] for i in range(t.ndim)) if t.strides else None
    return Tensor((t.data or 0) + t.byte_offset, (t.device.device_type, t.device.device_id),
                  _NUMPY[key], shape, strides, capsule)
