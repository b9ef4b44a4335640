"""StyleGAN3 end to end: `gen import` of NVlabs stylegan3 pickles, `gen export` (synthesis takes ws and the camera
transform, no noise), `gen verify`, and `gen sample --pan/--rotate` from the run and from the bundle, torch-free,
against the pictures NVlabs' own code drew (tests/data/nvlabs-sg3, README.md there)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from nvlabs_fakes import dump_nvlabs, payload, persistent_network
from safetensors.torch import load_file

from conftest import assert_same_pictures, gen_without_torch, read_sampled, sample_args
from conftest import edited_bundle as edited
from conftest import run_gen_steps as gen_steps
from gen.runtime.bundle import BundleError, load_bundle
from gen.runtime.errors import GenError
from gen.runtime.latents import seeds_to_z
from gen.runtime.stylegan.camera import camera_transform
from gen.runtime.stylegan.generator import BundleGenerator
from gen.runtime.verify import verify
from gen.train import checkpoint as ckpt

DATA = Path(__file__).parent / "data" / "nvlabs-sg3"
SEEDS = [0, 1, 2, 3]
CAMERAS = {"": [], "-shift": ["--pan", "2,-1.5"], "-turn": ["--rotate", "60"]}  # as NVlabs' --translate/--rotate


def their_pickle(name: str, folder: Path, marker: Path, camera: np.ndarray | None = None) -> Path:
    """An NVlabs snapshot pickle of the generator (G, G_ema; D None), every module's source a payload; `camera`:
    saved with synthesis.input.transform set so (as gen_images.py sets it)."""
    tensors = {k: v.float() for k, v in load_file(DATA / f"{name}.safetensors").items()}
    if camera is not None:
        import torch

        tensors["G_ema.synthesis.input.transform"] = torch.from_numpy(camera).float()
    kwargs = json.loads((DATA / f"{name}.json").read_text())["G_ema"]["init_kwargs"]
    G = persistent_network("Generator", kwargs, ckpt.subdict(tensors, "G_ema"))
    return dump_nvlabs(folder / f"{name}.pkl", {"G": G, "D": None, "G_ema": G}, payload(marker))


def reference(name: str) -> dict[str, np.ndarray]:
    with np.load(DATA / f"{name}-pictures.npz") as f:
        return dict(f)


IMPORTED_WORDS = ("stylegan3 (NVlabs stylegan3 network pickle)", "alias-free, config T, 6 layers", "G_ema 66,247",
                  "D (gen fine-tunes imported StyleGAN2 models only")  # what `gen import` says of sg3t-32


@pytest.fixture(scope="module")
def through_the_cli(tmp_path_factory) -> tuple[Path, dict]:
    """The user's path for config T, in one interpreter: gen import, gen export, gen sample RUN with --pan and
    with --rotate (into folders run-shift, run-turn). (folder, {command: CompletedProcess})."""
    folder = tmp_path_factory.mktemp("cli")
    marker, run, bundle = folder / "ran", folder / "run", folder / "bundle"
    steps = {"import": ["import", str(their_pickle("sg3t-32", folder, marker)), "--out", str(run)],
             "export": ["export", str(run), "--out", str(bundle)]}
    steps |= {camera: sample_args(run, 1.0, folder / f"run{camera}", SEEDS, *CAMERAS[camera])
              for camera in ("-shift", "-turn")}
    done = dict(zip(steps, gen_steps(*steps.values())))
    assert not marker.exists(), "code from the file ran"
    return folder, done


@pytest.fixture(scope="module", params=["sg3t-32", "sg3r-32"])
def exported(request, tmp_path_factory) -> tuple[str, Path, Path]:
    """(name, run, bundle): config T's from `gen import` and `gen export` (through_the_cli: one export of it for
    the module), config R's pickle imported and exported in-process."""
    from gen.export.stylegan import export_stylegan
    from gen.train.importers import import_model

    if request.param == "sg3t-32":
        folder, done = request.getfixturevalue("through_the_cli")
        assert done["import"].returncode == 0 and done["export"].returncode == 0, done["import"].stderr + done[
            "export"].stderr
        assert all(words in done["import"].stdout for words in IMPORTED_WORDS), done["import"].stdout
        return request.param, folder / "run", folder / "bundle"
    name, folder = request.param, tmp_path_factory.mktemp(request.param)
    marker = folder / "ran"
    found = import_model(their_pickle(name, folder, marker), folder / "run")
    assert found.format == "stylegan3" and any(item.startswith("D ") for item in found.lacks)
    made, _ = export_stylegan(folder / "run", folder / "bundle")
    assert not marker.exists(), "code from the file ran"
    return name, folder / "run", made.path


