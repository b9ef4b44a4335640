"""A full disk, a quota, a read-only or forbidden folder: one line naming the output, exit 2, nothing half-written
and no temporary file left; training saves its checkpoint before its pictures and says how to go on."""

from __future__ import annotations

import errno
import json
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import MICRO, SHIPPED, micro_train
from gen.runtime import files
from gen.runtime.errors import GenError, OutputError
from gen.runtime.files import append_text, atomic_path
from gen.runtime.images import save_image
from gen.train import checkpoint as ckpt
from gen.train.trainer import start_or_resume, train

NO_SPACE = OSError(errno.ENOSPC, "No space left on device")


def fill_up(monkeypatch, code: int = errno.ENOSPC, only: str = "") -> None:
    """Path.write_bytes (the atomic writers' write) writes half, then fails as a full disk would."""
    real = Path.write_bytes

    def half_then_full(self: Path, data: bytes) -> int:
        if not self.name.startswith(only):
            return real(self, data)
        real(self, data[: len(data) // 2])
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(Path, "write_bytes", half_then_full)


def one_line(e: BaseException) -> str:
    assert "\n" not in str(e) and isinstance(e, GenError), repr(e)
    return str(e)


@pytest.mark.parametrize("code, says", [
    (errno.ENOSPC, "no space left on the disk; free some space"),
    (errno.EDQUOT, "quota is used up; free some space"),
    (errno.EFBIG, "too large for the file system"),
    (errno.EROFS, "read-only; choose an output on a writable disk"),
    (errno.EACCES, "permission denied; choose an output in a folder you may write to"),
])
def test_an_output_that_cannot_be_written_is_one_line_and_nothing_is_left(tmp_path, monkeypatch, code, says):
    out = tmp_path / "grid.png"
    out.write_bytes(b"the earlier picture")
    fill_up(monkeypatch, code)
    with pytest.raises(OutputError) as caught:
        save_image(out, np.zeros((4, 4, 3), np.uint8))
    assert one_line(caught.value).startswith(f"cannot write '{out}': ") and says in str(caught.value)
    assert isinstance(caught.value, OSError) and caught.value.errno == code  # code that handles OSError still does
    assert out.read_bytes() == b"the earlier picture"
    assert [p.name for p in tmp_path.iterdir()] == ["grid.png"]  # no temporary file


def test_a_refusal_of_another_file_is_not_the_outputs_problem(tmp_path):
    """An input that cannot be read while an output is written (a lazily made video) keeps its own error."""
    with pytest.raises(PermissionError):
        with atomic_path(tmp_path / "walk.gif"):
            raise PermissionError(errno.EACCES, "Permission denied", str(tmp_path / "elsewhere" / "w.npy"))
    with pytest.raises(OutputError, match="no space left"):  # a full disk is, whichever file met it
        with atomic_path(tmp_path / "walk.gif"):
            raise OSError(errno.ENOSPC, "No space left on device", "/tmp/ffmpeg-scratch")
    with pytest.raises(OutputError, match="no space left"):  # imageio-ffmpeg: no errno, ffmpeg's words
        with atomic_path(tmp_path / "walk.mp4"):
            raise OSError("FFMPEG STDERR OUTPUT:\nav_interleaved_write_frame(): No space left on device")
    assert list(tmp_path.iterdir()) == []


def test_a_log_line_is_appended_whole_or_not_at_all(tmp_path, monkeypatch):
    log = tmp_path / "log.jsonl"
    append_text(log, '{"step": 10}\n')
    real, calls = os.write, []

    def part_then_full(fd: int, data) -> int:
        calls.append(len(data))
        if len(calls) == 1:
            return real(fd, bytes(data[:5]))  # a short write, as the disk fills
        raise NO_SPACE

    monkeypatch.setattr(files.os, "write", part_then_full)
    with pytest.raises(OutputError, match="cannot write .*log.jsonl': no space left"):
        append_text(log, '{"step": 20, "loss_G": 0.5}\n')
    assert calls == [28, 23] and log.read_text() == '{"step": 10}\n'  # cut back to the last whole line


def test_a_checkpoint_on_a_full_disk_keeps_the_earlier_one(tmp_path, monkeypatch):
    from safetensors import SafetensorError

    path = tmp_path / ckpt.CHECKPOINT_NAME
    ckpt.save_checkpoint(path, {"x": torch.zeros(3)}, {"counters": {"step": 1}})
    before = path.read_bytes()

    def full(tensors, filename, metadata=None):  # how safetensors 0.8 words it (its own temporary file is gone)
        Path(filename).write_bytes(b"\0" * 10)
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(ckpt, "save_file", full)
    with pytest.raises(OutputError) as caught:
        ckpt.save_checkpoint(path, {"x": torch.ones(3)}, {"counters": {"step": 2}})
    assert one_line(caught.value).startswith(f"cannot write '{path}': no space left on the disk")
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == [path.name]


def test_training_saves_the_checkpoint_before_the_grid_and_says_how_to_go_on(emoji_subset, tmp_path, monkeypatch):
    out = tmp_path / "run"
    fill_up(monkeypatch, only=".grid-")  # (the grid's temporary file) the disk fills as the first grid is written
    with pytest.raises(GenError) as caught:
        train(emoji_subset, out, MICRO, micro_train(steps=2, snapshot_kimg=0.004), device="cpu", workers=0)
    assert one_line(caught.value) == (f"cannot write '{out}/grid-0000.004kimg.png': no space left on the disk; free "
                                      f"some space, then continue from the last checkpoint with --resume {out}")
    assert ckpt.read_meta(out)["counters"]["step"] == 1  # written first, and whole
    assert not [p for p in out.iterdir() if p.name.startswith(".")]
    monkeypatch.undo()  # space freed: the run goes on from its checkpoint
    state = train(emoji_subset, out, MICRO, micro_train(steps=2, snapshot_kimg=0.004), device="cpu", workers=0,
                  resume=True)
    assert state.step == 2 and [json.loads(line)["step"] for line in (out / "log.jsonl").open()] == [2]


def test_a_fresh_start_never_appends_to_an_earlier_runs_log(emoji_subset, tmp_path):
    """A run killed before its first checkpoint left a log and reals.png: a fresh start is refused (outputs are
    never replaced without --overwrite); with --overwrite, that run's files go and the log starts afresh."""
    out = tmp_path / "run"
    out.mkdir()
    (out / "log.jsonl").write_text('{"step": 10, "loss_G": 9.0}\n')
    (out / "reals.png").write_bytes(b"old")
    (out / "notes.txt").write_text("mine")  # not the run's: never deleted
    with pytest.raises(GenError, match=r"holds an earlier run that saved no checkpoint \(log.jsonl, reals.png\); "
                                       "start afresh with --overwrite"):
        train(emoji_subset, out, MICRO, micro_train(steps=1), device="cpu", workers=0)
    assert (out / "log.jsonl").read_text() == '{"step": 10, "loss_G": 9.0}\n'
    with pytest.raises(GenError, match="give only one of them"):
        start_or_resume(None, out, resume=out, overwrite=True)
    train(emoji_subset, out, MICRO, micro_train(steps=1), device="cpu", workers=0, overwrite=True)
    assert [json.loads(line)["step"] for line in (out / "log.jsonl").open()] == [1]
    assert (out / "reals.png").read_bytes() != b"old" and (out / "notes.txt").read_text() == "mine"


# `gen` with a disk that fills at the first picture it writes.
FULL_DISK = """
import errno, os, pathlib, sys
def full(self, data):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
pathlib.Path.write_bytes = full
from gen.cli import main
sys.argv = ['gen'] + sys.argv[1:]
main()
"""


def gen(*args: str, code: str = "from gen.cli import main; main()", file_limit: int | None = None):
    def limit() -> None:  # (in the child) a real EFBIG from the kernel past `file_limit` bytes, as a full disk
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (file_limit, resource.RLIM_INFINITY))

    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120,
                          preexec_fn=limit if file_limit else None)


