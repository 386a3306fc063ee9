"""glibc's malloc told to give large blocks back to the system as soon as they are freed, and
to keep the smaller ones' memory for the next invoice.

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
why only blocks of ``MMAP_THRESHOLD`` and more go that way.

Turning the adjustment off also stops glibc raising ``M_TRIM_THRESHOLD`` with it (to twice
the mmap threshold): it stays at 128 KiB, and whenever more than that is free at the top of
the heap, ``free`` gives it back. A 100 KB invoice's buffers (its request, its base64 as a
str, the insert's parameters, its MIME: 130-550 KB each) are freed between jobs, so the heap
shrank after nearly every one and the next job faulted the same pages in again. With
``TRIM_THRESHOLD`` the daemon's page faults over a run of 2,000 such jobs halved on
PostgreSQL and fell by two thirds on SQLite (docs/performance.md "Tenth pass"). The heap
keeps up to ``TRIM_THRESHOLD`` free for the next job, and so does each of glibc's arenas (the
main heap, one per thread that allocates, up to 8 per core unless ``MALLOC_ARENA_MAX`` says
fewer); blocks of ``MMAP_THRESHOLD`` and more never come from them.

What the operator set wins over each setting: its ``MALLOC_*_`` environment variable, or its
tunable in ``GLIBC_TUNABLES`` (glibc reads both at start; this then leaves that setting
alone). On another C library (musl, macOS) nothing is done.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import platform

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
"""``mallopt``'s parameter numbers (glibc's malloc.h)."""
MMAP_THRESHOLD = 1024 * 1024
"""Blocks of 1 MiB and more are mapped on their own and returned when freed."""
TRIM_THRESHOLD = 8 * 1024 * 1024
"""Up to 8 MiB free at the top of the heap is kept for the next allocations."""
SETTINGS = (
    ("MALLOC_MMAP_THRESHOLD_", "glibc.malloc.mmap_threshold", M_MMAP_THRESHOLD, MMAP_THRESHOLD),
    ("MALLOC_TRIM_THRESHOLD_", "glibc.malloc.trim_threshold", M_TRIM_THRESHOLD, TRIM_THRESHOLD),
)
"""Each setting: the environment variable and the tunable that win over it, ``mallopt``'s
parameter, the value."""


def _tunables() -> set[str]:
    """The tunables named in ``GLIBC_TUNABLES`` (``name=value`` pairs separated by colons)."""
    given = os.environ.get("GLIBC_TUNABLES", "")
    return {pair.partition("=")[0].strip() for pair in given.split(":") if "=" in pair}


def tune_malloc() -> list[str]:
    """Set glibc's thresholds (``SETTINGS``) that the operator did not; the names of the
    environment variables of those set by this call."""
    if platform.libc_ver()[0] != "glibc":
        return []
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):
        return []
    done: list[str] = []
    tunables = _tunables()
    for variable, tunable, parameter, value in SETTINGS:
        if variable in os.environ or tunable in tunables:
            continue
        if mallopt(ctypes.c_int(parameter), ctypes.c_int(value)):
            done.append(variable)
        else:
            log.warning("mallopt(%d, %d) was refused", parameter, value)
    return done


__all__ = ["MMAP_THRESHOLD", "SETTINGS", "TRIM_THRESHOLD", "tune_malloc"]
