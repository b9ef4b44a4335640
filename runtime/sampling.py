"""Seeds -> picture files, from a bundle (torch-free) or a checkpoint (the PyTorch reference)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .bundle import is_bundle, load_bundle
from .errors import GenError, require_extra
from .files import check_output_path
from .images import make_grid, save_image
from .latents import parse_seeds


def sample_images(source: Path, seeds: list[int], psi: float | None, cutoff: int | None, noise_mode: str,
                  engine: str) -> np.ndarray:
    """uint8 pictures [N, R, R, 3] for the seeds."""
    if is_bundle(source):
        from .generator import BundleGenerator

        gen = BundleGenerator(load_bundle(source), engine)
        psi = gen.meta.default_psi if psi is None else psi
        return gen.images(seeds, psi=psi, cutoff=cutoff, noise_mode=noise_mode)
    require_extra("torch")
    from gen.train.sample import sample_images as torch_sample

    device = "cpu" if engine in ("auto", "cpu") else engine
    return torch_sample(source, seeds, psi=0.7 if psi is None else psi, cutoff=cutoff, noise_mode=noise_mode,
                        device=device)


def sample_to_files(source: Path, out: Path, outdir: Path | None = None, seeds: str = "0-15",
                    psi: float | None = None, cutoff: int | None = None, noise_mode: str = "const",
                    cols: int | None = None, engine: str = "auto") -> Path:
    out = check_output_path(out)
    if outdir is not None and not outdir.is_dir():
        raise GenError(f"--outdir '{outdir}' does not exist; create it first")
    try:
        seed_list = parse_seeds(seeds)
    except ValueError as e:
        raise GenError(f"cannot read seeds '{seeds}': {e}") from None
    images = sample_images(Path(source), seed_list, psi, cutoff, noise_mode, engine)
    if outdir is not None:
        for seed, img in zip(seed_list, images):
            save_image(outdir / f"seed{seed:04d}.png", img)
    return save_image(out, make_grid(images, cols=cols))