def error_line(p: subprocess.CompletedProcess) -> str:
    """Exit 2 and one error line (after a finished progress bar, if any), no traceback."""
    errors = [line for line in p.stderr.splitlines() if line.startswith("error:")]
    assert p.returncode == 2 and len(errors) == 1 and "Traceback" not in p.stderr, p.stderr[-3000:]
    assert p.stderr.rstrip().endswith(errors[0])
    return errors[0]


def test_command_line_full_disk_is_one_line_and_exit_2(tmp_path):
    p = gen("sample", str(SHIPPED / "emoji"), "--seeds", "0-3", "--out", str(tmp_path / "grid.png"), code=FULL_DISK)
    assert error_line(p).startswith(f"error: cannot write '{tmp_path / 'grid.png'}': no space left on the disk")
    run = tmp_path / "run"
    p = gen("train", "--out", str(run), "--preset", "tiny", "--resolution", "8", "--batch", "4", "--kimg", "0.008",
            "--workers", "0", "--device", "cpu", code=FULL_DISK)
    assert error_line(p).endswith("reals.png': no space left on the disk; free some space, then run again")
    assert not any(p.name.startswith(".") for p in tmp_path.rglob("*"))


def test_training_past_the_file_size_limit_is_one_line(tmp_path):
    """Real safetensors meeting a real write error (EFBIG: the file-size limit, which needs no root to set)."""
    run = tmp_path / "run"
    p = gen("train", "--out", str(run), "--preset", "tiny", "--resolution", "8", "--batch", "4", "--kimg", "0.008",
            "--workers", "1", "--device", "cpu", file_limit=1_000_000)  # pictures and log fit, the checkpoint not
    assert (f"cannot write '{run / ckpt.CHECKPOINT_NAME}': too large for the file system or the file-size limit "
            "(ulimit -f); fix that, then start again with --overwrite") in error_line(p)
    assert sorted(p.name for p in run.iterdir()) == ["log.jsonl", "reals.png"]  # no temporary file, no grid
    assert [json.loads(line)["step"] for line in (run / "log.jsonl").open()] == [2]
    p = gen("train", "--out", str(run), "--preset", "tiny", "--resolution", "8", "--batch", "4", "--kimg", "0.008",
            "--workers", "1", "--device", "cpu", "--overwrite")  # as the line says, with room again
    assert p.returncode == 0, p.stderr[-2000:]
    assert [json.loads(line)["step"] for line in (run / "log.jsonl").open()] == [2]  # a fresh log
    assert ckpt.read_meta(run)["counters"]["step"] == 2