def test_the_bundle_takes_ws_and_the_camera_and_verifies(exported):
    name, _, bundle = exported
    m = load_bundle(bundle).manifest
    assert m.stylegan.variant == ("stylegan3-t" if name == "sg3t-32" else "stylegan3-r")
    assert m.stylegan.noise_inputs == [] and m.stylegan.num_ws == 8
    assert {t.name: t.shape for t in m.graphs["synthesis"].inputs} == {"ws": ["batch", 8, 32],
                                                                       "transform": ["batch", 3, 3]}
    checks = verify(load_bundle(bundle), "cpu")
    assert checks and all(c.ok for c in checks)
    assert any(p.camera is not None for p in m.golden.pictures)
    assert {len(p.seeds) for p in m.golden.pictures} == {1, 4, 8}  # verify draws at batch 1, 4 and 8


@pytest.mark.parametrize("camera", list(CAMERAS))
def test_bundle_draws_nvlabs_pictures_through_their_camera(exported, camera):
    """psi 1 and 0.7; the identity, a translated and a rotated camera; in-process, the runtime's own path."""
    name, _, bundle = exported
    ref = reference(name)
    cam = camera_transform(*{"": ((0, 0), 0), "-shift": ((2, -1.5), 0), "-turn": ((0, 0), 60)}[camera])
    assert np.allclose(cam, ref[f"transform{camera}"], atol=1e-6)  # our --pan/--rotate are NVlabs' matrices
    with BundleGenerator(load_bundle(bundle), "cpu") as g:
        for psi in (1.0, 0.7):
            assert_same_pictures(g.images(SEEDS, psi=psi, camera=cam), ref[f"psi{psi:.1f}{camera}"])
            # as floats too (low-contrast pictures): the spatial pattern each camera draws is NVlabs'
            got = g.synthesize(g.styles(seeds_to_z(SEEDS, 32), psi), camera=cam)
            want = ref[f"float-psi{psi:.1f}{camera}"]
            pattern = [x - x.mean(axis=(2, 3), keepdims=True) for x in (got, want)]
            assert np.abs(got - want).max() < 1e-5
            assert np.linalg.norm(pattern[0] - pattern[1]) < 1e-4 * np.linalg.norm(pattern[1])


@pytest.mark.parametrize("batch", [1, 4, 8])
def test_bundle_equals_pytorch_at_batch_1_4_8(exported, batch):
    """The synthesis graph (dynamic batch) against the PyTorch reference at each batch size, through a moved
    camera: float outputs within 1e-5, pictures within a level."""
    from gen.train.sample import generate, load_generator

    _, run, bundle = exported
    cam = camera_transform((0.1, 0.2), 15)
    seeds = list(range(20, 20 + batch))
    G = load_generator(run)
    want = generate(G, seeds, 0.7, camera=cam, batch=batch)
    with BundleGenerator(load_bundle(bundle), "cpu") as g:
        got = g.images(seeds, psi=0.7, camera=cam, batch=batch)
        ws = g.styles(np.stack([np.random.RandomState(s).randn(32) for s in seeds]).astype(np.float32), 0.7)
        img = g.synthesize(ws, camera=cam)
    assert_same_pictures(got, want)
    import torch

    with torch.no_grad():
        ref = G.synthesis(torch.from_numpy(ws), torch.from_numpy(cam)).numpy()
    assert np.abs(img - ref).max() < 1e-5


