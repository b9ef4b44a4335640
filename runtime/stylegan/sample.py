"""`gen sample`: seeds -> pictures from a bundle, torch-free, and pictures -> a grid (and one file per seed).

A checkpoint's pictures come from gen.train.sample (the PyTorch reference) and are saved here too.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from gen.runtime.bundle import load_bundle
from gen.runtime.errors import GenError
from gen.runtime.files import check_output_path
from gen.runtime.images import make_grid, save_image
from gen.runtime.latents import parse_seeds

from .camera import camera_transform, check_camera_bounds, parse_pan
from .generator import BundleGenerator


def bundle_images(bundle: Path, seeds: Sequence[int], psi: float | None = None, cutoff: int | None = None,
                  noise_mode: str = "const", engine: str = "auto", class_idx: int | None = None,
                  camera: np.ndarray | None = None) -> np.ndarray:
    """uint8 pictures [N, R, R, 3] of the seeds (of class `class_idx` for a class-conditional bundle, through
    `camera` for StyleGAN3); psi None: the bundle's default."""
    with BundleGenerator(load_bundle(bundle), engine) as gen:
        return gen.images(seeds, psi=gen.psi(psi), cutoff=cutoff, noise_mode=noise_mode, class_idx=class_idx,
                          camera=camera)


def parse_camera(pan: str | None, rotate: float | None) -> np.ndarray | None:
    """--pan "X,Y" (picture widths) and --rotate DEGREES -> StyleGAN3's camera transform; None when neither is
    given (the plain picture)."""
    if pan is None and rotate is None:
        return None
    xy, turn = parse_pan(pan), rotate or 0.0
    check_camera_bounds(xy, turn)
    return camera_transform(xy, turn)


def sample_to_files(draw: Callable[[list[int]], np.ndarray], seeds: str, out: Path, outdir: Path | None = None,
                    cols: int | None = None, overwrite: bool = False) -> Path:
    """`gen sample`: the pictures `draw(seeds)` makes (a bundle's, `bundle_images`, or a checkpoint's) as one
    grid at `out` and, with `outdir`, one seedNNNN.png each. The paths and seeds are checked before any
    picture is drawn; an existing file (the grid or a seed's picture) is replaced only with `overwrite`.
    Returns `out`."""
    out = check_output_path(out, overwrite=overwrite)
    if outdir is not None and not outdir.is_dir():
        raise GenError(f"--outdir '{outdir}' does not exist; create it first")
    seed_list = parse_seeds(seeds)
    if outdir is not None and not overwrite:
        taken = [p.name for p in (outdir / f"seed{seed:04d}.png" for seed in seed_list) if p.exists()]
        if taken:
            more = f" and {len(taken) - 1} more" if len(taken) > 1 else ""
            raise GenError(f"--outdir '{outdir}' already holds {taken[0]}{more}; pass --overwrite to replace them")
    images = draw(seed_list)
    if outdir is not None:
        for seed, img in zip(seed_list, images):
            save_image(outdir / f"seed{seed:04d}.png", img)
    return save_image(out, make_grid(images, cols=cols))
