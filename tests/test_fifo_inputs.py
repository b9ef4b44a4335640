"""A FIFO (or a device) where a picture or a checkpoint is expected is refused in one line, by name, before
anything opens it: opening a FIFO to read waits for a writer, forever. Each command runs in a subprocess with a
timeout, so a hang fails the test instead of hanging it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import MICRO, SHIPPED, TORCH_BLOCKED, make_checkpoint

PHOTO = SHIPPED / "photos" / "chelsea.jpg"
REFUSED = "is a FIFO (named pipe), not a regular file"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    pytest.importorskip("torch")
    return make_checkpoint(tmp_path_factory.mktemp("fifo") / "checkpoint.safetensors", MICRO, steps=1)


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


@pytest.mark.parametrize("where", ["image", "mask", "guide"])
def test_gen_dream_refuses_a_fifo_picture(tmp_path, where):
    pipe = fifo(tmp_path / "pipe.png")
    if where == "image":
        args = [str(pipe), "--bundle", str(SHIPPED / "dream-lite0")]
        p = gen("dream", *args, "-o", str(tmp_path / "o.png"), torch_free=True)
    else:  # (a guide is the PyTorch engine's)
        pytest.importorskip("torch")
        p = gen("dream", str(PHOTO), f"--{where}", str(pipe), "-o", str(tmp_path / "o.png"), "--octaves", "1",
                "--iterations", "1")
    assert_refused(p, pipe)
    assert not (tmp_path / "o.png").exists()


def test_gen_kiosk_refuses_a_fifo_photo(tmp_path):
    pipe = fifo(tmp_path / "pipe.jpg")
    p = gen("kiosk", str(SHIPPED / "dream-lite0"), "--photo", str(pipe), "--serve", "--port", "0", "--engine", "cpu",
            torch_free=True)
    assert_refused(p, pipe)  # (the log line before it says it skipped the photo)


def test_gen_project_refuses_a_fifo_photo(checkpoint, tmp_path):
    pipe = fifo(tmp_path / "pipe.png")
    p = gen("project", str(pipe), "--checkpoint", str(checkpoint), "--out", str(tmp_path / "out"), "--device", "cpu")
    assert_refused(p, pipe)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("command", ["sample file", "sample run", "export", "resume"])
def test_a_fifo_checkpoint_is_refused(tmp_path, command):
    pytest.importorskip("torch")
    pipe = fifo(tmp_path / ("run/checkpoint.safetensors" if command in ("sample run", "resume")
                            else "pipe.safetensors"))
    args = {"sample file": ["sample", str(pipe), "-o", str(tmp_path / "s.png")],
            "sample run": ["sample", str(pipe.parent), "-o", str(tmp_path / "s.png")],
            "export": ["export", str(pipe), "--out", str(tmp_path / "bundle")],
            "resume": ["train", "--resume", str(pipe.parent), "--workers", "0"]}[command]
    assert_refused(gen(*args), pipe)


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
