"""Pictures from a checkpoint with the PyTorch reference generator (G_ema)."""

from __future__ import annotations

from pathlib import Path

import torch

from gen.runtime.errors import GenError
from gen.runtime.files import check_output_path
from gen.runtime.images import save_image
from gen.runtime.latents import parse_seeds

from . import checkpoint as ckpt
from .config import model_from_json
from .stylegan import NOISE_MODES, Generator
from .trainer import render_grid, resolve_device


def load_generator(path: str | Path, device: str | torch.device = "cpu", which: str = "G_ema") -> Generator:
    """The EMA generator of a checkpoint (the one to draw pictures with), in eval mode."""
    tensors, meta = ckpt.load_checkpoint(path, device)
    G = Generator(model_from_json(meta["model"])).to(device)
    ckpt.load_module(G, ckpt.subdict(tensors, which), f"the checkpoint's {which}")
    return G.eval().requires_grad_(False)


def sample_grid_to_file(checkpoint: str | Path, out: str | Path, seeds: str = "0-15", psi: float = 0.7,
                        cutoff: int | None = None, noise_mode: str = "const", cols: int | None = None,
                        device: str = "cpu") -> Path:
    out = check_output_path(out)
    if noise_mode not in NOISE_MODES:
        raise GenError(f"unknown noise mode '{noise_mode}'; choose one of {', '.join(NOISE_MODES)}")
    try:
        seed_list = parse_seeds(seeds)
    except ValueError as e:
        raise GenError(f"cannot read seeds '{seeds}': {e}") from None
    dev = resolve_device(device)
    G = load_generator(checkpoint, dev)
    grid = render_grid(G, seed_list, dev, psi=psi, noise_mode=noise_mode, cutoff=cutoff, cols=cols)
    return save_image(out, grid)
