"""A checkpoint's metadata is checked where it enters (train/checkpoint.read_meta): whatever a damaged or hostile
file holds there (no model config, sizes that are strings, zero, negative or terabytes large, a resumed run without
its counters or optimiser state) is one line naming the file and the field, from each command that reads one:
gen sample RUN, gen export RUN, gen train --resume RUN."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")

from safetensors import safe_open  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from conftest import MICRO, make_checkpoint  # noqa: E402
from gen.cli import app  # noqa: E402
from gen.runtime.errors import GenError  # noqa: E402
from gen.train.data import SAMPLE_DATA  # noqa: E402


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> Path:
    """A real checkpoint after one training step; its run trains 1 step more when resumed (never for long)."""
    path = make_checkpoint(tmp_path_factory.mktemp("good") / "checkpoint.safetensors", MICRO, steps=1)
    rewrite(path, path, lambda meta: meta["train"].update(kimg=0.008))
    return path


def rewrite(src: Path, dst: Path, change) -> Path:
    """`src`'s tensors with its metadata changed by change(meta), written to `dst` as safetensors does."""
    with safe_open(str(src), framework="pt") as f:
        meta = json.loads(f.metadata()["gen"])
    change(meta)
    save_file(load_file(str(src)), str(dst), metadata={"gen": json.dumps(meta)})
    return dst


def hostile_run(good: Path, folder: Path, change) -> Path:
    """A run folder holding a copy of `good` with its metadata changed by change(meta)."""
    folder.mkdir()
    rewrite(good, folder / "checkpoint.safetensors", change)
    return folder


def refusal(*args: str) -> str:
    """The one-line GenError that `gen ARGS` ends with (the CLI prints it as `error: ...`, status 2)."""
    result = CliRunner().invoke(app, list(args))
    assert isinstance(result.exception, GenError), (args, repr(result.exception), result.output)
    message = str(result.exception)
    assert "\n" not in message
    return message


def model(**fields):
    return lambda meta: meta["model"].update(fields)


MODEL_CASES = {
    "no model": (lambda meta: meta.pop("model"), "'model' is missing"),
    "model a list": (lambda meta: meta.update(model=[16]), "'model' is not a JSON object"),
    "string resolution": (model(resolution="16"), "resolution must be a power of two from 8 to 1024, got '16'"),
    "zero z_dim": (model(z_dim=0), "z_dim must be a whole number from 1 to 2048, got 0"),
    "negative channel_max": (model(channel_max=-32), "channel_max must be a whole number from 1 to 1024, got -32"),
    "zero channel_base": (model(channel_base=0), "channel_base must be a whole number from 1 to"),
    "channel_base below resolution": (model(channel_base=8), "channel_base must be at least the resolution (16)"),
    "float mapping_layers": (model(mapping_layers=2.5), "mapping_layers must be a whole number"),
    "zero mbstd_group": (model(mbstd_group=0), "mbstd_group must be"),
    "NaN lr multiplier": (model(mapping_lr_mul=float("nan")), "mapping_lr_mul must be a number"),
    "huge w_dim": (model(w_dim=10**7), "w_dim must be a whole number from 1 to 2048, got 10000000"),  # 400 TB
    "huge c_dim": (model(c_dim=10**9), "c_dim must be a whole number from 0 to 10000"),
}


@pytest.mark.parametrize("case", MODEL_CASES)
def test_sample_and_export_refuse_a_damaged_model_config_by_file_and_field(good, tmp_path, case):
    change, expected = MODEL_CASES[case]
    run = hostile_run(good, tmp_path / "run", change)
    for args in (["sample", str(run), "--seeds", "0", "-o", str(tmp_path / "s.png")],
                 ["export", str(run), "--out", str(tmp_path / "bundle")]):
        message = refusal(*args)
        assert f"'{run / 'checkpoint.safetensors'}': its metadata" in message and expected in message, message
    assert not (tmp_path / "s.png").exists() and not (tmp_path / "bundle").exists()


def opt_g(change):
    return lambda meta: change(meta["opt_G"]["param_groups"][0])


