"""Latent walks: a seamless loop through seeds, torch-free.

The path visits each seed's latent in turn and returns to the first. Time t runs over [0, S) for S
seeds; at whole t the latent is exactly that seed's, so those frames are `gen sample`'s pictures.
Frame k of n sits at t = k * S / n, and frame n would be frame 0 again: the video loops.
A StyleGAN3 walk may also move the camera (`pan`, `rotate`) along a path that closes over the same loop; the
camera is at rest at t = 0 only, so then only the first seed's frame is its `gen sample` picture.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from gen.runtime.errors import GenError
from gen.runtime.latents import STILL_NOISE_MODES, check_noise_mode, class_vector, seeds_to_z

from .camera import camera_transform, check_camera_bounds

SPACES = ("z", "w")


@dataclass(frozen=True)
class WalkSettings:
    seconds_per_seed: float = 4.0
    fps: float = 30.0
    psi: float | None = None  # None: the bundle's default
    cutoff: int | None = None
    space: str = "z"  # z: slerp between Gaussian latents; w: lerp between (truncated) styles
    ease: bool = True  # ease in and out of each seed, so the walk lingers on it
    noise_mode: str = "const"
    size: int | None = None  # upscale frames to this many pixels a side (Lanczos)
    class_idx: int | None = None  # the class of a class-conditional bundle's pictures (checked by the generator)
    pan: tuple[float, float] = (0.0, 0.0)  # StyleGAN3: the camera drifts out to this offset (picture widths) and back
    rotate: float = 0.0  # StyleGAN3: degrees it turns out and back; a multiple of 360 turns round and round

    def __post_init__(self) -> None:  # also run by dataclasses.replace: no walk settings exist unchecked
        if not self.fps > 0:
            raise GenError(f"fps must be positive (got {self.fps})")
        if not self.seconds_per_seed > 0:
            raise GenError(f"seconds must be positive (got {self.seconds_per_seed})")
        if self.space not in SPACES:
            raise GenError(f"unknown walk space '{self.space}'; choose z or w")
        check_noise_mode(self.noise_mode, STILL_NOISE_MODES, "a walk", "random would flicker")
        check_size(self.size)
        check_camera_bounds(self.pan, self.rotate)

    @property
    def moves_camera(self) -> bool:
        return tuple(self.pan) != (0.0, 0.0) or self.rotate != 0.0

    @property
    def frames_per_seed(self) -> int:
        return max(1, round(self.seconds_per_seed * self.fps))


def check_size(size: int | None) -> None:
    """Refuse an upscale size (pixels a side; None: no upscaling) that walks and mixing grids cannot make."""
    if size is not None and not 8 <= size <= 4096:
        raise GenError(f"size must be between 8 and 4096 pixels (got {size})")


def upscale(pictures: np.ndarray, size: int | None) -> np.ndarray:
    """uint8 square pictures [N, R, R, 3] resized to `size` a side (Lanczos); as they are if None or R."""
    from gen.runtime.images import resize

    if size is None or size == pictures.shape[1]:
        return pictures
    return np.stack([resize(p, size, size) for p in pictures])


def slerp(a: np.ndarray, b: np.ndarray, t: np.ndarray | float) -> np.ndarray:
    """Spherical interpolation between rows of a and b (t broadcast per row); exactly a at t=0, b at t=1.

    Gaussian latents live near a sphere; a straight line between two of them dips towards the
    centre, where pictures go bland, while the great circle keeps their norm.
    """
    a64, b64 = np.asarray(a, np.float64), np.asarray(b, np.float64)
    t = np.asarray(t, np.float64).reshape(-1, *([1] * (a64.ndim - 1)))
    omega = np.arccos(np.clip(np.sum(_unit(a64) * _unit(b64), axis=-1, keepdims=True), -1.0, 1.0))
    sin = np.sin(omega)
    parallel = sin < 1e-6  # (nearly) the same direction: a straight line is the same path
    safe = np.where(parallel, 1.0, sin)
    wa = np.where(parallel, 1.0 - t, np.sin((1.0 - t) * omega) / safe)
    wb = np.where(parallel, t, np.sin(t * omega) / safe)
    return (wa * a64 + wb * b64).astype(np.asarray(a).dtype)


def _unit(v: np.ndarray) -> np.ndarray:
    """Rows scaled to length 1 (a zero row stays zero)."""
    return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-12)


def ease(t: np.ndarray | float) -> np.ndarray:
    """Cosine ease-in-out on [0, 1]: still at both ends, so the loop never jerks at a seed."""
    return 0.5 - 0.5 * np.cos(np.pi * np.asarray(t, np.float64))


def frame_times(num_seeds: int, frames: int) -> np.ndarray:
    """Loop times of frames 0..frames-1 over [0, num_seeds)."""
    return np.arange(frames, dtype=np.float64) * num_seeds / frames


def path_at(keys: np.ndarray, times: np.ndarray, space: str = "z", eased: bool = True) -> np.ndarray:
    """Latents at loop times: between key i and key i+1 (wrapping to 0) by slerp (z) or lerp (w)."""
    n = keys.shape[0]
    times = np.mod(np.asarray(times, np.float64), n)
    i = np.floor(times).astype(int)
    frac = times - i
    frac = ease(frac) if eased else frac
    a, b = keys[i], keys[(i + 1) % n]
    if space == "z":
        return slerp(a, b, frac)
    f = frac.reshape(-1, *([1] * (a.ndim - 1)))
    return (a + (b - a) * f).astype(keys.dtype)  # exact at f = 0: the keyframe is the seed's own ws


def walk_frames(gen, seeds: Sequence[int], settings: WalkSettings, batch: int = 8,
                on_frame: Callable[[int], None] | None = None) -> Iterator[np.ndarray]:
    """Yield the loop's uint8 frames [H, W, 3], one at a time, computed `batch` at a time.

    `gen` is a BundleGenerator; frame k * frames_per_seed is seed k's `gen sample` picture.
    """
    if len(seeds) < 2:
        raise GenError("a walk needs at least 2 seeds, e.g. --seeds 3,17,42")
    keys = walk_keys(gen, seeds, settings)
    times = frame_times(len(seeds), settings.frames_per_seed * len(seeds))
    for start in range(0, len(times), batch):
        for k, frame in enumerate(path_images(gen, keys, times[start : start + batch], settings)):
            if on_frame is not None:
                on_frame(start + k)
            yield frame


def walk_keys(gen, seeds: Sequence[int | np.ndarray], settings: WalkSettings) -> np.ndarray:
    """The keyframes' latents: the seeds' z, or their truncated styles for a walk in w.

    A waypoint may also be an array: a w from `gen project` ([1, w_dim] or [num_ws, w_dim]), used as it
    is (no truncation: it already is that picture's style), so only a walk in w can pass through it.
    """
    if not any(isinstance(s, np.ndarray) for s in seeds):
        z = seeds_to_z(seeds, gen.meta.z_dim)
        return z if settings.space == "z" else walk_styles(gen, z, settings)
    if settings.space != "w":
        raise GenError("a .npy waypoint is a w (from gen project), not a z: walk with --space w")
    shape = (gen.meta.num_ws, gen.meta.w_dim)
    keys = []
    for s in seeds:
        if not isinstance(s, np.ndarray):
            s = walk_styles(gen, seeds_to_z([s], gen.meta.z_dim), settings)[0]
        elif s.ndim != 2 or s.shape[0] not in (1, shape[0]) or s.shape[1] != shape[1]:
            raise GenError(f"a w waypoint must be [1, {shape[1]}] or {list(shape)} for this bundle, "
                           f"got {list(s.shape)}")
        keys.append(np.broadcast_to(s, shape))
    return np.stack(keys).astype(np.float32)


def parse_waypoints(text: str) -> list[int | np.ndarray]:
    """'3,proj/w.npy,17-19' -> seeds, and the ws saved by `gen project` for the .npy items."""
    from gen.runtime.latents import parse_seeds

    points: list[int | np.ndarray] = []
    for part in (p.strip() for p in text.split(",")):
        if part.lower().endswith(".npy"):
            try:
                points.append(np.load(part, allow_pickle=False).astype(np.float32))
            except (OSError, ValueError) as e:
                raise GenError(f"cannot read the w in '{part}' ({e})") from None
        elif part:
            points.extend(parse_seeds(part, refusal=f"cannot read seeds '{text}'"))
    if not points:
        raise GenError(f"cannot read seeds '{text}': no seeds given")
    return points


def camera_path(times: np.ndarray, period: float, settings: WalkSettings) -> np.ndarray | None:
    """StyleGAN3's camera transforms [N, 3, 3] at `times`, on a path that closes every `period`: out to `pan` and
    `rotate` and back with a cosine ease (still at both ends), or round and round at a steady pace when `rotate`
    is whole turns. None when the camera does not move."""
    if not settings.moves_camera:
        return None
    phase = np.mod(np.asarray(times, np.float64), period) / period
    out = (1 - np.cos(2 * np.pi * phase)) / 2  # 0 -> 1 -> 0 over the loop
    spin = settings.rotate % 360 == 0
    angles = settings.rotate * (phase if spin else out)
    return np.stack([camera_transform((settings.pan[0] * f, settings.pan[1] * f), a) for f, a in zip(out, angles)])


def path_images(gen, keys: np.ndarray, times: np.ndarray, settings: WalkSettings,
                camera_times: np.ndarray | None = None, camera_period: float | None = None) -> np.ndarray:
    """uint8 frames [N, H, W, 3] at loop `times` along `keys`, in one batch (gen walk and gen kiosk share it).
    The camera (StyleGAN3) follows `camera_times` (default `times`) round a path of `camera_period` (default:
    the loop through the keys)."""
    latents = path_at(keys, times, settings.space, settings.ease)
    ws = walk_styles(gen, latents, settings) if settings.space == "z" else latents
    camera = camera_path(times if camera_times is None else camera_times,
                         len(keys) if camera_period is None else camera_period, settings)
    return upscale(gen.pictures(ws, settings.noise_mode, camera=camera), settings.size)


def walk_styles(gen, z: np.ndarray, settings: WalkSettings) -> np.ndarray:
    """z -> styles as the walk draws them: its psi (None: the bundle's), cutoff and class."""
    return gen.styles(z, gen.psi(settings.psi), settings.cutoff, settings.class_idx)


def walk_to_file(bundle: Path, out: Path, seeds: str, seconds: float | None, settings: WalkSettings,
                 engine: str = "auto", show_progress: bool = True, overwrite: bool = False) -> tuple[Path, int]:
    """Render the loop to a .mp4 or .gif; returns the path and the number of frames. An existing `out` is
    replaced only with `overwrite`."""
    from gen.runtime.bundle import load_bundle
    from gen.runtime.files import check_output_path
    from gen.runtime.progress import progress_bar, rate_text
    from gen.runtime.video import check_video_path, write_video

    from .generator import BundleGenerator, check_camera

    out = check_video_path(check_output_path(out, overwrite=overwrite))
    seed_list = parse_waypoints(seeds)
    if seconds is not None:
        if not seconds > 0:
            raise GenError(f"--seconds must be positive (got {seconds})")
        settings = replace(settings, seconds_per_seed=seconds / len(seed_list))
    total = settings.frames_per_seed * len(seed_list)
    with BundleGenerator(load_bundle(bundle), engine) as gen:
        class_vector(settings.class_idx, gen.meta.c_dim)  # a bad --class is one line, before the progress bar
        check_camera(settings.moves_camera, gen.meta.variant)
        with progress_bar(disable=not show_progress) as bar:
            task = bar.add_task("walk", total=total, rate="", info=f"{len(seed_list)} seeds, {settings.space}")
            start = time.perf_counter()

            def tick(k: int) -> None:
                bar.update(task, advance=1, rate=rate_text(k + 1, time.perf_counter() - start, "frame"))

            count = write_video(out, walk_frames(gen, seed_list, settings, on_frame=tick), settings.fps)
    return out, count
