"""`gen import` of stylegan2-ada-pytorch pickles: the imported run and its bundle draw NVlabs' own pictures.

tests/data/nvlabs/ holds data only (README.md there says how NVlabs' code made it): the weights of random StyleGAN2
Gs and Ds (FP16 layers, conv_clamp 256, a clamp that fires; 32 px unconditional, 16 px with 5 classes), the
pictures NVlabs drew from them and D's logits. Each test builds the network pickle itself, every module's source
a payload that leaves a marker file if it ran (it never may)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from import_checks import assert_run_computes_reference
from nvlabs_fakes import FakeEasyDict, dump_nvlabs, payload, persistent_network
from safetensors.torch import load_file

from conftest import assert_import_round_trip, assert_same_pictures, import_each, read_sampled, sample_args
from conftest import run_gen as gen
from conftest import run_gen_steps as gen_steps
from gen.runtime.errors import GenError
from gen.train import checkpoint as ckpt
from gen.train.config import ModelConfig
from gen.train.importers import import_model
from gen.train.sample import generate, load_generator

DATA = Path(__file__).parent / "data" / "nvlabs"
SEEDS = [0, 1, 2, 3]


def reference(name: str = "sg2ada-32") -> dict[str, np.ndarray]:
    with np.load(DATA / f"{name}-pictures.npz") as f:
        return dict(f)


def snapshot(change: dict | None = None, drop: tuple[str, ...] = (), extra: dict | None = None,
             name: str = "sg2ada-32") -> dict:
    """The networks as NVlabs' training loop pickles them: G, D, G_ema, augment_pipe, training_set_kwargs.
    `change` overrides construction arguments by network ({"G_ema": {"c_dim": 10}}); `drop` leaves networks out."""
    tensors = {k: v.float() for k, v in load_file(DATA / f"{name}.safetensors").items()}
    spec = json.loads((DATA / f"{name}.json").read_text())
    spec["G"] = spec["G_ema"]
    data = {}
    for net in ("G", "D", "G_ema"):
        if net not in drop:
            kwargs = {**spec[net]["init_kwargs"], **(change or {}).get(net, {})}
            own = ckpt.subdict(tensors, "D" if net == "D" else "G_ema")
            data[net] = persistent_network(spec[net]["class_name"], kwargs, own)
    return data | {"augment_pipe": None, "training_set_kwargs": FakeEasyDict(path="x.zip", resolution=32)} | (
        extra or {})


def one_line_error(p: subprocess.CompletedProcess, *words: str) -> None:
    assert p.returncode == 2, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), p.stderr
    for word in words:
        assert word in lines[0], lines[0]


@pytest.mark.slow
def test_imported_run_and_its_bundle_draw_nvlabs_pictures(tmp_path, marker):
    pkl = dump_nvlabs(tmp_path / "network-snapshot-000100.pkl", snapshot(), payload(marker))
    words = ("stylegan2-ada", "32x32, 3 channels", "2 layers, z 32 -> w 32, lr multiplier 0.01", "conv_clamp 256",
             "top 4 resolutions in FP16", "unconditional", "G_ema 66,723", "D 72,561",
             "optimiser and augmentation state")
    run = assert_import_round_trip(pkl, tmp_path, words, reference(), SEEDS)
    meta = ckpt.read_meta(run)
    assert meta["imported"]["file"] == pkl.name and meta["model"]["conv_clamp"] == 256

    again, overwritten = gen_steps(["import", str(pkl), "--out", str(run)],
                                   ["import", str(pkl), "--out", str(run), "--overwrite"])
    one_line_error(again, "already holds a run", "--overwrite")
    assert overwritten.returncode == 0


def test_imported_networks_compute_what_nvlabs_computes(tmp_path, marker):
    """G_ema's pictures (in-process, no export), D's logits, and that the data make conv_clamp matter."""
    pkl = dump_nvlabs(tmp_path / "snapshot.pkl", snapshot(), payload(marker))
    found = import_model(pkl, tmp_path / "run")
    ref = reference()
    G, _ = assert_run_computes_reference(tmp_path / "run", ref, SEEDS)
    assert G.cfg.conv_clamp == 256 and found.num_fp16_res == 4
    for layer in [*G.synthesis.layers, *G.synthesis.torgbs]:
        layer.conv_clamp = None
    unclamped = generate(G, SEEDS, 1.0, noise_mode="const")
    off = int(np.abs(unclamped.astype(int) - ref["psi1.0"]).max())
    assert off > 3, off  # the data exercise the clamp: without it, pictures are further off than the tolerance


def test_class_conditional_model_draws_nvlabs_pictures_of_each_class(tmp_path, marker):
    """A one-hot class as NVlabs' generate.py builds it, embedded beside z; its D (a projection D) is left out."""
    pkl = dump_nvlabs(tmp_path / "cifar-like.pkl", snapshot(name="sg2ada-16-cond"), payload(marker))
    run = tmp_path / "run"
    p, drawn, no_class, bad_class = gen_steps(  # the four commands in one interpreter
        ["import", str(pkl), "--out", str(run)], sample_args(run, 0.7, tmp_path / "cli", SEEDS, "--class", "3"),
        ["sample", str(run), "--seeds", "0-3", "--out", str(tmp_path / "a.png")],
        ["sample", str(run), "--class", "5", "--out", str(tmp_path / "a.png")])
    assert p.returncode == 0, p.stderr
    assert "5 (gen sample RUN --class 0..4)" in p.stdout and "a usable D (it is class-conditional" in p.stdout
    ref = reference("sg2ada-16-cond")
    G = load_generator(run)
    for psi in (1.0, 0.7):
        for c in (0, 3):
            assert_same_pictures(generate(G, SEEDS, psi, noise_mode="const", class_idx=c),
                                 ref[f"psi{psi:.1f}-class{c}"])
    assert_same_pictures(read_sampled(drawn, tmp_path / "cli", SEEDS), ref["psi0.7-class3"])
    one_line_error(no_class, "class-conditional (5 classes)", "--class 0..4")
    one_line_error(bad_class, "out of range")
    assert not (tmp_path / "a.png").exists()  # (its bundle: tests/test_conditional_bundle.py)


