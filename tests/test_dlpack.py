"""DLPack arrays as tpp.cuda arguments: the capsule reader and the device views, checked
on any machine with producers built here (numpy's own capsules, and capsules written
with ctypes that claim CUDA memory); running kernels on them is in test_gpu.py."""
from __future__ import annotations

import ctypes

import ml_dtypes
import numpy as np
import pytest

import tpp
from tpp import cuda, dlpack


class HostProducer:
    """A DLPack producer that is not a numpy array (numpy's capsule underneath)."""

    def __init__(self, array):
        self.array = array

    def __dlpack__(self, stream=None):
        return self.array.__dlpack__()

    def __dlpack_device__(self):
        return self.array.__dlpack_device__()


_capsule_new = ctypes.pythonapi.PyCapsule_New
_capsule_new.restype = ctypes.py_object
_capsule_new.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p]


class FakeDevice:
    """A producer claiming device memory: a hand-written DLManagedTensor (no deleter)
    describing `address` with the given dtype code/bits, shape, strides and offset."""

    def __init__(self, address, code, bits, shape, strides=None, offset=0, device=dlpack.CUDA, lanes=1):
        self.device = device
        self.shape = (ctypes.c_int64 * len(shape))(*shape)
        self.strides = (ctypes.c_int64 * len(shape))(*strides) if strides else None
        t = dlpack._Managed()
        t.dl_tensor.data = address
        t.dl_tensor.device = dlpack._Device(device, 0)
        t.dl_tensor.ndim = len(shape)
        t.dl_tensor.dtype = dlpack._DataType(code, bits, lanes)
        t.dl_tensor.shape = self.shape
        t.dl_tensor.strides = self.strides
        t.dl_tensor.byte_offset = offset
        self.managed = t
        self.streams = []

    def __dlpack__(self, stream=None):
        self.streams.append(stream)
        return _capsule_new(ctypes.addressof(self.managed), b"dltensor", None)

    def __dlpack_device__(self):
        return self.device, 0


def test_numpy_capsules_read_back():
    x = np.arange(24, dtype=np.float32).reshape(4, 6)[1:, 2:5]
    t = dlpack.describe(x)
    assert t.data == x.ctypes.data and t.device == (dlpack.CPU, 0)
    assert t.dtype == np.float32 and t.shape == (3, 3) and t.strides == (6, 1)


def test_host_arrays_become_numpy_views():
    x = np.zeros((3, 5), np.float32)
    view = cuda._device_view(HostProducer(x))
    assert isinstance(view, np.ndarray) and np.shares_memory(view, x)


def test_device_arrays_are_read_without_copies():
    fake = FakeDevice(0x7000_0000, code=4, bits=16, shape=(3, 8), strides=(10, 1), offset=64)
    view = cuda._device_view(fake)
    assert view.data == 0x7000_0000 + 64 and view.shape == (3, 8) and view.strides == (10, 1)
    assert view.dtype == np.dtype(ml_dtypes.bfloat16)
    assert fake.streams == [1]                    # asked for the legacy default stream
    compact = cuda._device_view(FakeDevice(0x1000, code=2, bits=32, shape=(5,)))
    assert compact.strides is None and compact.dtype == np.float32


def test_cuda_array_interface_comes_first():
    class Both(FakeDevice):
        __cuda_array_interface__ = {"shape": (2, 2), "typestr": "<f4", "data": (0x2000, False),
                                    "version": 3, "strides": (16, 4)}
    view = cuda._device_view(Both(0x1000, 2, 32, (2, 2)))
    assert view.data == 0x2000 and view.strides == (4, 1)


def test_unusable_tensors_are_refused():
    with pytest.raises(TypeError, match="no numpy equivalent"):
        cuda._device_view(FakeDevice(0x1000, code=2, bits=32, shape=(4,), lanes=4))
    with pytest.raises(tpp.TargetError, match="neither CUDA nor host"):
        cuda._device_view(FakeDevice(0x1000, code=2, bits=32, shape=(4,), device=10))   # ROCm
    assert cuda._device_view([1.0, 2.0]) is None
