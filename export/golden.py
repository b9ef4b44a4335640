"""Golden data: reference inputs and outputs saved once at export, compared on any device later."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gen.runtime.bundle import GOLDEN


def save_golden(folder: Path, arrays: dict[str, np.ndarray]) -> Path:
    """Write arrays (float32 kept as is) to golden.npz; plain arrays only, so loading never unpickles."""
    path = folder / GOLDEN
    # np.asarray, not np.ascontiguousarray: that one turns a 0-d scalar (an objective value) into shape (1,).
    np.savez_compressed(path, **{k: np.asarray(v, order="C") for k, v in arrays.items()})
    return path
