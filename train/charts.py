"""Small charts drawn with Pillow, so no plotting library is needed."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw


def draw_curve(points: list[tuple[float, float]], label: str, size: tuple[int, int] = (480, 240)) -> np.ndarray:
    """A small line chart (x: kimg) as uint8 RGB, drawn with Pillow: no plotting library needed."""
    w, h = size
    left, right, top, bottom = 56, w - 12, 22, h - 24
    im = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(im)
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    x0, x1 = min(xs), max(max(xs), min(xs) + 1e-9)
    y0, y1 = min(0.0, min(ys)), max(max(ys), 1e-9)

    def to_px(x: float, y: float) -> tuple[float, float]:
        return left + (x - x0) / (x1 - x0) * (right - left), bottom - (y - y0) / (y1 - y0) * (bottom - top)

    draw.rectangle([left, top, right, bottom], outline=(160, 160, 160))
    if len(points) > 1:
        draw.line([to_px(x, y) for x, y in points], fill=(200, 40, 40), width=2)
    for x, y in points:
        px, py = to_px(x, y)
        draw.ellipse([px - 2, py - 2, px + 2, py + 2], fill=(200, 40, 40))
    draw.text((left, 4), f"{label} (last {ys[-1]:.4g}, best {min(ys):.4g})", fill="black")
    draw.text((4, top), f"{y1:.3g}", fill="black")
    draw.text((4, bottom - 10), f"{y0:.3g}", fill="black")
    draw.text((left, bottom + 6), f"{x0:g} kimg", fill="black")
    draw.text((right - 60, bottom + 6), f"{x1:g} kimg", fill="black")
    return np.asarray(im)
