"""Loading libtpp (a cffi-embedded library) into the test process.

On Python < 3.12, cffi's embedding start-up uses PyCapsule_Type.tp_version_tag as a
process-wide spin lock: it waits for the field to be 0. Any attribute lookup on a
capsule object gives the capsule type a method-cache version tag, after which the
first call into a freshly loaded libtpp spins forever (seen: the whole suite hung in
tpp_init after earlier tests had looked at capsules). A C program that starts the
interpreter through libtpp never meets this: the tag is 0 before Python runs. Here the
tag is cleared for the moment of the first call and put back.
"""
from __future__ import annotations

import ctypes
import datetime
import sys

# PyTypeObject's tp_version_tag on 64-bit CPython 3.8-3.11 (the header fields before it
# are 47 pointers/sizes: tp_flags, checked below, sits at 168)
_TAG, _FLAGS = 384, 168


def _capsule_tag() -> ctypes.c_uint | None:
    capsule = type(datetime.datetime_CAPI)
    if sys.version_info >= (3, 12) or ctypes.sizeof(ctypes.c_void_p) != 8:
        return None
    if ctypes.c_ulong.from_address(id(capsule) + _FLAGS).value != capsule.__flags__:
        return None                     # not the layout this knows: leave it alone
    return ctypes.c_uint.from_address(id(capsule) + _TAG)


def init(library: ctypes.CDLL) -> int:
    """library.tpp_init(), with cffi's start-up lock free."""
    tag = _capsule_tag()
    saved = tag.value if tag is not None else 0
    if tag is not None:
        tag.value = 0
    try:
        return library.tpp_init()
    finally:
        if tag is not None:
            tag.value = saved