@pytest.mark.parametrize("suffix", [".gif", ".mp4"])
def test_a_video_past_the_file_size_limit_is_one_line_and_never_cut_short(tmp_path, suffix):
    """Pillow writes a GIF as it closes (and imageio would retry, with a traceback, when collected); ffmpeg quits
    quietly, and imageio-ffmpeg does not look at its exit status: the cut MP4 must not become the output."""
    if suffix == ".mp4":
        pytest.importorskip("imageio_ffmpeg")
    out = tmp_path / f"walk{suffix}"
    p = gen("walk", str(SHIPPED / "emoji"), "--seeds", "0,1", "--seconds", "1", "--fps", "5", "--size", "256",
            "--out", str(out), file_limit=2000)
    assert error_line(p).startswith(f"error: cannot write '{out}': ") and "Exception ignored" not in p.stderr
    assert list(tmp_path.iterdir()) == []


def test_an_mp4_cut_short_is_told_from_a_whole_one(tmp_path):
    pytest.importorskip("imageio_ffmpeg")
    from gen.runtime.video import mp4_is_complete, write_video

    whole = tmp_path / "whole.mp4"
    write_video(whole, [np.full((16, 16, 3), v, np.uint8) for v in range(0, 250, 50)], fps=5)
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(whole.read_bytes()[:-100])
    assert mp4_is_complete(whole) and not mp4_is_complete(cut)


def test_a_full_disk_met_outside_our_writers_is_still_one_line(monkeypatch, capsys):
    """A library writing into a bundle's temporary folder (onnx.save) raises a bare OSError: main says it in a line."""
    import gen.cli as cli

    def full():
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(cli, "app", full)
    with pytest.raises(SystemExit) as exited:
        cli.main()
    assert exited.value.code == 2
    assert capsys.readouterr().err.strip() == ("error: cannot write the output: no space left on the disk; free some "
                                               "space (or write to another disk) and run again")
    monkeypatch.setattr(cli, "app", lambda: open("/surely/not/here"))  # other OSErrors are not ours to hide
    with pytest.raises(FileNotFoundError):
        cli.main()
