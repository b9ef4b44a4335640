"""Pictures from a checkpoint with the PyTorch reference generator (G_ema)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from gen.runtime.generator import check_noise_mode
from gen.runtime.images import nchw_to_images
from gen.runtime.latents import seed_noise, seeds_to_z

from . import checkpoint as ckpt
from .config import model_from_json
from .stylegan import Generator
from .trainer import resolve_device


def load_generator(path: str | Path, device: str | torch.device = "cpu", which: str = "G_ema") -> Generator:
    """The EMA generator of a checkpoint (the one to draw pictures with), in eval mode."""
    tensors, meta = ckpt.load_checkpoint(path, device)
    G = Generator(model_from_json(meta["model"])).to(device)
    ckpt.load_module(G, ckpt.subdict(tensors, which), f"the checkpoint's {which}")
    return G.eval().requires_grad_(False)


@torch.no_grad()
def generate(G: Generator, seeds: list[int], psi: float = 1.0, cutoff: int | None = None,
             noise_mode: str = "const", batch: int = 16) -> np.ndarray:
    """Seeds -> uint8 pictures [N, R, R, 3]. z and random-mode noise are drawn per seed with NumPy, as the
    runtime draws them, so a checkpoint and its bundle give the same pictures in every noise mode."""
    check_noise_mode(noise_mode)
    device = next(G.parameters()).device
    out = []
    for i in range(0, len(seeds), batch):
        chunk = list(seeds[i : i + batch])
        ws = G.mapping(torch.from_numpy(seeds_to_z(chunk, G.cfg.z_dim)).to(device), psi=psi, cutoff=cutoff)
        noises = random_noise(G, chunk) if noise_mode == "random" else None
        out.append(G.synthesis(ws, noise_mode, noises).float().cpu().numpy())
    return nchw_to_images(np.concatenate(out))


def random_noise(G: Generator, seeds: list[int]) -> list[torch.Tensor]:
    """The seeds' random-mode noise (latents.seed_noise) as tensors for G's synthesis."""
    device = next(G.parameters()).device
    shapes = [shape[1:] for shape in G.synthesis.noise_shapes()]  # without the batch axis
    return [torch.from_numpy(n).to(device) for n in seed_noise(seeds, G.cfg.z_dim, shapes)]


def sample_images(checkpoint: str | Path, seeds: list[int], psi: float = 0.7, cutoff: int | None = None,
                  noise_mode: str = "const", device: str = "cpu") -> np.ndarray:
    return generate(load_generator(checkpoint, resolve_device(device)), seeds, psi, cutoff, noise_mode)
