"""The StyleGAN style-mixing grid, torch-free.

Each cell takes the row seed's styles and swaps in a range of the column seed's: coarse styles carry
pose and shape, middle ones features, fine ones colour and texture. The column seeds' pictures run
along the top and the row seeds' down the left, as in the StyleGAN paper's figure.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from gen.runtime.errors import GenError
from gen.runtime.latents import STILL_NOISE_MODES, check_noise_mode, seeds_to_z

from .walk import check_size, upscale


def style_ranges(num_ws: int) -> dict[str, range]:
    """Coarse / middle / fine ws indices.

    From 64 px up (10+ styles) these are the paper's: coarse 4-8 px (ws 0-3), middle 16-32 px (4-7),
    fine 64 px and up (8+). Smaller models have no such layers, so their styles are split in thirds.
    """
    lo, hi = (4, 8) if num_ws >= 10 else (max(1, num_ws // 3), max(2, 2 * num_ws // 3))
    return {"coarse": range(0, lo), "middle": range(lo, hi), "fine": range(hi, num_ws)}


def parse_styles(text: str, num_ws: int) -> range:
    """'coarse' | 'middle' | 'fine' | 'A-B' (ws indices, inclusive) | 'A' -> a range of ws indices."""
    text = text.strip().lower()
    named = style_ranges(num_ws)
    if text in named:
        chosen = named[text]
    else:
        try:
            lo, _, hi = text.partition("-")
            chosen = range(int(lo), int(hi or lo) + 1)
        except ValueError:
            raise GenError(f"cannot read styles '{text}'; use coarse, middle, fine or a range like 0-3") from None
    if not chosen or chosen.start < 0 or chosen.stop > num_ws:
        raise GenError(f"styles '{text}' is not a non-empty range within 0-{num_ws - 1} (this bundle has {num_ws})")
    return chosen


def mix_styles(row_ws: np.ndarray, col_ws: np.ndarray, layers: range) -> np.ndarray:
    """[R, num_ws, w_dim] x [C, num_ws, w_dim] -> [R, C, num_ws, w_dim]: row styles, col's in `layers`."""
    mixed = np.repeat(row_ws[:, None], col_ws.shape[0], axis=1)
    mixed[:, :, layers.start : layers.stop] = col_ws[None, :, layers.start : layers.stop]
    return mixed


def mix_grid(gen, rows: Sequence[int], cols: Sequence[int], layers: range, psi: float | None = None,
             noise_mode: str = "const", batch: int = 8, class_idx: int | None = None) -> np.ndarray:
    """The grid's pictures, uint8 [R + 1, C + 1, H, W, 3]; the top-left corner is white. All of class `class_idx`
    for a class-conditional bundle."""
    psi = gen.psi(psi)
    row_ws = gen.styles(seeds_to_z(rows, gen.meta.z_dim), psi, class_idx=class_idx)
    col_ws = gen.styles(seeds_to_z(cols, gen.meta.z_dim), psi, class_idx=class_idx)
    mixed = mix_styles(row_ws, col_ws, layers).reshape(-1, *row_ws.shape[1:])
    ws = np.concatenate([col_ws, row_ws, mixed])
    pics = np.concatenate([gen.pictures(ws[i : i + batch], noise_mode)
                           for i in range(0, len(ws), batch)])
    n_r, n_c = len(rows), len(cols)
    grid = np.full((n_r + 1, n_c + 1, *pics.shape[1:]), 255, np.uint8)
    grid[0, 1:] = pics[:n_c]
    grid[1:, 0] = pics[n_c : n_c + n_r]
    grid[1:, 1:] = pics[n_c + n_r :].reshape(n_r, n_c, *pics.shape[1:])
    return grid


def mix_to_file(bundle: Path, out: Path, rows: str, cols: str, styles: str = "fine", psi: float | None = None,
                noise_mode: str = "const", size: int | None = None, engine: str = "auto", overwrite: bool = False,
                class_idx: int | None = None) -> Path:
    """Write the style-mixing grid as one picture; `size` upscales each cell (Lanczos). An existing `out` is
    replaced only with `overwrite`."""
    from gen.runtime.bundle import load_bundle
    from gen.runtime.files import check_output_path
    from gen.runtime.images import make_grid, save_image
    from gen.runtime.latents import parse_seeds

    from .generator import BundleGenerator

    out = check_output_path(out, overwrite=overwrite)
    # random noise would differ between a seed's own picture and its row
    check_noise_mode(noise_mode, STILL_NOISE_MODES, "mix")
    check_size(size)
    seeds = {name: parse_seeds(text, refusal=f"cannot read --{name} '{text}'")
             for name, text in (("rows", rows), ("cols", cols))}
    with BundleGenerator(load_bundle(bundle), engine) as gen:
        layers = parse_styles(styles, gen.meta.num_ws)
        grid = mix_grid(gen, seeds["rows"], seeds["cols"], layers, psi, noise_mode, class_idx=class_idx)
    cells = upscale(grid.reshape(-1, *grid.shape[2:]), size)
    return save_image(out, make_grid(cells, cols=grid.shape[1]))
