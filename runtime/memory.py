"""How this process's C library hands memory back: the one process-wide setting gen makes."""

from __future__ import annotations

import ctypes
import sys

# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3


def keep_freed_memory() -> bool:
    """Have glibc keep freed memory for the next allocation instead of handing it back to the OS.

    A training step, a dream step or a batch of pictures allocates and frees the same large arrays (torch
    tensors, onnxruntime's outputs, numpy images) again and again. By default glibc maps each large one afresh
    (mmap) and unmaps it when freed, so every step page-faults its arrays in again: on the 2-core VM we measure
    on, 3-9 s of system time in each 16 training steps of the small preset (0.1 s with these settings, +9%
    img/s: benchmarks/train_speed.py --malloc-ab), and PyTorch's 1024² dream gradient step ran at half speed.
    Arrays up to 32 MiB (the ceiling of glibc's own sliding threshold) now come from the heap, which is
    trimmed only past 1 GiB free: resident memory stays near the process's peak, which it reaches anyway.
    Only glibc has mallopt; elsewhere nothing changes. A process-wide setting, so the CLI makes it once, at
    the start of every command. Returns whether glibc took every setting."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and other C libraries
        return False
    settings = ((_M_MMAP_THRESHOLD, 32 << 20), (_M_TRIM_THRESHOLD, 1 << 30), (_M_TOP_PAD, 64 << 20))
    return all(mallopt(param, value) == 1 for param, value in settings)