def test_a_file_without_g_or_d_is_imported_and_says_so(tmp_path, marker):
    found = import_model(dump_nvlabs(tmp_path / "a.pkl", snapshot(drop=("G", "D")), payload(marker)),
                         tmp_path / "run")
    assert any(item.startswith("D ") for item in found.lacks) and any(item.startswith("G ") for item in found.lacks)
    assert set(found.parameters) == {"G_ema"}
    tensors, _ = ckpt.load_checkpoint(tmp_path / "run")
    assert not any(k.startswith(("G.", "D.")) for k in tensors)
    change = {"D": {"epilogue_kwargs": {"mbstd_group_size": 4, "mbstd_num_channels": 2}}}
    found = import_model(dump_nvlabs(tmp_path / "b.pkl", snapshot(change), payload(marker)), tmp_path / "run2")
    assert any("minibatch stddev has 2 channels" in item for item in found.lacks) and "D" not in found.parameters


@pytest.mark.parametrize("change, words", [
    ({"synthesis_kwargs": {"architecture": "resnet"}}, "'resnet' synthesis architecture"),
    ({"synthesis_kwargs": {"architecture": "orig"}}, "'orig' synthesis architecture"),
    ({"c_dim": 5, "mapping_kwargs": {"embed_features": 8}}, "8 label-embedding features"),
    ({"img_channels": 1}, "1 image channels"),
    ({"synthesis_kwargs": {"resample_filter": [1, 2, 1]}}, "resampling filter [1, 2, 1]"),
    ({"mapping_kwargs": {"activation": "relu"}}, "activations"),
    ({"mapping_kwargs": {"num_layers": 3}}, "no tensor 'mapping.fc2.weight'"),
    ({"img_resolution": 4}, "power of two"),
])
def test_what_gen_cannot_represent_is_refused_in_one_line(tmp_path, marker, change, words):
    pkl = dump_nvlabs(tmp_path / "x.pkl", snapshot({"G": change, "G_ema": change}), payload(marker))
    with pytest.raises(GenError) as e:
        import_model(pkl, tmp_path / "run")
    assert "\n" not in str(e.value) and words in str(e.value) and str(pkl) in str(e.value), str(e.value)
    assert not (tmp_path / "run").exists()


