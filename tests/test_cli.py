"""The `gen` command for training and sampling, and the torch-free promise of the runtime."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import run_gen_steps
from gen.runtime.errors import GenError, require_extra

ROOT = Path(__file__).resolve().parents[1]


def gen(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gen.cli", *args], capture_output=True, text=True,
                          timeout=300, **kw)


def test_runtime_install_does_not_pull_torch():
    tomllib = pytest.importorskip("tomllib", reason="tomllib is Python 3.11+")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert not [d for d in project["dependencies"] if d.lower().startswith("torch")]
    assert "torch==2.13.0" in project["optional-dependencies"]["train"]


def test_missing_extra_names_the_extra():
    with pytest.raises(GenError, match=r"pip install 'gen\[train\]'"):
        require_extra("surely_not_a_module_here", "train")


def test_train_bad_inputs_are_one_line_errors(tmp_path):
    nowhere, huge, size, nothing = run_gen_steps(  # in one interpreter; none of them makes the run folder
        ["train", str(tmp_path / "nowhere"), "--out", str(tmp_path / "run"), "--preset", "tiny"],
        ["train", "--out", str(tmp_path / "run"), "--preset", "huge"],
        ["train", "--out", str(tmp_path / "run"), "--resolution", "48"],
        ["train", "--resume", str(tmp_path / "nothing")])
    p = nowhere
    assert p.returncode == 2 and "error: data folder" in p.stderr and "does not exist" in p.stderr
    assert "Traceback" not in p.stderr and not (tmp_path / "run").exists()
    assert huge.returncode == 2 and "unknown preset 'huge'" in huge.stderr
    assert size.returncode == 2 and "power of two" in size.stderr
    assert nothing.returncode == 2 and "no checkpoint" in nothing.stderr


@pytest.mark.slow
def test_train_then_sample_from_the_command_line(tmp_path):
    run = tmp_path / "run"
    grid = tmp_path / "grid.png"
    p, sample = run_gen_steps(["train", "--out", str(run), "--preset", "tiny", "--kimg", "0.04", "--workers", "0"],
                              ["sample", str(run), "--seeds", "0-5", "--psi", "0.5", "--out", str(grid), "--cols", "3"])
    assert p.returncode == 0, p.stderr
    assert "latest grid" in p.stdout and list(run.glob("grid-*.png"))
    assert sample.returncode == 0, sample.stderr
    from PIL import Image

    assert Image.open(grid).size == (3 * 34 + 2, 2 * 34 + 2)  # 32 px pictures, 2 px padding
    before = grid.read_bytes()
    # The refusals in one interpreter: the grid is compared after all three (none may touch it).
    exists, backwards, noise = run_gen_steps(
        ["sample", str(run), "--seeds", "5-1", "--out", str(grid)],
        ["sample", str(run), "--seeds", "5-1", "--out", str(grid), "--overwrite"],
        ["sample", str(run), "--noise-mode", "loud", "--out", str(grid), "--overwrite"])
    assert exists.returncode == 2 and "already exists; pass --overwrite" in exists.stderr
    assert backwards.returncode == 2 and "runs backwards" in backwards.stderr
    assert noise.returncode == 2 and "unknown noise mode" in noise.stderr
    assert grid.read_bytes() == before


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_short_cuda_run_with_mixed_precision(tmp_path):
    p = gen("train", "--out", str(tmp_path / "run"), "--preset", "tiny", "--kimg", "0.1", "--device", "cuda")
    assert p.returncode == 0, p.stderr


@pytest.mark.slow
def test_resume_from_the_command_line_keeps_the_runs_preset(tmp_path):
    run = tmp_path / "run"
    first, p, other = run_gen_steps(  # one interpreter, as each step only reads what the one before wrote
        ["train", "--out", str(run), "--preset", "tiny", "--kimg", "0.016", "--workers", "0"],
        ["train", "--resume", str(run), "--kimg", "0.032", "--workers", "0"],
        ["train", "--resume", str(run), "--preset", "small", "--kimg", "0.048"])
    assert first.returncode == 0, first.stderr
    assert p.returncode == 0, p.stderr
    assert "0.032 kimg" in p.stdout
    assert other.returncode == 2 and "another model config" in other.stderr


def test_old_module_name_still_runs_the_command():
    """Units written by earlier `gen kiosk --install-service` run `python -m gen.runtime.cli`."""
    p = subprocess.run([sys.executable, "-m", "gen.runtime.cli", "info", "--help"], capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 0 and "manifest" in p.stdout


@pytest.mark.skipif(sys.platform != "linux" or os.confstr("CS_GNU_LIBC_VERSION") is None,
                    reason="mallopt is glibc's: elsewhere keep_freed_memory changes nothing")
def test_every_command_sets_glibc_to_keep_freed_memory():
    """gen's CLI keeps freed memory for the next step of any command (see runtime.memory): it is set before the
    command runs, and every setting is one glibc accepts (mallopt answers 0 to one it refuses, and leaves its
    default in place)."""
    code = ("import sys\n"
            "import gen.runtime.memory as m\n"
            "calls = []\n"
            "orig = m.keep_freed_memory\n"
            "m.keep_freed_memory = lambda: calls.append(orig())\n"
            "from gen.cli import main\n"
            "sys.argv = ['gen', 'info', '--help']\n"
            "try:\n"
            "    main()\n"
            "except SystemExit:\n"
            "    pass\n"
            "print(calls)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[-1] == "[True]"
