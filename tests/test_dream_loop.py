"""The torch-free dreaming loop, driven by small NumPy gradient functions whose answers are known."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from gen.runtime.dream.loop import (
    DreamSettings,
    apply_mask,
    count_steps,
    dream,
    octave_sizes,
    tile_bounds,
    tiled_gradient,
)
from gen.runtime.dream.objective import LayerTerm, parse_layers
from gen.runtime.errors import GenError


def pixelwise(image: np.ndarray) -> tuple[np.ndarray, float]:
    """Objective sum((x - 0.3)^2): its gradient at a pixel depends on that pixel alone."""
    d = image - 0.3
    return 2.0 * d, float((d * d).sum())


def brighter(image: np.ndarray) -> tuple[np.ndarray, float]:
    """Objective mean(x): the loop should push every pixel up."""
    return np.full_like(image, 1.0 / image.size), float(image.mean())


def photo(h: int = 48, w: int = 64, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize("length,tile", [(1000, 512), (520, 512), (64, 512), (100, 33), (7, 3)])
def test_tiles_cover_without_thin_leftovers(length, tile):
    bounds = tile_bounds(length, tile)
    assert bounds[0][0] == 0 and bounds[-1][1] == length
    assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:], strict=False))  # contiguous, no overlap
    sizes = [b - a for a, b in bounds]
    assert max(sizes) <= tile and max(sizes) - min(sizes) <= 1


@pytest.mark.parametrize("tile,shift", [(0, (0, 0)), (16, (5, -7)), (20, (33, 100)), (64, (-3, 2))])
def test_tiled_gradient_equals_whole_image_for_a_local_objective(tile, shift):
    x = np.random.default_rng(1).random((3, 50, 70), dtype=np.float32)
    whole, _ = pixelwise(x[None])
    tiled, value = tiled_gradient(x, pixelwise, tile, shift)
    np.testing.assert_allclose(tiled, whole[0], rtol=0, atol=1e-6)
    assert np.isfinite(value)


def test_one_tile_is_exactly_one_call():
    x = np.random.default_rng(2).random((3, 40, 40), dtype=np.float32)
    calls = []

    def grad(image):
        calls.append(image.shape)
        return pixelwise(image)

    g, _ = tiled_gradient(x, grad, tile=512)
    assert calls == [(1, 3, 40, 40)]
    np.testing.assert_array_equal(g, pixelwise(x[None])[0][0])
    calls.clear()
    tiled_gradient(x, grad, tile=16)
    assert len(calls) == 9 and all(max(s[2:]) <= 16 for s in calls)


def test_octave_pyramid():
    s = DreamSettings(octaves=4, octave_scale=2.0, min_side=32)
    assert octave_sizes(300, 451, s) == [(38, 56), (75, 113), (150, 226), (300, 451)]
    assert octave_sizes(100, 100, s) == [(50, 50), (100, 100)]  # 25 px would be below min_side
    assert count_steps(100, 100, DreamSettings(octaves=4, octave_scale=2.0, iterations=3)) == 6
    with pytest.raises(GenError, match="at least 32x32"):
        octave_sizes(8, 8, s)


def test_dreaming_climbs_the_objective():
    img = photo()
    values = []
    dream(img, brighter, DreamSettings(octaves=2, iterations=5, jitter=4), on_step=lambda s: values.append(s.objective))
    assert len(values) == 10
    assert values[-1] > values[0] + 0.02


def test_same_seed_same_dream_other_seed_other_dream():
    img = photo()

    def wavy(image):  # a gradient that depends on position, so the random roll matters
        h, w = image.shape[2:]
        g = np.sin(np.arange(w, dtype=np.float32) / 3.0)[None, None, None, :] * np.ones_like(image)
        return g, float((g * image).sum() / (h * w))

    s = DreamSettings(octaves=2, iterations=3, jitter=8, seed=7)
    a = dream(img, wavy, s)
    b = dream(img, wavy, s)
    c = dream(img, wavy, DreamSettings(octaves=2, iterations=3, jitter=8, seed=8))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_mask_keeps_unmasked_pixels_exactly():
    img = photo(64, 80)
    mask = np.zeros((64, 80), np.float32)
    mask[10:40, 20:60] = 1.0
    mask[40:50, 20:60] = 0.5  # a soft edge
    out = dream(img, brighter, DreamSettings(octaves=3, iterations=4, step=0.05), mask=mask)
    np.testing.assert_array_equal(out[mask == 0], img[mask == 0])
    assert (out[10:40, 20:60].astype(int) >= img[10:40, 20:60]).all()
    assert (out[10:40, 20:60] != img[10:40, 20:60]).mean() > 0.5


def test_apply_mask_exact_ends():
    a, b = photo(8, 8, 1), photo(8, 8, 2)
    m = np.zeros((8, 8), np.float32)
    m[:, 4:] = 1.0
    out = apply_mask(a, b, m)
    np.testing.assert_array_equal(out[:, :4], a[:, :4])
    np.testing.assert_array_equal(out[:, 4:], b[:, 4:])


def test_clipping_keeps_pixels_in_range():
    img = np.full((40, 40, 3), 250, np.uint8)
    out = dream(img, brighter, DreamSettings(octaves=1, iterations=10, step=0.5))
    assert out.max() == 255 and out.dtype == np.uint8


@pytest.mark.parametrize("kwargs,message", [
    (dict(octaves=0), "at least 1"),
    (dict(octave_scale=0.5), "octave scale"),
    (dict(step=0.0), "step must be positive"),
    (dict(norm="l2"), "mean, std, none"),
    (dict(tile=40), "tile must be 0"),
    (dict(jitter=-1), "jitter"),
])
def test_bad_settings_are_clear_errors(kwargs, message):
    with pytest.raises(GenError, match=message):
        DreamSettings(**kwargs).check()


def test_parse_layers():
    assert parse_layers("block9") == [LayerTerm("block9")]
    assert parse_layers("block5=1, block8:3+7=0.5") == [LayerTerm("block5"), LayerTerm("block8", (3, 7), 0.5)]
    assert str(LayerTerm("block8", (3, 7), 0.5)) == "block8:3+7=0.5"
    for bad in ("", "block5=x", "block5:a", ":3", "block5:-1"):
        with pytest.raises(GenError):
            parse_layers(bad)


def test_runtime_never_imports_torch():
    code = ("import sys, gen.runtime.cli, gen.runtime.dream.loop, gen.runtime.dream.feedback, gen.cli.dream; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)
