"""`gen import` of NVlabs' StyleGAN2 TensorFlow pickles: the imported run and its bundle draw what legacy.py's
conversion draws.

tests/data/nvlabs-tf/ holds data only (its README.md says how NVlabs' code made it): TensorFlow variables of a
random 32 px StyleGAN2 (G, D, Gs), their construction arguments, and the pictures and D logits of the networks that
NVlabs' legacy.load_network_pkl converted from them. Each test builds the pickle itself, every network's source a
payload that leaves a marker file if it ran (it never may)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from import_checks import assert_run_computes_reference
from nvlabs_fakes import dump_tensorflow, payload, tf_networks

from conftest import assert_import_round_trip, import_each
from gen.runtime.errors import GenError
from gen.train.importers import import_model

DATA = Path(__file__).parent / "data" / "nvlabs-tf"
SEEDS = [0, 1, 2, 3]


def reference() -> dict[str, np.ndarray]:
    with np.load(DATA / "sg2tf-32-pictures.npz") as f:
        return dict(f)


def tf_pickle(path: Path, marker: Path, change=None, g_kwargs: dict | None = None,
              d_kwargs: dict | None = None) -> Path:
    with np.load(DATA / "sg2tf-32-variables.npz") as f:
        variables = {k: v.astype(np.float32) for k, v in f.items()}  # TensorFlow kept float32
    variables["G/lod"] = np.array(0.0, np.float32)  # G_main's progressive-growing input, in every real G and Gs
    kwargs = json.loads((DATA / "sg2tf-32.json").read_text())
    if change:
        change(variables)
    d = {k: v for k, v in {**kwargs["D"], **(d_kwargs or {})}.items() if v is not None}
    return dump_tensorflow(path, tf_networks(variables, {**kwargs["G"], **(g_kwargs or {})}, d, payload(marker)))


def test_imported_networks_compute_what_legacy_conversion_computes(tmp_path, marker):
    found = import_model(tf_pickle(tmp_path / "stylegan2-config-f.pkl", marker), tmp_path / "run")
    assert found.format == "stylegan2-tf" and set(found.parameters) == {"G_ema", "G", "D"}
    assert_run_computes_reference(tmp_path / "run", reference(), SEEDS)


@pytest.mark.slow
def test_imported_run_and_its_bundle_draw_legacy_pictures(tmp_path, marker):
    pkl = tf_pickle(tmp_path / "stylegan2-config-f.pkl", marker)
    words = ("StyleGAN2 TensorFlow network pickle", "32x32, 3 channels", "z 32 -> w 32, lr multiplier 0.01",
             "min(512 / res, 32)", "G_ema 66,723", "D 72,561")
    assert_import_round_trip(pkl, tmp_path, words, reference(), SEEDS)


def _leftover(v):
    v["G/synthesis/8x8/Skip/weight"] = np.zeros((1, 1, 32, 32), np.float32)


def _lod(v):
    v["G/synthesis/ToRGB_lod0/weight"] = np.zeros((1, 1, 16, 3), np.float32)


def _missing(v):
    del v["G/synthesis/16x16/Conv1/mod_bias"]


def _integers(v):
    v["G/mapping/Dense0/bias"] = np.zeros(32, np.int32)


def _shape(v):
    v["G/synthesis/8x8/Conv1/weight"] = np.zeros((3, 3, 32), np.float32)


CANNOT = {  # case: (change, g_kwargs, words)
    "leftover": (_leftover, None, "1 variable(s) gen has no place for (synthesis/8x8/Skip/weight)"),
    "lod": (_lod, None, "'orig' synthesis architecture"),
    "missing": (_missing, None, "no variable 'synthesis/16x16/Conv1/mod_bias'"),
    "integers": (_integers, None, "'mapping/Dense0/bias' is int32, not floating point"),
    "shape": (_shape, None, "'synthesis/8x8/Conv1/weight' has shape [3, 3, 32], not [kh, kw, in, out]"),
    "unknown-kwarg": (None, {"structure": "fixed", "use_wscale": True},
                      "built with 'use_wscale', which gen does not know"),
    "resnet": (None, {"architecture": "resnet"}, "'resnet' synthesis architecture"),
    "resolution": (None, {"resolution": 48}, "resolution 48, not a power of two"),
}


@pytest.fixture(scope="module")
def cannot_imports(tmp_path_factory) -> dict:
    """case: (pickle, its folder, `gen import` of it): every case of CANNOT, the commands in one interpreter; each
    pickle's payload would leave the file `ran` in its folder."""
    return import_each(tmp_path_factory, CANNOT, lambda case, folder: tf_pickle(
        folder / "odd.pkl", folder / "ran", *CANNOT[case][:2]))


@pytest.mark.parametrize("case", CANNOT)
def test_what_gen_cannot_represent_is_one_line_and_writes_nothing(cannot_imports, case):
    pkl, tmp_path, p = cannot_imports[case]
    words = CANNOT[case][2]
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert words in p.stderr and str(pkl) in p.stderr, p.stderr
    assert not (tmp_path / "run").exists()
    assert not (tmp_path / "ran").exists(), "code from the file ran"


def test_a_discriminator_as_official_configs_pickled_it_or_one_gen_cannot_read(tmp_path, marker):
    """Official runs never set mbstd_group_size (TensorFlow's D used 4): D is imported. A D whose variables gen
    cannot read is left out with the reason, and the generators are still imported."""
    found = import_model(tf_pickle(tmp_path / "a.pkl", marker, d_kwargs={"mbstd_group_size": None}), tmp_path / "a")
    assert "D" in found.parameters and found.model.mbstd_group == 4

    def no_skip(v):
        del v["D/16x16/Skip/weight"]

    found = import_model(tf_pickle(tmp_path / "b.pkl", marker, no_skip), tmp_path / "b")
    assert "D" not in found.parameters and set(found.parameters) == {"G_ema", "G"}
    assert any(item.startswith("a usable D (not imported:") and "no variable '16x16/Skip/weight'" in item
               for item in found.lacks), found.lacks


def test_a_stylegan1_network_is_refused(tmp_path, marker):
    kwargs = json.loads((DATA / "sg2tf-32.json").read_text())
    networks = tf_networks({}, kwargs["G"], kwargs["D"], payload(marker))
    for net in networks:
        net.version = 3
    with pytest.raises(GenError, match=r"version 3 \(StyleGAN1\?\)"):
        import_model(dump_tensorflow(tmp_path / "karras2019.pkl", networks), tmp_path / "run")