def test_gen_import_and_sample_through_the_cli_draw_nvlabs_pictures(through_the_cli, tmp_path):
    """The user's path for config T: gen import, gen sample RUN and (torch-free) gen sample BUNDLE with --pan and
    --rotate; gen export and gen verify through the CLI (the commands that use torch: through_the_cli)."""
    ref = reference("sg3t-32")
    folder, done = through_the_cli
    bundle = folder / "bundle"
    p = done["import"]
    assert p.returncode == 0, p.stderr
    for words in IMPORTED_WORDS:
        assert words in p.stdout, p.stdout
    assert done["export"].returncode == 0, done["export"].stderr
    p = gen_without_torch("verify", str(bundle))
    assert p.returncode == 0 and "all within tolerance" in p.stdout, p.stdout + p.stderr
    for camera in ("-shift", "-turn"):
        assert_same_pictures(read_sampled(done[camera], folder / f"run{camera}", SEEDS), ref[f"psi1.0{camera}"])
    p = gen_without_torch("sample", str(bundle), "--seeds", "0-3", "--psi", "0.7", "--rotate", "60", "--out",
                          str(tmp_path / "turn.png"), "--outdir", str(tmp_path))
    assert p.returncode == 0, p.stderr
    from PIL import Image

    got = np.stack([np.asarray(Image.open(tmp_path / f"seed{s:04d}.png").convert("RGB")) for s in SEEDS])
    assert_same_pictures(got, ref["psi0.7-turn"])


def _noise(m):
    m["stylegan"]["noise_inputs"] = ["noise_0"]


def _no_moved_camera(m):
    m["golden"]["pictures"] = [p for p in m["golden"]["pictures"] if p.get("camera") is None]


def _random(m):
    m["golden"]["pictures"][0]["noise"] = "random"


def _stylegan2(m):
    m["stylegan"]["variant"] = "stylegan2"


@pytest.mark.parametrize("change, words", [
    (_noise, "noise_inputs must be empty: stylegan3-t has no noise"),
    (_no_moved_camera, "no case with a moved camera"),
    (_random, "has a random-noise case, but stylegan3-t has no noise"),
    (_stylegan2, "noise_inputs is empty, but every stylegan2 layer has noise"),
], ids=["noise", "camera", "random", "variant"])
@pytest.mark.parametrize("exported", ["sg3t-32"], indirect=True)  # (the contract is the same for R)
def test_a_manifest_that_does_not_fit_stylegan3_is_refused(exported, tmp_path, change, words):
    _, _, bundle = exported
    with pytest.raises(BundleError) as e:
        load_bundle(edited(bundle, tmp_path / "b", change))
    assert words in str(e.value), str(e.value)


@pytest.mark.parametrize("exported", ["sg3t-32"], indirect=True)
def test_a_wrong_camera_in_the_manifest_fails_verify(exported, tmp_path):
    """The moved-camera picture pins the transform input: another camera draws other pictures."""
    _, _, bundle = exported

    def turn(m):
        p = next(p for p in m["golden"]["pictures"] if p.get("camera"))
        p["camera"] = camera_transform((0.3, -0.2), 30).ravel().tolist()  # export used 25 degrees

    failed = [c for c in verify(load_bundle(edited(bundle, tmp_path / "b", turn)), "cpu") if not c.ok]
    assert failed and all(c.graph == "pictures" for c in failed)


def test_pan_and_rotate_are_checked_and_only_for_stylegan3(tmp_path):
    from gen.runtime.stylegan.sample import parse_camera

    for pan in ("1", "a,b", "nan,0", "1,2,3"):
        with pytest.raises(GenError, match="--pan takes two numbers"):
            parse_camera(pan, None)
    assert parse_camera(None, None) is None
    p = gen_without_torch("sample", "models/emoji", "--rotate", "10", "--out", str(tmp_path / "x.png"),
                          cwd=Path(__file__).resolve().parents[1])
    assert p.returncode == 2 and "move StyleGAN3's camera; this is a stylegan2 model" in p.stderr, p.stderr
    assert not (tmp_path / "x.png").exists()


