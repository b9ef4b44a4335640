"""One policy for every command that writes (runtime/files.check_output_path): an existing output is replaced only
with --overwrite, and something that is not a regular file (a FIFO, a device node) never is, --overwrite or not.
FIFOs stand in for device nodes: no root needed, and nothing real is touched."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import MICRO, SHIPPED, gen_without_torch, make_checkpoint
from gen.runtime.errors import GenError
from gen.runtime.files import check_output_path, write_text_atomic
from gen.runtime.images import load_image, save_image

PHOTO = SHIPPED / "photos" / "chelsea.jpg"
EMOJI = str(SHIPPED / "emoji")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    pytest.importorskip("torch")
    return make_checkpoint(tmp_path_factory.mktemp("outputs") / "checkpoint.safetensors", MICRO, steps=1)


def gen(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gen.cli", *args], capture_output=True, text=True, timeout=300)


def assert_one_line(p: subprocess.CompletedProcess, expected: str) -> None:
    assert p.returncode == 2, p.stderr
    assert p.stderr.startswith("error:") and len(p.stderr.splitlines()) == 1 and expected in p.stderr, p.stderr


def is_fifo(path: Path) -> bool:
    return stat.S_ISFIFO(os.stat(path).st_mode)


def test_forgetting_overwrite_is_the_safe_way_round(tmp_path):
    kept = tmp_path / "kept.png"
    kept.write_bytes(b"keep me")
    with pytest.raises(GenError, match="already exists; pass --overwrite"):
        check_output_path(kept)  # (the default: a caller that forgets the option replaces nothing)
    assert check_output_path(kept, overwrite=True) == kept


def test_gen_metrics_replaces_its_out_only_with_overwrite(emoji_subset, tmp_path):
    pytest.importorskip("torch")
    out = tmp_path / "m.json"
    out.write_text("keep me")
    args = ["metrics", "--data", str(emoji_subset), "--num", "6", "--real-floor", "--metric", "fid_lite0",
            "--device", "cpu", "--out", str(out)]
    assert_one_line(gen(*args), f"'{out}' already exists; pass --overwrite")
    assert out.read_text() == "keep me"
    p = gen(*args, "--overwrite")
    assert p.returncode == 0, p.stderr
    assert json.loads(out.read_text())["num"] == 6


def test_gen_kiosk_replaces_a_unit_file_only_with_overwrite(tmp_path):
    unit = tmp_path / "kiosk.service"
    unit.write_text("keep me")
    args = ["kiosk", EMOJI, "--serve", "--install-service", "--unit", str(unit)]
    assert_one_line(gen_without_torch(*args), f"'{unit}' already exists; pass --overwrite")
    assert unit.read_text() == "keep me"
    p = gen_without_torch(*args, "--overwrite")
    assert p.returncode == 0, p.stderr
    exec_start = next(line for line in unit.read_text().splitlines() if line.startswith("ExecStart="))
    assert exec_start.endswith(f"kiosk {EMOJI} --serve")  # the install options are not the kiosk's


def test_gen_project_replaces_an_earlier_projections_files_only_with_overwrite(checkpoint, tmp_path):
    out = tmp_path / "projection"
    out.mkdir()
    (out / "projected.png").write_bytes(b"keep me")  # (no w.npy: a folder half copied, or of other pictures)
    args = ["project", str(PHOTO), "--checkpoint", str(checkpoint), "--out", str(out), "--steps", "2",
            "--device", "cpu"]
    assert_one_line(gen(*args), f"'{out / 'projected.png'}' already exists; pass --overwrite")
    assert sorted(p.name for p in out.iterdir()) == ["projected.png"]
    assert (out / "projected.png").read_bytes() == b"keep me"
    p = gen(*args, "--overwrite")
    assert p.returncode == 0, p.stderr
    assert load_image(out / "projected.png").shape == (16, 16, 3)


FIFO_OUTPUTS = {  # command line, with {fifo} for the output that is a FIFO; its name ends as a picture's would
    "sample": ("torch-free", ["sample", EMOJI, "--seeds", "0", "-o", "{fifo}"], "grid.png"),
    "sample --outdir": ("torch-free", ["sample", EMOJI, "--seeds", "0", "-o", "{dir}/grid.png", "--outdir", "{dir}"],
                        "seed0000.png"),
    "mix": ("torch-free", ["mix", EMOJI, "--rows", "1", "--cols", "2", "-o", "{fifo}"], "mix.png"),
    "walk": ("torch-free", ["walk", EMOJI, "--seeds", "3,17", "--seconds", "0.5", "--fps", "4", "-o", "{fifo}"],
             "walk.gif"),
    "dream": ("torch-free", ["dream", str(PHOTO), "--bundle", str(SHIPPED / "dream-lite0"), "-o", "{fifo}"],
              "dream.png"),
    "kiosk unit": ("torch-free", ["kiosk", EMOJI, "--serve", "--install-service", "--unit", "{fifo}"],
                   "kiosk.service"),
    "metrics": ("torch", ["metrics", "--data", str(SHIPPED / "photos"), "--real-floor", "--out", "{fifo}"],
                "metrics.json"),
    "project": ("torch", ["project", str(PHOTO), "--checkpoint", "{checkpoint}", "--out", "{dir}", "--steps", "1",
                          "--device", "cpu"], "projected.png"),
}


@pytest.mark.parametrize("case", FIFO_OUTPUTS)
def test_an_output_that_is_no_regular_file_is_never_replaced(request, tmp_path, case):
    kind, args, name = FIFO_OUTPUTS[case]
    fill = {"dir": str(tmp_path), "fifo": str(tmp_path / name)}
    if kind == "torch":
        fill["checkpoint"] = str(request.getfixturevalue("checkpoint"))
    os.mkfifo(tmp_path / name)
    args = [a.format(**fill) for a in args] + ["--overwrite"]
    p = gen(*args) if kind == "torch" else gen_without_torch(*args)
    assert p.returncode == 2, p.stderr
    assert f"'{tmp_path / name}' is a FIFO (named pipe), not a regular file" in p.stderr, p.stderr
    assert "Traceback" not in p.stderr
    assert is_fifo(tmp_path / name)


def test_the_writers_themselves_refuse_what_is_no_regular_file(tmp_path):
    """What no command checked first (a run's pictures and log, a kiosk's saved frame) is refused where it is
    written. append_text runs in a subprocess: opening a FIFO to write waits for a reader."""
    for name, write in (("a.png", lambda p: save_image(p, np.zeros((4, 4, 3), np.uint8))),
                        ("a.json", lambda p: write_text_atomic(p, "{}"))):
        os.mkfifo(tmp_path / name)
        with pytest.raises(GenError, match="is a FIFO"):
            write(tmp_path / name)
        assert is_fifo(tmp_path / name)
    os.mkfifo(tmp_path / "log.jsonl")
    code = ("import sys\nfrom gen.runtime.errors import GenError\nfrom gen.runtime.files import append_text\n"
            "try:\n    append_text(sys.argv[1], '{}\\n')\nexcept GenError as e:\n    print(e)")
    p = subprocess.run([sys.executable, "-c", code, str(tmp_path / "log.jsonl")], capture_output=True, text=True,
                       timeout=60)
    assert "log.jsonl' is a FIFO (named pipe), not a regular file" in p.stdout, p.stdout + p.stderr
