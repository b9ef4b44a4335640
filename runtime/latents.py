"""Seeds become latents (and random-mode noise) here, and only here, with NumPy, so every engine draws the
same numbers."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .errors import GenError

# Truncation psi where neither the user nor a bundle says: varied pictures, yet clean ones.
DEFAULT_PSI = 0.7
# How the per-pixel noise of a StyleGAN synthesis is fed: its trained constant maps, fresh random noise
# (drawn per seed, below), or none. Walks and mixing grids take only the still ones: random would flicker.
NOISE_MODES = ("const", "random", "none")
STILL_NOISE_MODES = ("const", "none")


def check_noise_mode(mode: str, allowed: Sequence[str] = NOISE_MODES, what: str = "", why: str = "") -> str:
    """`mode` if it is one of `allowed`, else one line naming them; `what` refuses the others (and says `why`)."""
    if mode in allowed:
        return mode
    if mode not in NOISE_MODES or not what:
        raise GenError(f"unknown noise mode '{mode}'; choose one of {', '.join(allowed)}")
    raise GenError(f"{what} takes noise mode {' or '.join(allowed)}, not '{mode}'" + (f" ({why})" if why else ""))


def seed_stream(seed: int) -> np.random.RandomState:
    """The seed's random stream: its z first, then (random-mode) its noise."""
    if not 0 <= seed < 2**32:
        raise ValueError(f"seed must be in [0, 2**32), got {seed}")
    return np.random.RandomState(seed)


def seed_to_z(seed: int, z_dim: int) -> np.ndarray:
    """One seed -> z of shape [z_dim], float32; the same numbers as NVlabs' RandomState(seed).randn."""
    return seed_stream(seed).randn(z_dim).astype(np.float32)


def class_vector(class_idx: int | None, c_dim: int, count: int = 1) -> np.ndarray | None:
    """The label a class-conditional model takes, [count, c_dim] float32: one-hot, as NVlabs' generate.py builds
    it; None for an unconditional model. A missing or out-of-range class, or one for an unconditional model, is
    one line."""
    if c_dim == 0:
        if class_idx is not None:
            raise GenError(f"--class {class_idx}: this model is not class-conditional; leave --class out")
        return None
    if class_idx is None:
        raise GenError(f"this model is class-conditional ({c_dim} classes): choose one with --class 0..{c_dim - 1}")
    if not 0 <= class_idx < c_dim:
        raise GenError(f"--class {class_idx} is out of range: this model has {c_dim} classes, 0..{c_dim - 1}")
    c = np.zeros((count, c_dim), np.float32)
    c[:, class_idx] = 1.0
    return c


def seeds_to_z(seeds: Sequence[int], z_dim: int) -> np.ndarray:
    """Seeds -> z of shape [len(seeds), z_dim]."""
    return np.stack([seed_to_z(int(s), z_dim) for s in seeds])


def seed_noise(seeds: Sequence[int], z_dim: int, shapes: Sequence[Sequence[int]]) -> list[np.ndarray]:
    """Random-mode noise per seed: one float32 array [len(seeds), *shape] per noise input, `shapes` being
    each input's shape for one picture (no batch axis). A seed's noise continues its stream after its z,
    so its picture does not depend on the batch it is drawn in, and every engine draws the same noise."""
    per_seed = []
    for seed in seeds:
        rng = seed_stream(int(seed))
        rng.randn(z_dim)  # skip the seed's z
        per_seed.append([rng.randn(*shape).astype(np.float32) for shape in shapes])
    return [np.stack(layer) for layer in zip(*per_seed)]


def parse_seeds(text: str, limit: int | None = None, refusal: str | None = None) -> list[int]:
    """'1,2,5-8' -> [1, 2, 5, 6, 7, 8]; more than `limit` seeds are refused before any list is made.
    A bad text is one GenError line: `refusal` (default "cannot read seeds 'TEXT'"), a colon, and why."""

    def refuse(why: str) -> GenError:
        return GenError(f"{refusal or f'cannot read seeds {text!r}'}: {why}")

    parts: list[range] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            lo, dash, hi = part.partition("-")
            lo, hi = int(lo), int(hi) if dash else int(lo)
        except ValueError:
            raise refuse(f"'{part}' is not a seed or a range A-B") from None
        if hi < lo:
            raise refuse(f"seed range '{part}' runs backwards")
        if hi >= 2**32:
            raise refuse(f"seed {hi} is out of range; seeds run from 0 to {2**32 - 1}")
        parts.append(range(lo, hi + 1))
    count = sum(len(r) for r in parts)
    if limit is not None and count > limit:
        raise refuse(f"it gives {count:,} seeds; at most {limit:,} are allowed here")
    if not count:
        raise refuse("no seeds given")
    return [s for r in parts for s in r]