def test_leftover_tensors_and_a_damaged_stylegan3_are_refused(tmp_path, marker):
    """A tensor with no place in ours; a synthesis shaped like StyleGAN3's (which imports: tests/test_stylegan3*.py)
    but built with StyleGAN2's arguments goes to the StyleGAN3 converter, which refuses them in one line."""
    data = snapshot()
    data["G_ema"].synthesis.b8.add_module("skip", persistent_network("Conv2dLayer", {}, {
        "weight": torch.zeros(32, 32, 1, 1)}))
    with pytest.raises(GenError, match=r"1 tensor\(s\) gen has no place for \(synthesis.b8.skip.weight\)"):
        import_model(dump_nvlabs(tmp_path / "a.pkl", data, payload(marker)), tmp_path / "run")
    data = snapshot(drop=("G", "D"))
    data["G_ema"].synthesis = persistent_network("SynthesisNetwork", {}, {
        "input.freqs": torch.zeros(4, 2), "L0_36_512.weight": torch.zeros(1)})
    with pytest.raises(GenError, match=r"G_ema was built with 'synthesis_kwargs', which gen does not know"):
        import_model(dump_nvlabs(tmp_path / "b.pkl", data, payload(marker)), tmp_path / "run")


class Call:
    def __init__(self, fn, *args) -> None:
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


class Custom:
    """A class of the file's own, outside the allow-list."""


HOSTILE = ["system", "eval", "custom", "resnet"]


def hostile_pickle(hostile: str, folder: Path) -> Path:
    """A pickle of the kind `hostile` in `folder`, whose payloads leave the file `ran` there if they ever run."""
    marker = folder / "ran"
    extra = {"system": {"progress": Call(os.system, f"touch {marker}")},
             "eval": {"progress": [Call(eval, f"open({str(marker)!r}, 'w')")]},
             "custom": {"progress": Custom()}}.get(hostile)
    change = {"G_ema": {"synthesis_kwargs": {"architecture": "resnet"}}} if hostile == "resnet" else None
    return dump_nvlabs(folder / "hostile.pkl", snapshot(change, extra=extra), payload(marker))


@pytest.fixture(scope="module")
def hostile_imports(tmp_path_factory) -> dict:
    """kind: (pickle, its folder, `gen import` of it) for each of HOSTILE, the commands in one interpreter."""
    return import_each(tmp_path_factory, HOSTILE, hostile_pickle)


@pytest.mark.parametrize("hostile", HOSTILE)
def test_hostile_and_foreign_files_through_gen_import(hostile_imports, hostile):
    """Nothing runs: the module sources (payloads) stay strings, a call to os.system or eval and a foreign class are
    refused by name before they are called, an architecture gen lacks is named; one line each, no run written."""
    pkl, tmp_path, p = hostile_imports[hostile]
    words = {"system": f"{os.system.__module__}.system", "eval": "builtins.eval",
             "custom": f"{Custom.__module__}.Custom", "resnet": "'resnet' synthesis architecture"}[hostile]
    one_line_error(p, str(pkl), words)
    assert not (tmp_path / "run").exists()
    assert not (tmp_path / "ran").exists(), "code from the file ran"


def test_conv_clamp_must_be_positive():
    with pytest.raises(GenError, match="conv_clamp must be positive"):
        ModelConfig(conv_clamp=0)


