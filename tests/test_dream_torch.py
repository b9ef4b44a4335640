"""The PyTorch engine: backbones, weight files, objectives and their gradients."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from conftest import PHOTOS
from gen.runtime.dream.loop import DreamSettings, dream, tiled_gradient
from gen.runtime.dream.objective import LayerTerm
from gen.runtime.errors import GenError
from gen.runtime.images import load_image, resize_center_crop
from gen.train.backbones import BACKBONES, build_backbone, layer_table
from gen.train.dream_torch import (
    DreamObjective,
    autograd_gradient_and_value,
    build_objective,
    gradient_and_value,
    guide_match,
    image_tensor,
    torch_engine,
    torch_gradient,
)

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.one_thread: torch on one thread


@pytest.fixture(scope="module")
def lite0():
    """EfficientNet-Lite0 with its real ImageNet weights (bundled by a pip package)."""
    return build_backbone("efficientnet_lite0")


def small_photo(size: int = 64) -> np.ndarray:
    if not (PHOTOS / "chelsea.png").exists():
        pytest.skip(f"{PHOTOS} (../shared beside the checkout) is not here")
    return resize_center_crop(load_image(PHOTOS / "chelsea.png"), size)


def test_real_weights_see_a_cat(lite0):
    x = image_tensor(small_photo(224))
    with torch.no_grad():
        top = lite0(x, ["logits"])["logits"].softmax(1)[0].topk(3)
    assert int(top.indices[0]) in range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat
    assert float(top.values[0]) > 0.2


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_backbone_layers_run_on_odd_sizes(name):
    net = build_backbone(name, random_weights=True)
    table = dict(layer_table(name))
    assert list(table) == net.layer_names
    assert ("logits" in table) == (name != "inception_v3")  # the FID network (inception_v3's default) has none
    size = (net.min_size + 13, net.min_size + 30)  # odd, not square
    layers = [net.default_layer, "logits" if net.has_classifier else net.layer_names[-1]]
    with torch.no_grad():
        out = net(torch.rand(1, 3, *size), layers)
    assert out[net.default_layer].shape[1] == table[net.default_layer][0]
    assert out[layers[1]].shape == ((1, 1000) if net.has_classifier else (1, 2048))


def test_inception_v3_takes_torchvision_weights_in_torchvision_layout(tmp_path):
    """A torchvision weight file (classifier, auxiliary head, batch-norm scales) gets torchvision's network:
    the padding counts in the branches' average pools, Mixed_7c pools by average, inputs in [-1, 1]."""
    from gen.train.backbones.inception_v3 import InceptionV3

    src = InceptionV3(fid=False).eval()
    state = src.state_dict() | {"AuxLogits.fc.weight": torch.zeros(1000, 768)}
    torch.save(state, tmp_path / "inception_v3_google.pth")
    net = build_backbone("inception_v3", tmp_path / "inception_v3_google.pth")
    assert not net.fid and net.has_classifier and net.layer_names[-2:] == ["pool3", "logits"]
    x = torch.rand(1, 3, 80, 91)
    with torch.no_grad():
        want = src(x, ["logits", "Mixed_5b"])
        got = net(x, ["logits", "Mixed_5b"])
        torch.testing.assert_close(got["logits"], want["logits"], rtol=0, atol=0)
        # The FID layout with the same tensors, fed the same normalised input (it reads pixels as (x - 128) / 128):
        # Mixed_5b's convolution branches agree, its pool branch (the last 32 channels) does not.
        fid = InceptionV3(fid=True).eval()
        fid.load_state_dict(src.state_dict(), strict=False)
        other = fid(x * 256 / 255, ["Mixed_5b"])["Mixed_5b"]
    torch.testing.assert_close(other[:, :224], got["Mixed_5b"][:, :224], rtol=1e-4, atol=1e-6)
    assert (other[:, 224:] - got["Mixed_5b"][:, 224:]).abs().max() > 1e-3


def test_weights_round_trip_pth_and_safetensors(tmp_path):
    src = build_backbone("googlenet", random_weights=True)
    state = src.state_dict()
    state["aux1.fc2.weight"] = torch.zeros(1000, 1024)  # public files carry auxiliary heads: ignored
    torch.save(state, tmp_path / "g.pth")
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "g.safetensors"))
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        want = src(x, ["inception4c"])["inception4c"]
        for f in ("g.pth", "g.safetensors"):
            got = build_backbone("googlenet", tmp_path / f)(x, ["inception4c"])["inception4c"]
            torch.testing.assert_close(got, want, rtol=0, atol=0)  # the same weights, input and kernels: exact


