"""The torch-free dreaming loop, driven by small NumPy gradient functions whose answers are known."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from gen.runtime.dream.feedback import FeedbackSettings, feedback_frames
from gen.runtime.dream.loop import (
    DreamEngine,
    DreamSettings,
    apply_mask,
    count_steps,
    dream,
    octave_sizes,
    tile_bounds,
    tiled_gradient,
)
from gen.runtime.dream.objective import LayerTerm, parse_layers
from gen.runtime.dream.run import dream_to_file
from gen.runtime.errors import GenError
from gen.runtime.images import load_image, save_image


def pixelwise(image: np.ndarray) -> tuple[np.ndarray, float]:
    """Objective sum((x - 0.3)^2): its gradient at a pixel depends on that pixel alone."""
    d = image - 0.3
    return 2.0 * d, float((d * d).sum())


def brighter(image: np.ndarray) -> tuple[np.ndarray, float]:
    """Objective mean(x): the loop should push every pixel up."""
    return np.full_like(image, 1.0 / image.size), float(image.mean())


def still(image: np.ndarray) -> tuple[np.ndarray, float]:
    """A flat objective: nothing to climb, so a dream changes no pixel."""
    return np.zeros_like(image), 0.0


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
    np.testing.assert_array_equal(g, pixelwise(x[None])[0][0])  # the same NumPy sums on the same input: exact
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
    np.testing.assert_array_equal(out[mask == 0], img[mask == 0])  # copied, not mixed: exact on any CPU
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
        DreamSettings(**kwargs)


def test_settings_are_checked_when_made_and_when_replaced():
    with pytest.raises(GenError, match="tile must be 0"):
        replace(DreamSettings(tile=64), min_side=40)  # a bigger network's smallest side makes the tile too small
    for kwargs, message in ((dict(frames=0), "frames"), (dict(zoom=3.0), "zoom"), (dict(blend=1.5), "blend"),
                            (dict(fps=0.0), "fps")):
        with pytest.raises(GenError, match=message):
            FeedbackSettings(**kwargs)
    with pytest.raises(GenError, match="zoom"):
        replace(FeedbackSettings(), zoom=0.1)


def test_full_blend_starts_every_frame_from_the_source():
    img = photo()
    frames = list(feedback_frames(img, still, DreamSettings(octaves=1, iterations=1),
                                  FeedbackSettings(frames=3, zoom=1.2, blend=1.0)))
    assert len(frames) == 3
    for frame in frames:  # a zero gradient keeps the picture; at most the float round trip's one level
        assert np.abs(frame.astype(int) - img).max() <= 1


class Engine:
    """A NumPy engine for dream_to_file that records being opened and closed."""

    def __init__(self, gradient=brighter, min_side: int = 32) -> None:
        self.gradient, self.min_side, self.opened, self.closed = gradient, min_side, 0, 0

    def __call__(self) -> DreamEngine:
        self.opened += 1
        return DreamEngine(self.gradient, self.min_side, "brighter on numpy", self.close)

    def close(self) -> None:
        self.closed += 1


@pytest.fixture
def picture(tmp_path):
    path = tmp_path / "in.png"
    save_image(path, photo())
    return path


def test_dream_to_file_writes_a_still_and_closes_the_engine(picture, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    engine, lines = Engine(), []
    settings = DreamSettings(octaves=2, iterations=2)
    first = dream_to_file(picture, engine, settings=settings, show_progress=False, announce=lines.append)
    second = dream_to_file(picture, engine, settings=settings, show_progress=False)
    assert (first.path, second.path) == (Path("in-dream.png"), Path("in-dream-2.png"))
    assert lines == ["dreaming 64x48 with brighter on numpy: 4 steps"]
    assert first.message.startswith("wrote in-dream.png (64x48, ") and first.frames == 0
    assert load_image(first.path).mean() > photo().mean()
    assert engine.opened == engine.closed == 2


def test_dream_to_file_writes_an_animation(picture, tmp_path):
    result = dream_to_file(picture, Engine(), tmp_path / "zoom.gif", DreamSettings(octaves=1, iterations=1),
                           FeedbackSettings(frames=3), show_progress=False)
    assert result.frames == 3 and result.message.startswith(f"wrote {tmp_path / 'zoom.gif'} (3 frames, ")


def test_dream_to_file_checks_before_opening_and_closes_after_failing(picture, tmp_path):
    engine = Engine()
    for out, message in (("out.txt", "use .png, .jpg or .webp"), ("out.gif", "pass --frames"),
                         ("in.png", "is the input image")):
        with pytest.raises(GenError, match=message):
            dream_to_file(picture, engine, tmp_path / out)
    assert engine.opened == 0
    large = Engine(min_side=64)  # the picture is 64x48: too small for this network
    with pytest.raises(GenError, match="dreaming needs at least 64x64"):
        dream_to_file(picture, large, tmp_path / "out.png", show_progress=False)
    assert large.opened == large.closed == 1 and not (tmp_path / "out.png").exists()


def test_parse_layers():
    assert parse_layers("block9") == [LayerTerm("block9")]
    assert parse_layers("block5=1, block8:3+7=0.5") == [LayerTerm("block5"), LayerTerm("block8", (3, 7), 0.5)]
    assert str(LayerTerm("block8", (3, 7), 0.5)) == "block8:3+7=0.5"
    for bad in ("", "block5=x", "block5:a", ":3", "block5:-1"):
        with pytest.raises(GenError):
            parse_layers(bad)


def test_runtime_never_imports_torch():
    code = ("import sys, gen.runtime.cli, gen.runtime.dream.loop, gen.runtime.dream.feedback, gen.runtime.dream.run, "
            "gen.runtime.dream.engine, gen.cli.dream; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)
