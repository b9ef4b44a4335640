"""Seeds become latents (and random-mode noise) here, and only here, with NumPy, so every engine draws the
same numbers."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def seed_stream(seed: int) -> np.random.RandomState:
    """The seed's random stream: its z first, then (random-mode) its noise."""
    if not 0 <= seed < 2**32:
        raise ValueError(f"seed must be in [0, 2**32), got {seed}")
    return np.random.RandomState(seed)


def seed_to_z(seed: int, z_dim: int) -> np.ndarray:
    """One seed -> z of shape [z_dim], float32; the same numbers as NVlabs' RandomState(seed).randn."""
    return seed_stream(seed).randn(z_dim).astype(np.float32)


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


def parse_seeds(text: str, limit: int | None = None) -> list[int]:
    """'1,2,5-8' -> [1, 2, 5, 6, 7, 8]; more than `limit` seeds are refused before any list is made."""
    parts: list[range] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        if "-" in part:
            lo, hi = (int(v) for v in part.split("-", 1))
            if hi < lo:
                raise ValueError(f"seed range '{part}' runs backwards")
            parts.append(range(lo, hi + 1))
        else:
            parts.append(range(int(part), int(part) + 1))
    count = sum(len(r) for r in parts)
    if limit is not None and count > limit:
        raise ValueError(f"it gives {count:,} seeds; at most {limit:,} are allowed here")
    seeds = [s for r in parts for s in r]
    if not seeds:
        raise ValueError("no seeds given")
    return seeds
