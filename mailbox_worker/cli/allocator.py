"""glibc's malloc told to give large blocks back to the system as soon as they are freed.

Each large invoice in flight allocates a few buffers of its size (the payload's base64, the
built MIME, its base64 for Graph: 10-20 MB each for a 10 MB PDF). glibc serves blocks above
``M_MMAP_THRESHOLD`` (128 KiB at start) with ``mmap`` and unmaps them when freed, but after
freeing such a block it raises the threshold to that block's size (up to 32 MiB on 64-bit):
from then on every buffer of a large invoice comes from the heap or a thread's arena, where
the memory freed between them is not returned, and the daemon's resident memory stays at its
highest and creeps up as the holes fragment. Setting the threshold explicitly turns that
adjustment off. Measured with ``bench/memory.py`` (docs/performance.md#memory): with 8 jobs of
10 MB in flight the daemon's RSS was 787 MiB without and 531 MiB with a fixed 128 KiB
threshold. The cost is an ``mmap`` and page faults per large buffer (system CPU), which is
why only blocks of ``MMAP_THRESHOLD`` and more go that way: a 100 KB invoice's buffers stay
on the heap as before.

The variable ``MALLOC_MMAP_THRESHOLD_`` in the environment wins (glibc reads it at start and
this leaves it alone); on another C library (musl, macOS) nothing is done.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import platform

log = logging.getLogger(__name__)

M_MMAP_THRESHOLD = -3
"""``mallopt``'s parameter number for the threshold (glibc's malloc.h)."""
MMAP_THRESHOLD = 1024 * 1024
"""Blocks of 1 MiB and more are mapped on their own and returned when freed."""
ENVIRONMENT_VARIABLE = "MALLOC_MMAP_THRESHOLD_"


def fix_mmap_threshold(threshold: int = MMAP_THRESHOLD) -> bool:
    """Fix glibc's mmap threshold at ``threshold`` bytes; whether it was set by this call."""
    if ENVIRONMENT_VARIABLE in os.environ or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        done = int(libc.mallopt(ctypes.c_int(M_MMAP_THRESHOLD), ctypes.c_int(threshold)))
    except (OSError, AttributeError):
        return False
    if not done:
        log.warning("mallopt(M_MMAP_THRESHOLD, %d) was refused", threshold)
    return bool(done)


__all__ = ["MMAP_THRESHOLD", "fix_mmap_threshold"]
