"""Class-conditional bundles (issue 13): an imported stylegan2-ada model with 5 classes (tests/data/nvlabs) exported
with the one-hot label c beside z. The bundle draws NVlabs' own pictures of each class torch-free, `gen verify`
redraws its golden pictures in their classes, walk, mix and the kiosk take --class, and a class or a c_dim that does
not fit is refused in one line."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from nvlabs_fakes import dump_nvlabs, payload
from PIL import Image
from test_import_nvlabs import reference, snapshot

from conftest import SHIPPED, assert_same_pictures, gen_without_torch, wait_frames
from conftest import edited_bundle as edited
from gen.runtime.bundle import BundleError, load_bundle
from gen.runtime.kiosk.run import make_producer
from gen.runtime.kiosk.settings import KioskSettings
from gen.runtime.stylegan.generator import BundleGenerator
from gen.runtime.stylegan.mix import mix_grid, parse_styles
from gen.runtime.stylegan.walk import WalkSettings, walk_frames
from gen.runtime.verify import verify

SEEDS = [0, 1, 2, 3]
EMOJI = SHIPPED / "emoji"  # unconditional: a manifest written before c_dim existed


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    from gen.export.stylegan import export_stylegan
    from gen.train.importers import import_model

    folder = tmp_path_factory.mktemp("conditional")
    marker = folder / "ran"
    import_model(dump_nvlabs(folder / "cond.pkl", snapshot(name="sg2ada-16-cond"), payload(marker)), folder / "run")
    made, _ = export_stylegan(folder / "run", folder / "bundle")
    assert not marker.exists()
    return made.path


@pytest.fixture(scope="module")
def class3() -> np.ndarray:
    """NVlabs' pictures of seeds 0-3 in class 3 at the bundle's default psi, 0.7."""
    return reference("sg2ada-16-cond")["psi0.7-class3"]


def one_line_error(p: subprocess.CompletedProcess, *words: str) -> None:
    assert p.returncode == 2, (p.returncode, p.stderr[-2000:])
    lines = p.stderr.strip().splitlines()
    assert "Traceback" not in p.stderr and len(lines) == 1 and lines[0].startswith("error: "), p.stderr[-2000:]
    assert all(w in lines[0] for w in words), lines[0]


def test_the_mapping_takes_the_label_beside_z_and_the_bundle_verifies(bundle):
    m = load_bundle(bundle).manifest
    assert m.stylegan.c_dim == 5 and m.format_version == 3
    assert {t.name: t.shape for t in m.graphs["mapping"].inputs} == {"z": ["batch", 16], "c": ["batch", 5]}
    assert all("c" in c.inputs for c in m.golden.cases if c.graph == "mapping")
    assert [(p.class_index, p.noise) for p in m.golden.pictures] == [(0, "const"), (1, "const"), (2, "const"),
                                                                    (3, "const"), (3, "random")]
    p = gen_without_torch("verify", str(bundle), "--engine", "cpu")
    assert p.returncode == 0 and "all within tolerance" in p.stdout, p.stdout[-3000:] + p.stderr[-2000:]


@pytest.mark.parametrize("psi", [1.0, 0.7])
@pytest.mark.parametrize("cls", [0, 3])
def test_gen_sample_draws_nvlabs_pictures_of_each_class(bundle, tmp_path, psi, cls):
    p = gen_without_torch("sample", str(bundle), "--class", str(cls), "--psi", str(psi), "--noise-mode", "const",
                          "--seeds", "0-3", "--out", str(tmp_path / "grid.png"), "--outdir", str(tmp_path),
                          "--engine", "cpu")
    assert p.returncode == 0, p.stderr
    pictures = np.stack([np.asarray(Image.open(tmp_path / f"seed{s:04d}.png").convert("RGB")) for s in SEEDS])
    assert_same_pictures(pictures, reference("sg2ada-16-cond")[f"psi{psi:.1f}-class{cls}"])


def test_verify_redraws_each_picture_in_its_class(bundle, tmp_path):
    folder = edited(bundle, tmp_path / "b", lambda m: m["golden"]["pictures"][0].__setitem__("class_index", 4))
    failed = {(c.graph, c.output) for c in verify(load_bundle(folder), "cpu") if not c.ok}
    assert failed == {("pictures", "ws"), ("pictures", "image")}


def test_walk_and_mix_draw_in_the_class(bundle, tmp_path, class3):
    with BundleGenerator(load_bundle(bundle), "cpu") as gen:
        for space in ("z", "w"):  # frames at the seeds are gen sample's pictures
            settings = WalkSettings(fps=2, seconds_per_seed=1.0, space=space, class_idx=3)
            frames = np.stack(list(walk_frames(gen, [0, 1], settings)))
            assert_same_pictures(frames[[0, 2]], class3[[0, 1]])
        grid = mix_grid(gen, [0, 1], [2, 3], parse_styles("fine", gen.meta.num_ws), class_idx=3)
    assert_same_pictures(grid[1:, 0], class3[[0, 1]])
    assert_same_pictures(grid[0, 1:], class3[[2, 3]])
    for command, out, more in (("walk", "w.gif", ("--seeds", "0,1", "--seconds", "1", "--fps", "2")),
                               ("mix", "m.png", ("--rows", "0,1", "--cols", "2,3"))):
        p = gen_without_torch(command, str(bundle), "--class", "3", "--out", str(tmp_path / out), "--engine", "cpu",
                              *more)
        assert p.returncode == 0 and (tmp_path / out).is_file(), p.stderr


@pytest.mark.parametrize("command,out", [("sample", "a.png"), ("walk", "a.gif"), ("mix", "a.png")])
def test_a_missing_out_of_range_or_unexpected_class_is_one_line(bundle, tmp_path, command, out):
    def run(source: Path, *more: str) -> subprocess.CompletedProcess:
        return gen_without_torch(command, str(source), "--out", str(tmp_path / out), "--engine", "cpu", *more)

    one_line_error(run(bundle), "class-conditional (5 classes)", "--class 0..4")
    one_line_error(run(bundle, "--class", "5"), "--class 5 is out of range", "5 classes, 0..4")
    one_line_error(run(bundle, "--class", "-1"), "--class -1 is out of range")
    one_line_error(run(EMOJI, "--class", "0"), "not class-conditional", "leave --class out")
    assert not (tmp_path / out).exists()


@pytest.mark.parametrize("change,words", [
    (lambda m: m["stylegan"].__setitem__("c_dim", 4), "mapping must take z [batch, 16] and c [batch, 4]"),
    (lambda m: m["stylegan"].__setitem__("c_dim", 0), "mapping must take z [batch, 16] (stylegan.c_dim is 0)"),
    (lambda m: m["stylegan"].__delitem__("c_dim"), "mapping must take z [batch, 16] (stylegan.c_dim is 0)"),
    (lambda m: m["stylegan"].__setitem__("c_dim", 10**6), "stylegan.c_dim: Expected `int` <= 10000"),
    (lambda m: m["stylegan"].__setitem__("c_dim", -1), "stylegan.c_dim: Expected `int` >= 0"),
    (lambda m: m["golden"]["pictures"][1].__delitem__("class_index"), "class_index None does not fit stylegan.c_dim 5"),
    (lambda m: m["golden"]["pictures"][1].__setitem__("class_index", 5), "it needs one in 0..4"),
])
def test_a_c_dim_or_class_that_does_not_fit_is_refused(bundle, tmp_path, change, words):
    folder = edited(bundle, tmp_path / "b", change)
    with pytest.raises(BundleError, match=re.escape(words)):
        load_bundle(folder)
    p = gen_without_torch("sample", str(folder), "--class", "0", "--out", str(tmp_path / "a.png"))
    problems = [line for line in p.stderr.splitlines() if line.startswith("error: ")]
    assert p.returncode == 2 and "Traceback" not in p.stderr and len(problems) == 1 and words in problems[0], p.stderr
    assert not (tmp_path / "a.png").exists()


def test_a_manifest_whose_c_disagrees_with_the_graph_is_one_line(bundle, tmp_path):
    """c_dim and the manifest's own c input agree with each other, not with the graph (onnxruntime's view)."""
    def four_classes(m: dict) -> None:
        m["stylegan"]["c_dim"] = 4
        next(t for t in m["graphs"]["mapping"]["inputs"] if t["name"] == "c")["shape"] = ["batch", 4]
        for p in m["golden"]["pictures"]:
            p["class_index"] %= 4

    folder = edited(bundle, tmp_path / "b", four_classes)
    one_line_error(gen_without_torch("sample", str(folder), "--class", "0", "--out", str(tmp_path / "a.png")),
                   "'mapping.onnx' input 'c' has shape ['batch', 5] in the graph, the manifest says float32 "
                   "['batch', 4]")


def test_fp16_graph_and_tensorrt_profiles_take_the_label(bundle, tmp_path):
    """--fp16-graph converts synthesis (the mapping with c stays FP32, as on TensorRT); a TensorRT engine of the
    mapping gets an optimisation profile for c as for z, over the same batch range."""
    from gen.export.fp16 import add_fp16_graph
    from gen.runtime.engines.trt_plan import derive_profiles

    fp16, worst_db = add_fp16_graph(load_bundle(shutil.copytree(bundle, tmp_path / "b")))
    checks = verify(fp16, "cpu")
    assert worst_db >= 50 and checks and all(c.ok for c in checks)
    profiles = derive_profiles(fp16.manifest.graphs["mapping"])
    assert {name: (p.min, p.opt, p.max) for name, p in profiles.items()} == {
        "z": ([1, 16], [8, 16], [32, 16]), "c": ([1, 5], [8, 5], [32, 5])}


def test_the_kiosk_walks_in_the_class(bundle, tmp_path, class3):
    settings = KioskSettings(fps=2, speed=1.0, order="loop", crossfade=0, walk=WalkSettings(class_idx=3))
    producer = make_producer(load_bundle(bundle), settings, [0, 1], "cpu").start()
    try:
        frames = wait_frames(producer, 3)
    finally:
        producer.stop()
    assert_same_pictures(np.stack([frames[0], frames[2]]), class3[[0, 1]])

    def kiosk(source: Path, *more: str) -> subprocess.CompletedProcess:
        unit = tmp_path / "gen-kiosk.service"  # checked as a run would be, before the unit is written
        return gen_without_torch("kiosk", str(source), "--install-service", "--unit", str(unit), *more, cwd=tmp_path)

    one_line_error(kiosk(bundle), "class-conditional (5 classes)", "--class 0..4")
    one_line_error(kiosk(bundle, "--class", "5"), "out of range")
    one_line_error(kiosk(EMOJI, "--class", "0"), "not class-conditional")
    one_line_error(kiosk(SHIPPED / "dream-lite0", "--class", "0"), "a dream bundle's class is chosen at export")
    assert not (tmp_path / "gen-kiosk.service").exists()
    assert kiosk(bundle, "--class", "3").returncode == 0 and (tmp_path / "gen-kiosk.service").is_file()


def test_the_kiosk_window_plays_a_class(bundle, tmp_path):
    pytest.importorskip("pygame")
    p = gen_without_torch("kiosk", str(bundle), "--class", "3", "--windowed", "--frames", "3", "--engine", "cpu",
                          "--seeds", "0-3", env={**os.environ, "SDL_VIDEODRIVER": "dummy"}, cwd=tmp_path)
    assert p.returncode == 0, p.stderr
