"""Which torch device a command runs on: the one reading of --device for training, sampling, metrics,
the projector and dreaming."""

from __future__ import annotations

import torch

from gen.runtime.errors import GenError


def resolve_device(arg: str = "auto", local_rank: int = 0) -> torch.device:
    """'auto' -> CUDA if torch sees a GPU, else the CPU; 'cuda' -> this process's GPU under torchrun
    (`local_rank`); 'cuda:N' -> that GPU; 'cpu'. CUDA without a GPU is one clear line."""
    if arg == "auto":
        arg = "cuda" if torch.cuda.is_available() else "cpu"
    if arg == "cpu":
        return torch.device("cpu")
    if arg == "cuda" or (arg.startswith("cuda:") and arg[5:].isdigit()):
        if not torch.cuda.is_available():
            raise GenError(f"--device {arg} was asked for, but this torch sees no CUDA GPU; use --device cpu")
        return torch.device(arg if ":" in arg else f"cuda:{local_rank}")
    raise GenError(f"unknown device '{arg}'; use auto, cpu, cuda or cuda:N")


# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3


def keep_freed_memory() -> bool:
    """Have glibc keep freed memory for the next allocation instead of handing it back to the OS.

    A CPU training step allocates and frees the same activation tensors every step. By default glibc maps each
    large one afresh (mmap) and unmaps it when freed, so every step page-faults all its activations in again:
    on the 2-core VM we measure on that was 3-9 s of system time in each 16 steps of the small preset, 0.1 s
    with these settings, and 9% more images a second (benchmarks/train_speed.py --malloc-ab). Tensors up to
    32 MiB (the ceiling of glibc's own sliding threshold) now come from the heap, which is trimmed only past
    1 GiB free: resident memory stays near the step's peak, which a training reaches anyway. Only glibc has
    mallopt; elsewhere nothing is changed. Returns whether glibc took every setting."""
    import ctypes
    import sys

    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and other C libraries
        return False
    settings = ((_M_MMAP_THRESHOLD, 32 << 20), (_M_TRIM_THRESHOLD, 1 << 30), (_M_TOP_PAD, 64 << 20))
    return all(mallopt(param, value) == 1 for param, value in settings)