@pytest.mark.parametrize("exported", ["sg3t-32"], indirect=True)
def test_fp16_graph_and_tensorrt_profiles_take_the_camera(exported, tmp_path):
    """--fp16-graph converts StyleGAN3's synthesis and it passes verify (PSNR over 50 dB); a TensorRT engine of it
    gets an optimisation profile for the camera transform as for ws, over the same batch range."""
    from gen.export.fp16 import add_fp16_graph
    from gen.runtime.engines.trt_plan import derive_profiles

    _, _, bundle = exported
    fp16, worst_db = add_fp16_graph(load_bundle(shutil.copytree(bundle, tmp_path / "b")))
    checks = verify(fp16, "cpu")
    assert worst_db >= 50 and checks and all(c.ok for c in checks)
    profiles = derive_profiles(fp16.manifest.graphs["synthesis"])
    assert {name: (p.min, p.opt, p.max) for name, p in profiles.items()} == {
        "ws": ([1, 8, 32], [8, 8, 32], [32, 8, 32]), "transform": ([1, 3, 3], [8, 3, 3], [32, 3, 3])}


def test_the_camera_path_closes_and_eases():
    from gen.runtime.stylegan.walk import WalkSettings, camera_path

    s = WalkSettings(pan=(0.5, -0.2), rotate=30.0)
    times = np.linspace(0, 3, 61)  # a loop of 3 seeds, its end included
    cams = camera_path(times, 3.0, s)
    assert np.allclose(cams[0], np.eye(3), atol=1e-6) and np.allclose(cams[-1], cams[0], atol=1e-6)
    assert np.allclose(cams[30], camera_transform((0.5, -0.2), 30.0), atol=1e-6)  # out at mid-loop
    assert np.abs(cams[1] - cams[0]).max() < 0.01  # eased: still at the ends
    spin = camera_path(times, 3.0, WalkSettings(rotate=360.0))
    assert np.allclose(spin[20], camera_transform((0, 0), 120.0), atol=1e-6)  # whole turns: a steady pace
    assert np.allclose(spin[-1], spin[0], atol=1e-6)
    assert camera_path(times, 3.0, WalkSettings()) is None
    with pytest.raises(GenError, match="--pan takes two numbers"):
        WalkSettings(pan=(float("inf"), 0.0))
    with pytest.raises(GenError, match="--rotate takes degrees within 36000"):
        WalkSettings(rotate=36001.0)


@pytest.mark.parametrize("exported", ["sg3t-32"], indirect=True)
def test_a_walk_with_a_moving_camera_loops_through_the_seeds_pictures(exported, tmp_path):
    """gen walk --pan --rotate on a StyleGAN3 bundle: frame 0 is seed 3's gen sample picture (the camera starts
    still), the camera moves the frames between, and the kiosk's walk runs the same path; a StyleGAN2 bundle
    refuses the options in one line and writes nothing."""
    from gen.runtime.stylegan.walk import WalkSettings, walk_frames

    _, _, bundle = exported
    moving, still = WalkSettings(fps=4, seconds_per_seed=1, pan=(0.4, 0.1), rotate=20), WalkSettings(fps=4,
                                                                                                  seconds_per_seed=1)
    with BundleGenerator(load_bundle(bundle), "cpu") as g:
        frames = np.stack(list(walk_frames(g, [3, 17], moving)))
        plain = np.stack(list(walk_frames(g, [3, 17], still)))
        picture = g.images([3], psi=g.psi(None))
    assert frames.shape == (8, 32, 32, 3)
    assert_same_pictures(frames[:1], picture)
    assert np.abs(frames[2].astype(int) - plain[2]).max() > 5  # mid-loop: the camera has moved
    p = gen_without_torch("walk", str(bundle), "--seeds", "3,17", "--seconds", "1", "--fps", "4", "--pan", "0.4,0.1",
                          "--rotate", "20", "--out", str(tmp_path / "w.gif"))
    assert p.returncode == 0 and (tmp_path / "w.gif").exists(), p.stderr
    p = gen_without_torch("walk", "models/emoji", "--pan", "0.1,0", "--out", str(tmp_path / "e.gif"),
                          cwd=Path(__file__).resolve().parents[1])
    assert p.returncode == 2 and "move StyleGAN3's camera; this is a stylegan2 model" in p.stderr, p.stderr
    assert not (tmp_path / "e.gif").exists()


