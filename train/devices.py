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