def test_wrong_keys_are_listed(tmp_path):
    state = build_backbone("googlenet", random_weights=True).state_dict()
    del state["conv1.conv.weight"], state["inception4c.branch2.1.bn.bias"]
    state["features.0.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "bad.pth")
    with pytest.raises(GenError) as e:
        build_backbone("googlenet", tmp_path / "bad.pth")
    msg = str(e.value)
    assert "2 missing keys" in msg and "conv1.conv.weight" in msg and "inception4c.branch2.1.bn.bias" in msg
    assert "1 unexpected keys (features.0.weight)" in msg and "\n" not in msg


def test_wrong_shapes_and_foreign_files(tmp_path):
    state = build_backbone("efficientnet_lite0", random_weights=True).state_dict()
    state["_fc.weight"] = torch.zeros(10, 1280)
    torch.save(state, tmp_path / "ten.pth")
    with pytest.raises(GenError, match=r"wrong shape .*_fc.weight"):
        build_backbone("efficientnet_lite0", tmp_path / "ten.pth")
    # A pickle with code in it is refused by weights_only loading, as a one-line error in our words.
    (tmp_path / "evil.pth").write_bytes(pickle.dumps(Path("x")))
    with pytest.raises(GenError, match="cannot read weights .*holds a pickle with code or objects that gen does not"):
        build_backbone("efficientnet_lite0", tmp_path / "evil.pth")
    (tmp_path / "w.npz").write_bytes(b"x")
    with pytest.raises(GenError, match=".pth or .safetensors"):
        build_backbone("efficientnet_lite0", tmp_path / "w.npz")
    with pytest.raises(GenError, match="does not exist"):
        build_backbone("efficientnet_lite0", tmp_path / "none.pth")
    with pytest.raises(GenError, match="no bundled weights"):
        build_backbone("vgg16")
    with pytest.raises(GenError, match="unknown backbone 'resnet'; choose one of"):
        build_backbone("resnet")


def test_unknown_layer_lists_valid_ones(lite0):
    with pytest.raises(GenError, match=r"unknown layer 'mixed4c' for efficientnet_lite0; valid layers: stem, block0"):
        build_objective(lite0, layers="mixed4c")
    with pytest.raises(GenError, match="channels 0-111"):
        build_objective(lite0, layers="block9:112")
    with pytest.raises(GenError, match="classes 0-999"):
        build_objective(lite0, class_index=1000)


def test_objective_values(lite0):
    x = image_tensor(small_photo())
    with torch.no_grad():
        feats = lite0(x, ["block5", "block9"])
        both = build_objective(lite0, layers="block5=2,block9:3+7=0.5")(x)
        cls = build_objective(lite0, class_index=285)(x)
        logits = lite0(x, ["logits"])["logits"]
    want = 2 * feats["block5"].square().mean() + 0.5 * feats["block9"][:, [3, 7]].square().mean()
    torch.testing.assert_close(both, want)
    torch.testing.assert_close(cls, logits[0, 285])


def test_guide_gradient_is_the_best_matching_guide_feature():
    feats = torch.randn(1, 8, 3, 4, requires_grad=True)
    guide = torch.randn(8, 5)
    value = guide_match(feats, guide)
    (g,) = torch.autograd.grad(value, feats)
    best = (feats.detach().flatten(2)[0].T @ guide).argmax(1)  # [12]
    torch.testing.assert_close(g[0].flatten(1), guide[:, best] / 12)


def test_gradient_matches_finite_differences():
    # float64 and a tiny step: ReLU6 has kinks, so a larger step crosses some and disagrees.
    objective = build_objective(build_backbone("efficientnet_lite0"), layers="block5").double()
    x = image_tensor(small_photo(40)).double()
    g, value = gradient_and_value(objective, x)
    direction = torch.randn_like(x)
    eps = 1e-6
    with torch.no_grad():
        numeric = (objective(x + eps * direction) - objective(x - eps * direction)) / (2 * eps)
    assert abs(float((g * direction).sum()) - float(numeric)) < 1e-3 * abs(float(numeric)) + 1e-6


@pytest.mark.parametrize("spec,octaves", [(dict(layers="block9"), 2), (dict(class_index=285), 2),
                                          (dict(layers="block5:1+2"), 2),
                                          (dict(layers="block7", guide=PHOTOS / "coffee.png"), 1)])
def test_dreaming_increases_the_objective(lite0, spec, octaves):
    # The guide's best-match objective is jumpy across octaves, so it is checked within one octave.
    img = small_photo(64)
    objective = build_objective(lite0, **spec)
    jitter = 4 if octaves > 1 else 0
    out = dream(img, torch_gradient(objective), DreamSettings(octaves=octaves, iterations=8 // octaves * 2,
                                                              jitter=jitter))
    with torch.no_grad():
        before, after = float(objective(image_tensor(img))), float(objective(image_tensor(out)))
    assert after > before + 0.05 * abs(before)


def test_tiles_agree_with_the_whole_image(lite0):
    """A tile sees what the whole image sees except near its borders, so the gradients agree there.

    (The roll bookkeeping is tested exactly in test_dream_loop; a roll that is not a multiple of the
    network's stride changes a CNN's gradient by aliasing, so it is not compared here.)
    """
    gradient = torch_gradient(build_objective(lite0, layers="block5"))
    x = small_photo(128).transpose(2, 0, 1).astype(np.float32) / 255
    whole, _ = tiled_gradient(x, gradient, tile=0)
    tiled, _ = tiled_gradient(x, gradient, tile=64)  # four 64x64 tiles

    def cos(a, b):
        return float((a * b).sum() / np.linalg.norm(a) / np.linalg.norm(b))

    assert cos(whole, tiled) > 0.85
    assert cos(whole[:, 16:48, 16:48], tiled[:, 16:48, 16:48]) > 0.97  # inside the first tile
    one, _ = tiled_gradient(x, gradient, tile=128)
    np.testing.assert_allclose(one, whole, rtol=0, atol=1e-6)


def test_torch_engine_describes_itself_and_climbs(lite0):
    engine = torch_engine(lite0, "block4:1+2=0.5", device="cpu")
    assert engine.min_side == lite0.min_size and engine.description == "efficientnet_lite0 (block4:1+2=0.5) on cpu"
    with engine:
        x = small_photo(48).transpose(2, 0, 1)[None].astype(np.float32) / 255
        g, value = engine.gradient(x)
        assert g.shape == x.shape and engine.gradient(x + 0.01 * g / np.abs(g).mean())[1] > value
    assert torch_engine(lite0, class_index=285, device="cpu").description == "efficientnet_lite0 (class 285) on cpu"


def test_same_seed_same_torch_dream(lite0):
    gradient = torch_gradient(build_objective(lite0, layers="block4"))
    img = small_photo(48)
    s = DreamSettings(octaves=2, iterations=2, seed=3)
    np.testing.assert_array_equal(dream(img, gradient, s), dream(img, gradient, s))


def test_objective_module_is_separate_from_the_autograd_call(lite0):
    objective = DreamObjective(lite0, [LayerTerm("block3")])
    assert isinstance(objective, torch.nn.Module)
    x = torch.rand(1, 3, 37, 45)
    assert objective(x).shape == ()
    g, v = gradient_and_value(objective, x)
    assert g.shape == x.shape and not x.requires_grad
    g2, v2 = autograd_gradient_and_value(objective, x)  # what the eager engine runs
    torch.testing.assert_close(g2, g)
    torch.testing.assert_close(v2, v)


@pytest.mark.slow
def test_gradient_traces_with_symbolic_shapes():
    """The export issue traces gradient_and_value with make_fx; one trace must serve other image sizes."""
    from torch.fx.experimental.proxy_tensor import make_fx

    objective = build_objective(build_backbone("efficientnet_lite0", random_weights=True), layers="block4")
    traced = make_fx(lambda im: gradient_and_value(objective, im), tracing_mode="symbolic",
                     _allow_non_fake_inputs=True)(torch.rand(1, 3, 64, 80))
    x = torch.rand(1, 3, 75, 49)
    g1, v1 = traced(x)
    g2, v2 = gradient_and_value(objective, x)
    torch.testing.assert_close(g1, g2)
    torch.testing.assert_close(v1, v2)
