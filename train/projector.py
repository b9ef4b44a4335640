"""Projection: find the w (or W+) whose picture matches a photo, by gradient descent through G.

The recipe follows the idea of the StyleGAN2 projector, written here from scratch: start at the
average w, optimise with Adam under a learning rate that ramps up briefly and eases down at the end,
and add noise to w early on (decaying to nothing) so the search looks around before it settles.
The loss is a perceptual distance (EfficientNet-Lite0 features at a few layers, channel vectors
unit-normalised per position, as LPIPS does) plus pixel MSE. By default the synthesis keeps its fixed
('const') noise, so the saved w alone reproduces the picture anywhere (`gen walk --space w` included).
With `optimize_noise`, the per-layer noise maps are optimised too, regularised towards white noise.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from gen.runtime.bundle import is_bundle
from gen.runtime.errors import GenError
from gen.runtime.files import atomic_path, check_output_path
from gen.runtime.images import WHITE, load_image, make_grid, nchw_to_images, resize_center_crop, save_image
from gen.runtime.progress import progress_bar, rate_text
from gen.runtime.verify import psnr
from gen.runtime.video import check_video_path, write_video

from .config import ProjectSettings
from .devices import resolve_device
from .sample import load_generator
from .stylegan import Generator
from .stylegan3 import Generator3

PERCEPTUAL_SIZE = 224


@dataclass
class Projection:
    ws: np.ndarray  # [num_ws, w_dim] with W+, else [1, w_dim]
    image: np.ndarray  # uint8 [R, R, 3]
    noises: list[np.ndarray] | None  # the optimised noise maps, when they were optimised
    psnr: float  # against the target, dB
    loss: float


def learning_rate(settings: ProjectSettings, t: float) -> float:
    """Short linear ramp-up, cosine ease-down over the last `lr_rampdown` of the run (t in [0, 1])."""
    down = min(1.0, (1.0 - t) / settings.lr_rampdown)
    return settings.lr * (0.5 - 0.5 * math.cos(math.pi * down)) * min(1.0, t / settings.lr_rampup)


def noise_regularisation(noises: list[torch.Tensor]) -> torch.Tensor:
    """Squared autocorrelation of each noise map with its 1-pixel shifts, at every scale down to 8 px.

    White noise has none; a map that starts to carry picture content (smooth regions, edges) does,
    so this keeps the optimised noise from taking over what w should explain.
    """
    total = noises[0].new_zeros([])
    for n in noises:
        while True:
            total = total + (n * n.roll(1, dims=3)).mean().square() + (n * n.roll(1, dims=2)).mean().square()
            if n.shape[2] <= 8:
                break
            n = F.avg_pool2d(n, 2)
    return total


def as_written(img: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The picture as 8-bit output will show it, where that matters: beyond a saturated target pixel
    (0 or 255) in its direction, the pixel counts as equal to it (clipping makes it so), and only there,
    so the gradient still pulls every other out-of-range pixel back."""
    beyond = ((target >= 1) & (img > target)) | ((target <= -1) & (img < target))
    return torch.where(beyond, target, img)


class Perceptual:
    """Frozen EfficientNet-Lite0 features of pictures in [-1, 1], upsampled to the network's size."""

    def __init__(self, layers: tuple[str, ...], device: torch.device) -> None:
        from .backbones import build_backbone

        with torch.random.fork_rng(devices=[]):  # the random init (replaced by the weights) uses a copy of the RNG
            self.net, self.layers = build_backbone("efficientnet_lite0").to(device), layers
        self.net.check_layers(layers)

    def features(self, img: torch.Tensor) -> list[torch.Tensor]:
        x = F.interpolate((img + 1) / 2, size=(PERCEPTUAL_SIZE, PERCEPTUAL_SIZE), mode="bilinear",
                          align_corners=False, antialias=img.shape[-1] > PERCEPTUAL_SIZE)
        out = self.net(x, self.layers)
        # Unit channel vectors: each layer counts the same whatever its scale.
        return [F.normalize(out[name], dim=1) for name in self.layers]

    def distance(self, feats: list[torch.Tensor], target: list[torch.Tensor]) -> torch.Tensor:
        return sum((a - b).square().sum(dim=1).mean() for a, b in zip(feats, target))


@torch.no_grad()
def w_spread(G: Generator, samples: int = 10000, seed: int = 0) -> float:
    """RMS distance of mapped w from w_avg: the scale for the noise added to w."""
    gen = torch.Generator().manual_seed(seed)
    device = G.mapping.w_avg.device
    w = G.mapping.w(torch.randn(samples, G.cfg.z_dim, generator=gen).to(device))
    return float((w - G.mapping.w_avg).square().sum(dim=1).mean().sqrt())


