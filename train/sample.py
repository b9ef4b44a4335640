"""Pictures from a checkpoint with the PyTorch reference generator (G_ema)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from gen.runtime.bundle import is_bundle, load_bundle
from gen.runtime.images import nchw_to_images
from gen.runtime.latents import DEFAULT_PSI, check_noise_mode, class_vector, seed_noise, seeds_to_z
from gen.runtime.stylegan.generator import BundleGenerator, check_camera

from . import checkpoint as ckpt
from .config import ModelConfig, Stylegan3Config, model_from_json
from .devices import resolve_device
from .stylegan import Generator
from .stylegan3 import Generator3


def new_generator(cfg: ModelConfig | Stylegan3Config) -> Generator | Generator3:
    """The generator a model config describes: StyleGAN3's, or StyleGAN2's (or 1's)."""
    return Generator3(cfg) if isinstance(cfg, Stylegan3Config) else Generator(cfg)


def load_generator(path: str | Path, device: str | torch.device = "cpu", which: str = "G_ema"
                   ) -> Generator | Generator3:
    """The EMA generator of a checkpoint (the one to draw pictures with), in eval mode."""
    tensors, meta = ckpt.load_checkpoint(path, device)
    G = new_generator(model_from_json(meta["model"])).to(device)
    ckpt.load_module(G, ckpt.subdict(tensors, which), f"the checkpoint's {which}")
    return G.eval().requires_grad_(False)


@torch.no_grad()
def generate(G: Generator | Generator3, seeds: list[int], psi: float = 1.0, cutoff: int | None = None,
             noise_mode: str = "const", batch: int = 16, class_idx: int | None = None,
             camera: np.ndarray | None = None) -> np.ndarray:
    """Seeds -> uint8 pictures [N, R, R, 3]. z and random-mode noise are drawn per seed with NumPy, as the
    runtime draws them, so a checkpoint and its bundle give the same pictures in every noise mode. A
    class-conditional model draws them all of class `class_idx`. StyleGAN3 has no noise; it draws through
    `camera` (latents.camera_transform; None: the identity)."""
    check_noise_mode(noise_mode)
    sg3 = isinstance(G, Generator3)
    check_camera(camera is not None, G.cfg.variant)
    device = next(G.parameters()).device
    label = class_vector(class_idx, G.cfg.c_dim)
    out = []
    for i in range(0, len(seeds), batch):
        chunk = list(seeds[i : i + batch])
        c = None if label is None else torch.from_numpy(label).to(device).expand(len(chunk), -1)
        ws = G.mapping(torch.from_numpy(seeds_to_z(chunk, G.cfg.z_dim)).to(device), psi=psi, cutoff=cutoff, c=c)
        if sg3:
            transform = None if camera is None else torch.from_numpy(camera).to(device)
            out.append(G.synthesis(ws, transform).float().cpu().numpy())
            continue
        noises = random_noise(G, chunk) if noise_mode == "random" else None
        out.append(G.synthesis(ws, noise_mode, noises).float().cpu().numpy())
    return nchw_to_images(np.concatenate(out))


def random_noise(G: Generator, seeds: list[int]) -> list[torch.Tensor]:
    """The seeds' random-mode noise (latents.seed_noise) as tensors for G's synthesis."""
    device = next(G.parameters()).device
    shapes = [shape[1:] for shape in G.synthesis.noise_shapes()]  # without the batch axis
    return [torch.from_numpy(n).to(device) for n in seed_noise(seeds, G.cfg.z_dim, shapes)]


def checkpoint_images(checkpoint: str | Path, seeds: list[int], psi: float | None = None, cutoff: int | None = None,
                      noise_mode: str = "const", device: str = "cpu", class_idx: int | None = None,
                      camera: np.ndarray | None = None) -> np.ndarray:
    """uint8 pictures [N, R, R, 3] of the seeds from a run or checkpoint; psi None: DEFAULT_PSI."""
    G = load_generator(checkpoint, resolve_device(device))
    return generate(G, seeds, DEFAULT_PSI if psi is None else psi, cutoff, noise_mode, class_idx=class_idx,
                    camera=camera)


class ImageSource:
    """Seeds -> uint8 pictures from a bundle (torch-free runtime) or a run/checkpoint (PyTorch), with the
    generator kept open between calls."""

    def __init__(self, source: Path, device: torch.device) -> None:
        self.source = Path(source)
        if is_bundle(self.source):
            self.bundle_gen = BundleGenerator(load_bundle(self.source), "auto" if device.type == "cuda" else "cpu")
            self.resolution = self.bundle_gen.meta.resolution
        else:
            self.bundle_gen, self.G = None, load_generator(self.source, device)
            self.resolution = self.G.cfg.resolution

    def images(self, seeds: list[int], psi: float, noise_mode: str) -> np.ndarray:
        if self.bundle_gen is not None:
            return self.bundle_gen.images(seeds, psi=psi, noise_mode=noise_mode)
        return generate(self.G, seeds, psi, noise_mode=noise_mode)

    def close(self) -> None:
        if self.bundle_gen is not None:
            self.bundle_gen.close()
