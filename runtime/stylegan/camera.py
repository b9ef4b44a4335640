"""StyleGAN3's camera: --pan and --rotate as the 3x3 transform its synthesis takes, and their bounds.

Numpy only, so walk settings and the CLI can check a camera without loading a bundle."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from gen.runtime.errors import GenError

MAX_PAN = 1000.0  # picture widths: far past any walk; keeps the Fourier input's phase in float32's range
MAX_ROTATE = 36000.0  # degrees: a hundred turns


def check_camera_bounds(pan: Sequence[float], rotate: float) -> None:
    """Refuse a pan that is not two finite numbers within MAX_PAN, or a rotation not finite within MAX_ROTATE."""
    if len(pan) != 2 or not np.isfinite(pan).all() or max(map(abs, pan)) > MAX_PAN:
        raise GenError(f"--pan takes two numbers 'X,Y' in picture widths, each within {MAX_PAN:g} (e.g. 0.25,-0.1), "
                       f"got {','.join(map(str, pan))}")
    if not (np.isfinite(rotate) and abs(rotate) <= MAX_ROTATE):
        raise GenError(f"--rotate takes degrees within {MAX_ROTATE:g}, got {rotate!r}")


def parse_pan(text: str | None) -> tuple[float, float]:
    """--pan "X,Y" (picture widths) -> (x, y); None: (0, 0)."""
    if text is None:
        return (0.0, 0.0)
    try:
        x, y = (float(v) for v in text.split(","))
    except ValueError:
        raise GenError(f"--pan takes two numbers 'X,Y' in picture widths (e.g. 0.25,-0.1), got {text!r}") from None
    check_camera_bounds((x, y), 0.0)
    return (x, y)


def camera_transform(pan: Sequence[float] = (0.0, 0.0), rotate: float = 0.0) -> np.ndarray:
    """StyleGAN3's camera: the picture turned by `rotate` degrees and moved by `pan` (x, y, in
    picture widths), as the 3x3 inverse transform its synthesis takes (NVlabs' gen_images.py --translate and
    --rotate draw the same)."""
    a = np.deg2rad(rotate)
    c, s = np.cos(a), np.sin(a)
    m = np.array([[c, s, pan[0]], [-s, c, pan[1]], [0.0, 0.0, 1.0]])
    return np.linalg.inv(m).astype(np.float32)