@pytest.mark.parametrize("exported", ["sg3t-32"], indirect=True)
def test_the_kiosk_walk_moves_the_camera_across_legs(exported):
    """The kiosk's camera clock runs on across legs (a loop of the pool closes it): the first frame of the second
    leg continues from the last of the first, and the kiosk refuses --pan for a StyleGAN2 bundle."""
    import random

    from gen.runtime.kiosk.run import make_producer
    from gen.runtime.kiosk.scenes import WalkScene
    from gen.runtime.kiosk.settings import KioskSettings
    from gen.runtime.stylegan.walk import WalkSettings

    _, _, bundle = exported
    walk = WalkSettings(fps=4, seconds_per_seed=1, pan=(0.5, 0.0))
    scene = WalkScene([3, 17, 21], walk, random.Random(0), order="loop", batch=4)
    with BundleGenerator(load_bundle(bundle), "cpu") as g:
        first, second = scene.render(g), scene.render(g)
    assert scene.legs == 2 and len(first) == len(second) == 4
    step = np.abs(second[0].astype(int) - first[-1]).mean()
    assert step < 2 * np.abs(first[-1].astype(int) - first[-2]).mean() + 2  # no jump at the seed
    with pytest.raises(GenError, match="move StyleGAN3's camera; this is a stylegan2 model"):
        make_producer(load_bundle(Path(__file__).resolve().parents[1] / "models" / "emoji"),
                      KioskSettings(walk=WalkSettings(pan=(0.1, 0.0))), [0, 1])


def _camera(value):
    def change(m):
        next(p for p in m["golden"]["pictures"] if p.get("camera"))["camera"] = value
    return change


@pytest.mark.parametrize("change, words", [
    (_camera([1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]), "no case with a moved camera"),
    (_camera([1.0, 0.0, 1e-9, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]), "no case with a moved camera"),
    (_camera([1.0, 0.0, 0.3, 0.0, 1.0, 0.0, 0.5, 0.0, 1.0]), "not an affine transform"),
], ids=["identity", "near-identity", "projective"])
@pytest.mark.parametrize("exported", ["sg3t-32"], indirect=True)
def test_a_camera_that_pins_nothing_is_refused(exported, tmp_path, change, words):
    """A moved camera must move: the identity (or a hair from it) would let a graph that ignores its transform
    input pass verify."""
    with pytest.raises(BundleError) as e:
        load_bundle(edited(exported[2], tmp_path / "b", change))
    assert words in str(e.value), str(e.value)


def test_a_stylegan2_picture_with_a_camera_is_refused(tmp_path):
    def camera(m):
        m["golden"]["pictures"][0]["camera"] = camera_transform((0.3, 0.0), 0).ravel().tolist()

    with pytest.raises(BundleError, match="has a camera, which only StyleGAN3 bundles take"):
        load_bundle(edited(Path(__file__).resolve().parents[1] / "models" / "emoji", tmp_path / "b", camera))


def test_a_pickle_saved_with_a_moved_camera_imports_with_the_identity(tmp_path, marker):
    """gen's camera is an input (identity by default, for run and bundle alike): a stored moved one is reset, and
    the import says so."""
    from gen.train.importers import import_model
    from gen.train.sample import generate, load_generator

    pkl = their_pickle("sg3t-32", tmp_path, marker, camera=camera_transform((0.5, 0.0), 30))
    found = import_model(pkl, tmp_path / "run")
    assert any("reset to the identity" in item for item in found.lacks), found.lacks
    assert_same_pictures(generate(load_generator(tmp_path / "run"), SEEDS, 1.0), reference("sg3t-32")["psi1.0"])


def test_the_kiosk_service_is_not_installed_with_a_camera_a_model_lacks(tmp_path):
    """--pan on a StyleGAN2 bundle is refused when the systemd unit is written, not by every start of it."""
    unit = tmp_path / "gen-kiosk.service"
    p = gen_without_torch("kiosk", "models/emoji", "--pan", "0.1,0", "--install-service", "--unit", str(unit),
                          cwd=Path(__file__).resolve().parents[1])
    assert p.returncode == 2 and p.stderr.strip() == ("error: --pan and --rotate move StyleGAN3's camera; this is a "
                                                      "stylegan2 model"), p.stderr
    assert not unit.exists()
