"""Adaptive augmentation: identity at p=0, per-transform invariants, gradients, RNG, p control, resume."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

from gen.train.augment import P_MAX, AdaptiveAugment, _warp  # noqa: E402

GEOMETRIC = ("xflip", "rotate90", "xint", "scale", "rotate", "aniso", "xfrac")
COLOUR = ("brightness", "contrast", "lumaflip", "hue", "saturation")
ALL = GEOMETRIC + COLOUR + ("cutout",)


def only(*names: str, p: float = 1.0) -> AdaptiveAugment:
    """A pipeline with just the named transforms switched on."""
    return AdaptiveAugment(p=p, **{k: k in names for k in ALL})


def images(n: int = 8, size: int = 16, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, size, size, generator=g) * 2 - 1


def test_p0_is_exact_identity_and_draws_no_random_numbers():
    x = images()
    state = torch.get_rng_state()
    out = AdaptiveAugment(p=0.0, cutout=True, lumaflip=True)(x)
    assert out is x
    assert torch.equal(torch.get_rng_state(), state)


@pytest.mark.parametrize("size", [8, 64])
def test_p1_changes_every_image_and_keeps_shape_dtype_range(size):
    x = images(16, size)
    torch.manual_seed(0)
    out = AdaptiveAugment(p=1.0)(x)
    assert out.shape == x.shape and out.dtype == x.dtype
    assert torch.isfinite(out).all()
    assert (out - x).flatten(1).abs().amax(1).min() > 1e-3  # every image changed
    # Contrast and saturation are lognormal (up to 2**3 at 3 sigma) and random noise is very
    # colourful, so a few images leave [-1, 1] by far; the typical image stays in range.
    assert out.flatten(1).abs().median(1).values.median() < 1.0
    assert out.abs().max() < 100


def test_geometric_resampling_stays_within_input_range():
    # Bilinear interpolation with reflection padding is a convex combination of input pixels.
    x = images(32, 16)
    torch.manual_seed(1)
    out = only(*GEOMETRIC)(x)
    lo, hi = x.flatten(1).amin(1), x.flatten(1).amax(1)
    assert (out.flatten(1).amin(1) >= lo - 1e-5).all() and (out.flatten(1).amax(1) <= hi + 1e-5).all()


def test_gradients_flow_to_every_input_image():
    x = images(8, 16).requires_grad_(True)
    torch.manual_seed(2)
    AdaptiveAugment(p=1.0, cutout=True)(x).square().sum().backward()
    assert torch.isfinite(x.grad).all()
    assert (x.grad.flatten(1).abs().sum(1) > 0).all()


def test_warp_first_and_second_derivatives_are_correct():
    # The R1 penalty differentiates D's input gradient again, so the warp needs a true double backward.
    g = torch.eye(3, dtype=torch.float64).repeat(2, 1, 1)
    g[0, 0, 1], g[1, 0, 2], g[1, 1, 1] = 0.3, 0.7, 1.2  # shear; fractional shift and scale
    x = torch.randn(2, 2, 6, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: _warp(t, g), x)
    assert torch.autograd.gradgradcheck(lambda t: _warp(t, g), x)


def test_r1_style_double_backward_reaches_d():
    d = torch.nn.Conv2d(3, 1, 3)
    x = images(4, 16).requires_grad_(True)
    torch.manual_seed(17)
    (grad,) = torch.autograd.grad(d(AdaptiveAugment(p=1.0, cutout=True)(x)).sum(), x, create_graph=True)
    grad.square().sum().backward()
    assert torch.isfinite(d.weight.grad).all() and d.weight.grad.abs().sum() > 0


def test_same_rng_state_same_output_different_state_different_output():
    x, aug = images(), AdaptiveAugment(p=0.7, cutout=True)
    state = torch.get_rng_state()
    a = aug(x)
    torch.set_rng_state(state)
    b = aug(x)
    c = aug(x)  # the RNG has moved on
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def test_xflip_at_p1_gives_exactly_flipped_or_unflipped_images():
    x = images(64, 8)
    torch.manual_seed(3)
    out = only("xflip")(x)
    flipped = [torch.equal(o, xi.flip(-1)) for o, xi in zip(out, x, strict=True)]
    kept = [torch.equal(o, xi) for o, xi in zip(out, x, strict=True)]
    assert all(f != k for f, k in zip(flipped, kept, strict=True))  # exactly one of the two, per image
    assert 16 < sum(flipped) < 48  # a fair coin, not all or nothing


def test_xflip_probability_is_p_over_two():
    # Applied with probability p, and then a flip half of the time.
    x = images(4000, 8)
    torch.manual_seed(4)
    out = only("xflip", p=0.4)(x)
    changed = (out != x).flatten(1).any(1).float().mean().item()
    assert abs(changed - 0.2) < 0.03


def test_images_left_alone_at_small_p_are_bit_exact():
    x = images(256, 8)
    torch.manual_seed(5)
    out = AdaptiveAugment(p=0.02)(x)
    same = (out == x).flatten(1).all(1)
    # 10 transform draws at p=0.02 each (two rotations at ~p/2): ~15% of images get something.
    assert 0.7 < same.float().mean() < 0.97


@pytest.mark.parametrize("name", ["xflip", "rotate90", "xint", "scale", "rotate", "aniso", "xfrac"])
def test_geometric_transform_keeps_a_constant_image_constant(name):
    # Reflection padding: no border colour can bleed in, whatever the shift, scale or angle.
    colour = torch.tensor([0.3, -0.5, 0.9]).view(1, 3, 1, 1)
    x = colour.expand(16, 3, 16, 16).clone()
    x[:8] = -x[:8]
    torch.manual_seed(6)
    out = only(name)(x)
    assert torch.allclose(out, x, atol=1e-5)


@pytest.mark.parametrize("name", ["xflip", "rotate90"])
def test_flips_and_quarter_turns_permute_pixels(name):
    x = images(16, 8)
    torch.manual_seed(7)
    out = only(name)(x)
    assert torch.allclose(out.flatten(2).sort().values, x.flatten(2).sort().values, atol=1e-6)
    assert not torch.allclose(out, x)


def test_rotate90_gives_an_exact_quarter_turn():
    x = images(32, 8)
    torch.manual_seed(8)
    out = only("rotate90")(x)
    for o, xi in zip(out, x, strict=True):
        assert any(torch.equal(o, torch.rot90(xi, k, (1, 2))) for k in range(4))


def test_integer_translation_moves_by_whole_pixels():
    # Away from the reflected border, a whole-pixel shift copies pixels without blending.
    x = images(16, 32)
    torch.manual_seed(9)
    out = only("xint")(x)
    for o, xi in zip(out, x, strict=True):
        inner = o[:, 4:-4, 4:-4]
        hits = [torch.allclose(inner, xi[:, 4 + dy:28 + dy, 4 + dx:28 + dx], atol=1e-5)
                for dy in range(-4, 5) for dx in range(-4, 5)]
        assert sum(hits) == 1


def test_brightness_adds_one_offset_per_image():
    x = images(16)
    torch.manual_seed(10)
    d = (only("brightness")(x) - x).flatten(1)
    assert torch.allclose(d, d[:, :1].expand_as(d), atol=1e-6)
    assert d[:, 0].abs().max() > 0.05


def test_contrast_scales_each_image_about_mid_grey():
    x = images(16)
    torch.manual_seed(11)
    out = only("contrast")(x)
    ratio = (out / x).flatten(1)
    assert torch.allclose(ratio, ratio[:, :1].expand_as(ratio), rtol=1e-4)
    assert (ratio[:, 0] > 0).all() and (ratio[:, 0] - 1).abs().max() > 0.05


@pytest.mark.parametrize("name", ["hue", "saturation"])
def test_hue_and_saturation_keep_luma_and_greys(name):
    x = images(16)
    torch.manual_seed(12)
    out = only(name)(x)
    assert torch.allclose(out.mean(1), x.mean(1), atol=1e-5)  # per-pixel luma unchanged
    assert not torch.allclose(out, x, atol=1e-3)  # but the colours moved
    grey = x.mean(1, keepdim=True).expand_as(x).contiguous()
    assert torch.allclose(only(name)(grey), grey, atol=1e-5)


def test_hue_rotation_keeps_pixel_norms():
    x = images(16)
    torch.manual_seed(13)
    assert torch.allclose(only("hue")(x).norm(dim=1), x.norm(dim=1), atol=1e-5)


def test_lumaflip_negates_luma_and_keeps_chroma():
    x = images(32)
    torch.manual_seed(14)
    out = only("lumaflip")(x)
    luma_in, luma_out = x.mean(1, keepdim=True), out.mean(1, keepdim=True)
    assert torch.allclose(out - luma_out, x - luma_in, atol=1e-5)
    flipped = [torch.allclose(lo, -li, atol=1e-5) for lo, li in zip(luma_out, luma_in, strict=True)]
    kept = [torch.equal(o, xi) for o, xi in zip(out, x, strict=True)]
    assert all(f != k for f, k in zip(flipped, kept, strict=True)) and 0 < sum(flipped) < 32


def test_cutout_zeroes_one_square_of_at_most_a_quarter():
    x = images(32, 16) + 3  # no zeros of its own
    torch.manual_seed(15)
    out = only("cutout")(x)
    cut = out == 0
    assert ((out == x) | cut).all()
    frac = cut.flatten(1).float().mean(1)
    assert (frac > 0).all() and (frac <= 0.25).all()


def test_autocast_inputs_keep_their_dtype():
    x = images().bfloat16()
    torch.manual_seed(16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = AdaptiveAugment(p=1.0)(x)
        out32 = AdaptiveAugment(p=1.0)(x.float())
    assert out.dtype == torch.bfloat16 and out32.dtype == torch.float32
    assert torch.isfinite(out.float()).all()


def test_rejects_colour_on_non_rgb_images():
    with pytest.raises(ValueError, match="RGB"):
        AdaptiveAugment(p=1.0)(torch.zeros(2, 1, 8, 8))
    assert only(*GEOMETRIC)(torch.zeros(2, 1, 8, 8)).shape == (2, 1, 8, 8)


def record_signs(aug: AdaptiveAugment, positive: int, negative: int) -> None:
    aug.record(torch.cat([torch.full((positive,), 2.5), torch.full((negative,), -0.5)]))


def test_adjust_moves_p_by_the_exact_step():
    aug = AdaptiveAugment(target=0.6, speed_kimg=100.0, p=0.5)
    record_signs(aug, 9, 1)  # r_t = 0.8 > target: overfitting, more augmentation
    assert aug.adjust(64) == pytest.approx(0.8)
    assert float(aug.p) == pytest.approx(0.5 + 64 / 100_000, abs=1e-7)
    record_signs(aug, 1, 1)  # r_t = 0 < target
    assert aug.adjust(128) == pytest.approx(0.0)
    assert float(aug.p) == pytest.approx(0.5 + 64 / 100_000 - 128 / 100_000, abs=1e-7)


def test_adjust_clamps_and_resets():
    aug = AdaptiveAugment(p=0.0005)
    record_signs(aug, 0, 4)
    aug.adjust(1000)
    assert float(aug.p) == 0.0
    assert float(aug.sign_sum) == 0 and float(aug.sign_count) == 0
    assert math.isnan(aug.adjust(1000)) and float(aug.p) == 0.0  # nothing recorded: p unchanged
    aug = AdaptiveAugment(p=0.999, speed_kimg=1.0)
    record_signs(aug, 4, 0)
    aug.adjust(1000)
    assert float(aug.p) == pytest.approx(P_MAX) and float(aug.p) < 1.0


def test_adjust_uses_the_reduced_statistics():
    aug = AdaptiveAugment(target=0.6, p=0.5)
    record_signs(aug, 4, 0)  # locally r_t = 1

    def other_process_adds(stats):  # another process saw 4 negatives; returns nothing (in place)
        stats += torch.tensor([-4.0, 4.0], dtype=stats.dtype)

    assert aug.adjust(16, reduce=other_process_adds) == pytest.approx(0.0)
    assert float(aug.p) < 0.5
    record_signs(aug, 3, 1)
    assert aug.adjust(16, reduce=lambda s: s * 2) == pytest.approx(0.5)  # a returned tensor works too


def test_state_dict_round_trip_resumes_exactly():
    a = AdaptiveAugment(p=0.3)
    record_signs(a, 5, 2)
    b = AdaptiveAugment()
    b.load_state_dict(a.state_dict())
    assert float(b.p) == pytest.approx(0.3) and float(b.sign_sum) == 3 and float(b.sign_count) == 7
    x = images()
    state = torch.get_rng_state()
    out_a = a(x)
    torch.set_rng_state(state)
    assert torch.equal(b(x), out_a)
    record_signs(a, 1, 0)
    record_signs(b, 1, 0)
    assert a.adjust(32) == b.adjust(32) and float(a.p) == float(b.p)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_properties():
    aug = AdaptiveAugment(p=1.0).cuda()
    x = images().cuda().requires_grad_(True)
    state = torch.cuda.get_rng_state()
    out = aug(x)
    torch.cuda.set_rng_state(state)
    assert torch.equal(aug(x), out) and out.device == x.device
    out.sum().backward()
    assert torch.isfinite(x.grad).all()
    aug.record(torch.ones(4, device="cuda"))
    assert aug.adjust(4) == 1.0