RESUME_CASES = {
    "no counters": (lambda meta: meta.pop("counters"), "'counters' is missing"),
    "no step": (lambda meta: meta["counters"].pop("step"), "'counters' is not valid: step must be a whole number"),
    "string nimg": (lambda meta: meta["counters"].update(nimg="4"), "nimg must be a whole number from 0"),
    "negative nimg": (lambda meta: meta["counters"].update(nimg=-4), "nimg must be a whole number from 0"),
    "zero world": (lambda meta: meta["counters"].update(world=0), "world must be a whole number from 1"),
    "no opt_G": (lambda meta: meta.pop("opt_G"), "'opt_G' is missing"),
    "opt_D without groups": (lambda meta: meta["opt_D"].pop("param_groups"), "'opt_D.param_groups' is missing"),
    "no train config": (lambda meta: meta.pop("train"), "'train' is missing"),
    "zero batch": (lambda meta: meta["train"].update(batch=0), "batch must be a whole number from 1 to 65536, got 0"),
    "string kimg": (lambda meta: meta["train"].update(kimg="1"), "kimg must be a number"),
    "betas a number": (lambda meta: meta["train"].update(betas=5), "betas must be two numbers"),
    "no data": (lambda meta: meta.pop("data"), "'data' is missing"),
    "negative seed": (lambda meta: meta.update(seed=-1), "'seed' is not valid"),
    "background words": (lambda meta: meta.update(background="white"), "'background' is not three whole numbers"),
    "model too": (model(z_dim="32"), "z_dim must be a whole number"),
}


@pytest.mark.parametrize("case", RESUME_CASES)
def test_resume_refuses_a_damaged_training_state_by_file_and_field(good, tmp_path, case):
    change, expected = RESUME_CASES[case]
    run = hostile_run(good, tmp_path / "run", change)
    before = (run / "checkpoint.safetensors").read_bytes()
    message = refusal("train", "--resume", str(run), "--workers", "0", "--device", "cpu")
    assert f"'{run / 'checkpoint.safetensors'}': its metadata" in message and expected in message, message
    assert sorted(p.name for p in run.iterdir()) == ["checkpoint.safetensors"]  # nothing written
    assert (run / "checkpoint.safetensors").read_bytes() == before


MISFIT_CASES = {  # metadata of the right form whose optimiser state does not fit the model
    "one group too many": lambda meta: meta["opt_G"]["param_groups"].append(meta["opt_G"]["param_groups"][0]),
    "a string learning rate": opt_g(lambda group: group.update(lr="fast")),
    "NaN eps": opt_g(lambda group: group.update(eps=float("nan"))),
    "other parameters": opt_g(lambda group: group.update(params=group["params"][:-1])),
    "betas of three": opt_g(lambda group: group.update(betas=[0.0, 0.9, 0.99])),
}


@pytest.mark.parametrize("case", MISFIT_CASES)
def test_resume_refuses_optimiser_settings_that_do_not_fit(good, tmp_path, case):
    run = hostile_run(good, tmp_path / "run", MISFIT_CASES[case])
    message = refusal("train", str(SAMPLE_DATA), "--resume", str(run), "--workers", "0", "--device", "cpu")
    assert "the checkpoint's opt_G does not fit this model's optimiser" in message, message


def test_resume_refuses_optimiser_tensors_that_do_not_fit(good, tmp_path):
    import torch

    tensors = load_file(str(good))
    with safe_open(str(good), framework="pt") as f:
        metadata = f.metadata()
    key = next(k for k in tensors if k.startswith("opt_D.") and k.endswith(".exp_avg"))
    for name, change in {"wrong shape": lambda t: torch.zeros(3), "no step": None}.items():
        run = tmp_path / name
        run.mkdir()
        damaged = dict(tensors)
        if change is None:
            damaged.pop(key.replace(".exp_avg", ".step"))
        else:
            damaged[key] = change(damaged[key])
        save_file(damaged, str(run / "checkpoint.safetensors"), metadata=metadata)
        message = refusal("train", str(SAMPLE_DATA), "--resume", str(run), "--workers", "0", "--device", "cpu")
        assert "the checkpoint's opt_D does not fit this model's optimiser" in message, (name, message)


def test_the_good_checkpoint_still_resumes_samples_and_exports(good, tmp_path):
    run = hostile_run(good, tmp_path / "run", lambda meta: None)
    result = CliRunner().invoke(app, ["train", str(SAMPLE_DATA), "--resume", str(run), "--workers", "0",
                                      "--device", "cpu"])
    assert result.exit_code == 0, (repr(result.exception), result.output)
    result = CliRunner().invoke(app, ["sample", str(run), "--seeds", "0-1", "-o", str(tmp_path / "s.png")])
    assert result.exit_code == 0 and (tmp_path / "s.png").exists(), (repr(result.exception), result.output)


def test_a_huge_w_dim_is_one_line_from_the_command_line(good, tmp_path):
    """End to end: status 2 and one `error:` line, no MemoryError or traceback."""
    run = hostile_run(good, tmp_path / "run", model(w_dim=2**40))
    p = subprocess.run([sys.executable, "-m", "gen.cli", "sample", str(run), "-o", str(tmp_path / "s.png")],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 2 and p.stderr.startswith("error:") and len(p.stderr.splitlines()) == 1, p.stderr
    assert "w_dim must be a whole number from 1 to 2048" in p.stderr and "checkpoint.safetensors" in p.stderr
