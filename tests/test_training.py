"""Real (short) training runs: outputs, exact resume, DDP on CPU, interruption, bad input."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import MICRO, micro_train
from gen.runtime.errors import GenError
from gen.train import checkpoint as ckpt
from gen.train.sample import load_generator
from gen.train.trainer import start_or_resume, train


def max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max((a[k].double() - b[k].double()).abs().max().item() if a[k].numel() else 0.0 for k in a)


def test_short_run_writes_grid_checkpoint_and_log(emoji_subset, tmp_path):
    out = tmp_path / "run"
    state = train(emoji_subset, out, MICRO, micro_train(steps=6, snapshot_kimg=0.012), device="cpu", workers=2)
    assert state.step == 6 and state.nimg == 24
    grids = sorted(out.glob("grid-*.png"))
    assert [g.name for g in grids] == ["grid-0000.012kimg.png", "grid-0000.024kimg.png"]
    grid = np.asarray(Image.open(grids[-1]))
    assert grid.shape[0] > 16 * 4 and grid.std() > 1  # a 4x8 grid of 16 px pictures, not blank
    assert (out / "reals.png").exists()
    meta = ckpt.read_meta(out)
    assert meta["counters"] == {"step": 6, "nimg": 24, "world": 1}
    tensors, _ = ckpt.load_checkpoint(out)
    assert {k.split(".")[0] for k in tensors} >= {"G", "D", "G_ema", "augment", "opt_G", "opt_D", "pl_mean"}
    assert not list(out.glob("*.tmp")) and not list(out.glob(".*"))  # atomic writes leave no debris
    lines = (out / "log.jsonl").read_text().splitlines()  # every 10 steps, and at the end
    assert [json.loads(line)["step"] for line in lines] == [6]
    G = load_generator(out)
    assert G(torch.randn(2, MICRO.z_dim), noise_mode="const").shape == (2, 3, 16, 16)


def test_training_moves_the_loss_and_logs(emoji_subset, tmp_path):
    out = tmp_path / "run"
    train(emoji_subset, out, MICRO, micro_train(steps=20), device="cpu", workers=0)
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [10, 20]
    for r in records:
        assert {"loss_G", "loss_D", "r1", "pl", "ada_p", "img_per_s", "kimg"} <= r.keys()
        assert all(np.isfinite(v) for v in r.values())
    assert records[-1]["ada_p"] > 0  # D is sure of the reals quickly: ADA switches augmentation on


def test_resume_equals_straight_run(emoji_subset, tmp_path):
    n = 5  # odd, so a checkpoint lands between lazy-regulariser steps and mid ADA interval
    straight = tmp_path / "straight"

    def cfg(steps: int):
        return micro_train(steps, ada_target=-1.0)  # p rises at every adjust

    train(emoji_subset, straight, MICRO, cfg(2 * n), device="cpu", workers=0)
    split = tmp_path / "split"
    train(emoji_subset, split, MICRO, cfg(n), device="cpu", workers=2)
    train(emoji_subset, split, MICRO, cfg(2 * n), device="cpu", workers=2, resume=True)
    a, meta_a = ckpt.load_checkpoint(straight)
    b, meta_b = ckpt.load_checkpoint(split)
    assert meta_a["counters"] == meta_b["counters"] == {"step": 2 * n, "nimg": 8 * n, "world": 1}
    for part in ("G", "D", "G_ema", "opt_G", "opt_D", "augment", "pl_mean"):
        sub_a = {k: v for k, v in a.items() if k.split(".")[0] == part}
        sub_b = {k: v for k, v in b.items() if k.split(".")[0] == part}
        assert max_diff(sub_a, sub_b) <= 1e-6, part
    assert a["augment.p"].item() > 0


def torchrun(data: Path, out: Path, steps: int, mode: str) -> None:
    worker = Path(__file__).parent / "ddp_worker.py"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(worker),
         str(data), str(out), str(steps), mode], capture_output=True, text=True, timeout=300, env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]


def _busy_rank0_worker(rank: int, init_file: str, wait: bool) -> None:
    """Under a 2 s collective timeout, rank 0 works alone for 4 s (as it measures the metrics), then all sum."""
    from datetime import timedelta

    import torch.distributed as dist

    from gen.train.trainer import Dist

    os.environ.update(WORLD_SIZE="2", RANK=str(rank))
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2,
                            timeout=timedelta(seconds=2))
    procs = Dist("cpu")
    try:
        if rank == 0:
            time.sleep(4)
        if wait:
            procs.wait_for_main()
        assert procs.sum_(torch.ones(1)).item() == 2
    finally:
        procs.close()


@pytest.mark.slow
def test_ranks_wait_for_rank0_longer_than_the_collective_timeout(tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(_busy_rank0_worker, args=(str(tmp_path / "init"), True), nprocs=2)
    with pytest.raises(Exception, match="[Tt]imed out"):  # without the wait, the other rank's sum times out
        mp.spawn(_busy_rank0_worker, args=(str(tmp_path / "init2"), False), nprocs=2)


@pytest.mark.slow
def test_ddp_two_processes_keep_ranks_identical_and_resume_exactly(emoji_subset, tmp_path):
    from safetensors.torch import load_file

    straight, split = tmp_path / "straight", tmp_path / "split"
    torchrun(emoji_subset, straight, 6, "new")
    r0, r1 = load_file(straight / "rank0.safetensors"), load_file(straight / "rank1.safetensors")
    assert max_diff(r0, r1) == 0.0
    meta = ckpt.read_meta(straight)
    assert meta["counters"]["world"] == 2 and meta["counters"]["nimg"] == 24
    assert sorted(p.name for p in straight.glob("rank*")) == ["rank0.safetensors", "rank1.safetensors"]
    # Weights moved away from the shared initialisation: the all-reduced steps did train.
    torch.manual_seed(0)
    from gen.train.stylegan import Generator

    init = Generator(MICRO).state_dict()
    assert max_diff({k: init[k] for k in init}, {k[2:]: v for k, v in r0.items() if k.startswith("G.")}) > 0
    # 3 steps (mid ADA interval), resume, 3 more: the same as 6 straight, on both ranks.
    torchrun(emoji_subset, split, 3, "new")
    torchrun(emoji_subset, split, 6, "resume")
    assert max_diff(load_file(split / "rank0.safetensors"), r0) <= 1e-6
    assert max_diff(load_file(split / "rank1.safetensors"), r1) <= 1e-6
    a, _ = ckpt.load_checkpoint(straight)
    b, _ = ckpt.load_checkpoint(split)
    assert max_diff(a, b) <= 1e-6  # optimiser states and ADA statistics too


def test_empty_and_unreadable_data_fail_before_training(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "run"
    with pytest.raises(GenError, match="no images"):
        train(empty, out, MICRO, micro_train(steps=1), device="cpu", workers=0)
    (empty / "broken.png").write_bytes(b"not a png at all")
    with pytest.raises(GenError, match="can be read"), pytest.warns(UserWarning, match="broken.png"):
        train(empty, out, MICRO, micro_train(steps=1), device="cpu", workers=0)
    assert not out.exists()  # nothing written


def test_checkpoint_of_another_config_is_refused(emoji_subset, tmp_path):
    out = tmp_path / "run"
    train(emoji_subset, out, MICRO, micro_train(steps=1), device="cpu", workers=0)
    before = (out / "checkpoint.safetensors").read_bytes()
    with pytest.raises(GenError, match=r"another model config \(resolution: checkpoint 16, asked 32"):
        start_or_resume(None, out, resume=out, model_overrides={"resolution": 32}, device="cpu", workers=0)
    with pytest.raises(GenError, match="already holds a training run"):
        start_or_resume(emoji_subset, out, preset="tiny", device="cpu", workers=0)
    # A run with another shape pointed at this checkpoint: the mismatch is named, not a raw traceback.
    other = replace(MICRO, channel_max=16)
    with pytest.raises(GenError, match="does not match this model.*keys of the wrong shape"):
        train(emoji_subset, out, other, micro_train(steps=2), device="cpu", workers=0, resume=True)
    assert (out / "checkpoint.safetensors").read_bytes() == before  # nothing overwritten


def test_corrupt_or_foreign_checkpoint_is_a_clear_error(tmp_path):
    bad = tmp_path / "checkpoint.safetensors"
    bad.write_bytes(b"\x00" * 100)
    with pytest.raises(GenError, match="not a readable safetensors checkpoint"):
        load_generator(bad)
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(1)}, str(bad))
    with pytest.raises(GenError, match="not a gen checkpoint"):
        load_generator(bad)
    with pytest.raises(GenError, match="no checkpoint"):
        load_generator(tmp_path / "nowhere")


@pytest.mark.slow
def test_sigint_saves_and_exits_cleanly(emoji_subset, tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-c", "from gen.cli import main; main()", "train", str(emoji_subset),
           "--out", str(out), "--preset", "tiny", "--kimg", "1000", "--workers", "0", "--device", "cpu"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (out / "reals.png").exists() and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(2)  # a few steps
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-2000:]
    meta = ckpt.read_meta(out)
    assert meta["counters"]["step"] > 0
    assert list(out.glob("grid-*.png"))


def test_sigterm_to_the_process_group_saves_and_exits_cleanly(emoji_subset, tmp_path):
    """What `timeout`, systemd's stop and `kill -TERM -- -PGID` do: the data workers get SIGTERM too, and must not
    die of it before the main process has finished its step and saved (exit 0, as the README promises)."""
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "gen.cli", "train", str(emoji_subset), "--out", str(out), "--preset", "tiny",
           "--resolution", "8", "--batch", "4", "--kimg", "1000", "--workers", "2", "--device", "cpu"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        log, deadline = out / "log.jsonl", time.monotonic() + 120
        while not (log.exists() and log.read_text().strip()) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)  # the first log line: 10 steps done, the workers busy
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        os.killpg(proc.pid, signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err[-2000:]
        assert "Traceback" not in err and "killed by signal" not in err
        tensors, meta = ckpt.load_checkpoint(out)
        assert meta["counters"]["step"] >= 10 and tensors
        deadline = time.monotonic() + 10  # the main process took its workers down with it
        while time.monotonic() < deadline:
            try:
                os.killpg(proc.pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
        else:
            pytest.fail("data workers outlived the stopped training")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)


def test_a_stop_request_keeps_a_dying_data_worker_from_aborting_the_step():
    """A worker the stop signal reached before it could ignore it: PyTorch's SIGCHLD handler would raise in the
    middle of the step; once a stop is asked for, SIGCHLD is left alone until the stop is done."""
    from gen.train.trainer import StopFlag

    calls = []

    def torch_like(signum, frame):  # stands in for PyTorch's "DataLoader worker is killed by signal"
        calls.append(signum)

    old = signal.signal(signal.SIGCHLD, torch_like)
    try:
        with StopFlag() as stop:
            signal.raise_signal(signal.SIGTERM)
            assert stop.requested
            subprocess.run([sys.executable, "-c", "pass"], check=True)  # a child ends: SIGCHLD
            time.sleep(0.05)
            assert calls == []
        assert signal.getsignal(signal.SIGCHLD) is torch_like  # put back after the stop
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        time.sleep(0.05)
        assert calls == [signal.SIGCHLD]
    finally:
        signal.signal(signal.SIGCHLD, old)


def test_a_data_worker_that_died_of_the_stop_signal_still_leaves_a_checkpoint(emoji_subset, tmp_path, monkeypatch):
    """If the stop signal killed a worker anyway, the next batch is an error; the state between steps is saved."""
    import gen.train.trainer as trainer

    real = trainer.make_loader

    def dying(*args, **kw):
        batches = real(*args, **kw)
        for _ in range(3):
            yield next(batches)
        signal.raise_signal(signal.SIGTERM)  # the stop, and the worker dead of it
        raise RuntimeError("DataLoader worker (pid(s) 1) exited unexpectedly")

    monkeypatch.setattr(trainer, "make_loader", dying)
    out = tmp_path / "run"
    state = train(emoji_subset, out, MICRO, micro_train(steps=100), device="cpu", workers=0)
    assert state.step == 3 and ckpt.read_meta(out)["counters"]["step"] == 3
