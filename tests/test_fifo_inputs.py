"""A FIFO (or a device) where a picture or a checkpoint is expected is refused in one line, by name, before
anything opens it: opening a FIFO to read waits for a writer, forever. Each command runs in a subprocess with a
timeout (the commands that need torch one after another in one: torch_refusals), so a hang fails the test instead
of hanging it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import SHIPPED, TORCH_BLOCKED, run_gen_steps

PHOTO = SHIPPED / "photos" / "chelsea.jpg"
REFUSED = "is a FIFO (named pipe), not a regular file"


@pytest.fixture(scope="module")
def checkpoint(request) -> Path:
    """A real checkpoint: the session's sg2-16 one (conftest.sg2_16_export), only read."""
    pytest.importorskip("torch")
    return request.getfixturevalue("sg2_16_export")[0]


def fifo(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    os.mkfifo(path)
    return path


def gen(*args: str, torch_free: bool = False, cwd: Path | None = None) -> subprocess.CompletedProcess:
    code = ["-c", TORCH_BLOCKED] if torch_free else ["-m", "gen.cli"]
    return subprocess.run([sys.executable, *code, *args], capture_output=True, text=True, timeout=120, cwd=cwd)


def assert_refused(p: subprocess.CompletedProcess, fifo_path: Path) -> None:
    assert p.returncode == 2, p.stderr
    error = [line for line in p.stderr.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and f"'{fifo_path}' {REFUSED}" in error[0], p.stderr
    assert "Traceback" not in p.stderr


FIFO_CHECKPOINT = ["sample file", "sample run", "export", "resume"]


@pytest.fixture(scope="module")
def torch_refusals(checkpoint, tmp_path_factory) -> dict:
    """case: (the FIFO, its folder, what `gen` said) for the commands that need torch: `gen dream` with a FIFO as
    --mask or --guide, `gen project` of a FIFO photo, and each of FIFO_CHECKPOINT; in one interpreter (with the
    timeout of all of them: a hang still fails the tests)."""
    cases = {}
    for where in ("mask", "guide"):  # (a guide is the PyTorch engine's)
        tmp_path = tmp_path_factory.mktemp("dream")
        pipe = fifo(tmp_path / "pipe.png")
        cases[f"dream {where}"] = pipe, tmp_path, ["dream", str(PHOTO), f"--{where}", str(pipe), "-o",
                                                  str(tmp_path / "o.png"), "--octaves", "1", "--iterations", "1"]
    tmp_path = tmp_path_factory.mktemp("project")
    pipe = fifo(tmp_path / "pipe.png")
    cases["project"] = pipe, tmp_path, ["project", str(pipe), "--checkpoint", str(checkpoint), "--out",
                                        str(tmp_path / "out"), "--device", "cpu"]
    for command in FIFO_CHECKPOINT:
        tmp_path = tmp_path_factory.mktemp("checkpoint")
        pipe = fifo(tmp_path / ("run/checkpoint.safetensors" if command in ("sample run", "resume")
                                else "pipe.safetensors"))
        cases[command] = pipe, tmp_path, {
            "sample file": ["sample", str(pipe), "-o", str(tmp_path / "s.png")],
            "sample run": ["sample", str(pipe.parent), "-o", str(tmp_path / "s.png")],
            "export": ["export", str(pipe), "--out", str(tmp_path / "bundle")],
            "resume": ["train", "--resume", str(pipe.parent), "--workers", "0"]}[command]
    done = run_gen_steps(*(args for _, _, args in cases.values()), timeout=120 * len(cases))
    return {case: (pipe, folder, p) for (case, (pipe, folder, _)), p in zip(cases.items(), done)}


@pytest.mark.parametrize("where", ["image", "mask", "guide"])
def test_gen_dream_refuses_a_fifo_picture(request, tmp_path, where):
    if where == "image":
        pipe = fifo(tmp_path / "pipe.png")
        args = [str(pipe), "--bundle", str(SHIPPED / "dream-lite0")]
        p = gen("dream", *args, "-o", str(tmp_path / "o.png"), torch_free=True)
    else:  # (a guide is the PyTorch engine's: torch_refusals)
        pipe, tmp_path, p = request.getfixturevalue("torch_refusals")[f"dream {where}"]
    assert_refused(p, pipe)
    assert not (tmp_path / "o.png").exists()


def test_gen_kiosk_refuses_a_fifo_photo(tmp_path):
    pipe = fifo(tmp_path / "pipe.jpg")
    p = gen("kiosk", str(SHIPPED / "dream-lite0"), "--photo", str(pipe), "--serve", "--port", "0", "--engine", "cpu",
            torch_free=True)
    assert_refused(p, pipe)  # (the log line before it says it skipped the photo)


def test_gen_project_refuses_a_fifo_photo(torch_refusals):
    pipe, tmp_path, p = torch_refusals["project"]
    assert_refused(p, pipe)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("command", FIFO_CHECKPOINT)
def test_a_fifo_checkpoint_is_refused(torch_refusals, command):
    pipe, _, p = torch_refusals[command]
    assert_refused(p, pipe)


def test_training_skips_a_fifo_among_its_images(tmp_path):
    """ImageFolder decodes every file once at the start: a FIFO there is one skipped file, not a hang."""
    pytest.importorskip("torch")
    data = tmp_path / "data"
    data.mkdir()
    for i in range(2):
        Image.fromarray(np.full((16, 16, 3), 60 * i, np.uint8)).save(data / f"{i}.png")
    pipe = fifo(data / "pipe.png")
    code = ("import sys, warnings; from gen.train.data import ImageFolder; warnings.simplefilter('always'); "
            "print(len(ImageFolder(sys.argv[1], 16)))")
    p = subprocess.run([sys.executable, "-c", code, str(data)], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and p.stdout.strip() == "2", p.stderr
    assert f"skipping '{pipe}' {REFUSED}" in p.stderr