def project(G: Generator, target: np.ndarray, settings: ProjectSettings = ProjectSettings(),
            on_step: Callable[[int, float, torch.Tensor], None] | None = None, seed: int = 0) -> Projection:
    """Project uint8 `target` [R, R, 3] (R = G's resolution); `on_step(step, loss, picture)` after each step."""
    res = G.cfg.resolution
    if target.shape != (res, res, 3):
        raise GenError(f"the target must be {res}x{res} RGB for this generator, got {list(target.shape)}")
    device = G.mapping.w_avg.device
    gen = torch.Generator(device).manual_seed(seed)  # its own: the caller's RNG is left as it was
    perceptual = Perceptual(settings.perceptual_layers, device)
    target_t = torch.tensor(target).to(device).permute(2, 0, 1)[None].float() / 127.5 - 1
    with torch.no_grad():
        target_feats = perceptual.features(target_t)
    spread = w_spread(G)
    w = G.mapping.w_avg.detach().clone()[None, None].repeat(1, G.num_ws if settings.w_plus else 1, 1)
    w.requires_grad_(True)
    noises = None
    if settings.optimize_noise:
        noises = [layer.noise.noise_const.detach().clone().requires_grad_(True) for layer in G.synthesis.layers]
    opt = torch.optim.Adam([w] + (noises or []), lr=settings.lr, betas=(0.9, 0.999))
    for step in range(settings.steps):
        t = step / settings.steps
        for group in opt.param_groups:
            group["lr"] = learning_rate(settings, t)
        noise_scale = spread * settings.w_noise * max(0.0, 1.0 - t / settings.w_noise_ramp) ** 2
        ws = (w + torch.randn(w.shape, generator=gen, device=device) * noise_scale).expand(1, G.num_ws, -1)
        img = as_written(G.synthesis(ws, noise_mode="const", noises=noises), target_t)
        loss = perceptual.distance(perceptual.features(img), target_feats)
        loss = loss + settings.pixel_weight * (img - target_t).square().mean()
        if noises is not None:
            loss = loss + settings.noise_reg * noise_regularisation(noises)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if noises is not None:  # keep each map unit white noise in scale: only its pattern is free
            with torch.no_grad():
                for n in noises:
                    n.sub_(n.mean()).div_(n.std(correction=0) + 1e-8)
        if on_step is not None:
            on_step(step, loss.item(), img.detach())
    with torch.no_grad():
        image = nchw_to_images(G.synthesis(w.expand(1, G.num_ws, -1), noise_mode="const",
                                           noises=noises).float().cpu().numpy())[0]
    fitted = None if noises is None else [n.detach().cpu().numpy() for n in noises]
    return Projection(ws=w[0].detach().cpu().numpy(), image=image, noises=fitted, psnr=psnr(image, target, peak=255),
                      loss=float(loss.detach()))


def side_by_side(target: np.ndarray, image: np.ndarray, min_size: int = 256) -> np.ndarray:
    """target | projection, scaled up by a whole factor (nearest) so small pictures are visible."""
    scale = max(1, -(-min_size // target.shape[0]))
    return make_grid(np.stack([a.repeat(scale, axis=0).repeat(scale, axis=1) for a in (target, image)]), cols=2)


# ---------------------------------------------------------------------------------------------
# `gen project`: a photo in, a folder of results out


def project_to_folder(photo: Path, checkpoint: Path, out: Path, settings: ProjectSettings = ProjectSettings(),
                      video: Path | None = None, background=WHITE, device: str = "auto", seed: int = 0,
                      overwrite: bool = False) -> Projection:
    """Load, project with a progress bar, write projected.png, w.npy, compare.png (and the video)."""
    photo_rgb = load_image(photo, background)  # a missing or broken photo fails before anything
    if is_bundle(checkpoint):
        raise GenError(f"'{checkpoint}' is a bundle; projecting needs gradients, so give the training run or "
                       "checkpoint it was exported from")
    if out.exists() and not out.is_dir():
        raise GenError(f"--out '{out}' is not a folder; give a folder")
    if out.is_dir():  # every file written below, as any output: replaced only with --overwrite, and only files
        for name in ("target.png", "projected.png", "compare.png", "w.npy",
                     *(["noise.npz"] if settings.optimize_noise else [])):
            check_output_path(out / name, overwrite=overwrite)
    if video is not None:
        check_video_path(check_output_path(video, overwrite=overwrite))
    G = load_generator(checkpoint, resolve_device(device))
    if isinstance(G, Generator3):
        raise GenError(f"'{checkpoint}' holds a StyleGAN3 model; gen project finds w for StyleGAN2 models only")
    target = resize_center_crop(photo_rgb, G.cfg.resolution)
    out.mkdir(parents=True, exist_ok=True)
    frames: list[np.ndarray] = []
    every = max(1, settings.steps // 120)  # at most ~120 video frames
    start = time.perf_counter()
    with progress_bar() as bar:
        task = bar.add_task("project", total=settings.steps, rate="", info="")

        def on_step(step: int, loss: float, img: torch.Tensor) -> None:
            bar.update(task, advance=1, rate=rate_text(step + 1, time.perf_counter() - start, "step"),
                       info=f"loss {loss:.4f}")
            if video is not None and (step % every == 0 or step == settings.steps - 1):
                frames.append(side_by_side(target, nchw_to_images(img.float().cpu().numpy())[0]))

        result = project(G, target, settings, on_step, seed)
    save_image(out / "target.png", target)
    save_image(out / "projected.png", result.image)
    save_image(out / "compare.png", side_by_side(target, result.image))
    _save_npy(out / "w.npy", result.ws)
    if result.noises is not None:
        with atomic_path(out / "noise.npz") as tmp, open(tmp, "wb") as f:  # a file: savez would add .npz
            np.savez(f, **{f"noise{i}": n for i, n in enumerate(result.noises)})
    if video is not None:
        write_video(video, frames, fps=24)
    return result


def _save_npy(path: Path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, array.astype(np.float32))