@pytest.mark.slow
def test_fine_tuning_an_imported_model_runs_saves_and_resumes(tmp_path, marker):
    """Transfer learning: gen train DATA --resume RUN on an import trains G, G_ema and D from its weights on 64
    emoji, keeps the imported weights beside the new checkpoint, and is then an ordinary run that resumes."""
    from gen.train.data import SAMPLE_DATA
    from gen.train.trainer import RunFolder

    IMPORTED_COPY = RunFolder.IMPORTED_COPY

    data = tmp_path / "emoji64"
    data.mkdir()
    for png in sorted(SAMPLE_DATA.glob("*.png"))[:64]:
        (data / png.name).write_bytes(png.read_bytes())
    run = tmp_path / "run"
    import_model(dump_nvlabs(tmp_path / "a.pkl", snapshot(), payload(marker)), run)
    imported, _ = ckpt.load_checkpoint(run)
    args = ["--batch", "8", "--snapshot-kimg", "0.008", "--workers", "0"]

    p = gen("train", str(data), "--resume", str(run), "--kimg", "0.016", *args)

    assert p.returncode == 0, p.stderr
    tensors, meta = ckpt.load_checkpoint(run)
    assert meta["counters"]["nimg"] >= 16 and meta["imported"]["file"] == "a.pkl" and "train" in meta
    assert meta["model"] == ckpt.read_meta(run / IMPORTED_COPY)["model"]
    kept, _ = ckpt.load_checkpoint(run / IMPORTED_COPY)
    assert all(torch.equal(kept[k], v) for k, v in imported.items())  # the import, unchanged
    for net in ("G.", "G_ema.", "D."):  # every network trained on from the imported weights: moved, a little
        names = [k for k in tensors if k.startswith(net) and k.endswith("weight")]
        change = sum(float((tensors[k] - imported[k]).square().sum()) for k in names)
        size = sum(float(imported[k].square().sum()) for k in names)
        assert 0 < change < 1e-2 * size, (net, change, size)
    assert sorted(run.glob("grid-*.png"))

    p = gen("train", "--resume", str(run), "--kimg", "0.032", *args)
    assert p.returncode == 0, p.stderr
    _, again = ckpt.load_checkpoint(run)
    assert again["counters"]["nimg"] >= 32 and again["counters"]["step"] > meta["counters"]["step"]


def test_fine_tuning_what_it_cannot_is_one_line(tmp_path, marker):
    from gen.train.trainer import start_or_resume

    run = tmp_path / "run"
    import_model(dump_nvlabs(tmp_path / "a.pkl", snapshot(drop=("D",)), payload(marker)), run)
    with pytest.raises(GenError, match="needs a folder of images"):
        start_or_resume(None, run, resume=run)
    with pytest.raises(GenError, match="has no discriminator .* give --fresh-d"):
        start_or_resume(tmp_path, run, resume=run)
    with pytest.raises(GenError, match="architecture is fixed"):
        start_or_resume(tmp_path, run, resume=run, model_overrides={"resolution": 64})
    cond = tmp_path / "cond"
    import_model(dump_nvlabs(tmp_path / "c.pkl", snapshot(name="sg2ada-16-cond"), payload(marker)), cond)
    with pytest.raises(GenError, match="class-conditional"):
        start_or_resume(tmp_path, cond, resume=cond)
    with pytest.raises(GenError, match="--fresh-d is for fine-tuning"):
        start_or_resume(tmp_path, tmp_path / "new", fresh_d=True)
    assert not (run / "imported.safetensors").exists()
    again = tmp_path / "again"  # a new import over a fine-tuned run takes its kept copy away too
    import_model(dump_nvlabs(tmp_path / "b.pkl", snapshot(), payload(marker)), again)
    (again / "imported.safetensors").write_bytes(b"stale")
    import_model(dump_nvlabs(tmp_path / "b.pkl", snapshot(), payload(marker)), again, overwrite=True)
    assert not (again / "imported.safetensors").exists()
