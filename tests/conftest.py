"""Shared test fixtures. `../shared` (beside the checkout) holds real data; tests fall back when it is absent."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest

from gen.train.config import ModelConfig, TrainConfig

if TYPE_CHECKING:
    from gen.runtime.kiosk.producer import FrameProducer

SHARED = Path(os.environ.get("GEN_SHARED", Path(__file__).resolve().parents[2] / "shared"))
EMOJI = SHARED / "data" / "emoji-google-64"
PHOTOS = SHARED / "data" / "photos"
SHIPPED = Path(__file__).resolve().parents[1] / "models"  # the bundles and photo that ship with gen


def needs_shared(path: Path):
    return pytest.mark.skipif(not path.exists(), reason=f"{path} (../shared beside the checkout) is not here")


@pytest.fixture
def emoji_subset(tmp_path) -> Path:
    """24 real emoji (every 150th of the set), linked into a fresh folder; the built-in sample if no ../shared."""
    from gen.train.data import SAMPLE_DATA, find_images

    src = find_images(EMOJI) if EMOJI.is_dir() else find_images(SAMPLE_DATA)
    out = tmp_path / "emoji"
    out.mkdir()
    for p in src[:: max(len(src) // 24, 1)][:24]:
        (out / p.name).symlink_to(p)
    return out


@pytest.fixture(scope="module")
def one_thread():
    """PyTorch on one thread for a module (`pytestmark = pytest.mark.usefixtures("one_thread")`): small images
    gain nothing from threads, and on a busy 2-core machine OpenMP threads that wait for a core make a gradient
    100x slower; one thread keeps the dream tests fast and steady."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ---------------------------------------------------------------------------------------------
# Shared helpers (test modules import them from here, never from each other)

# Two tiny generators, one per variant, small enough to export in seconds.
MODELS = {
    "sg2-16": ModelConfig(resolution=16, z_dim=32, w_dim=32, mapping_layers=2, channel_base=512, channel_max=32),
    "sg1-32": ModelConfig(resolution=32, variant="stylegan1", z_dim=24, w_dim=40, mapping_layers=3,
                          channel_base=512, channel_max=24),
}
MICRO = MODELS["sg2-16"]  # the training tests' model


def micro_train(steps: int, batch: int = 4, **kw) -> TrainConfig:
    """Every phase runs within a few steps: R1 and path length every 2-3 steps, ADA adjusting fast."""
    base = TrainConfig(batch=batch, r1_interval=2, pl_interval=3, ada_interval=2, ada_kimg=0.05, ema_kimg=0.01,
                       snapshot_kimg=1000, kimg=steps * batch / 1000)
    return replace(base, **kw)


def make_checkpoint(path: Path, model: ModelConfig, steps: int) -> Path:
    """A checkpoint after a few real training steps on real images, with noise made to matter."""
    import torch

    from gen.train import checkpoint as ckpt
    from gen.train.data import SAMPLE_DATA, ImageFolder
    from gen.train.trainer import Dist, StyleGANTraining

    state = StyleGANTraining(model, TrainConfig(batch=4, r1_interval=2, pl_interval=2), Dist("cpu"))
    data = ImageFolder(SAMPLE_DATA, model.resolution, check=False)
    for step in range(steps):
        state.train_step(torch.stack([data[4 * step + i] for i in range(4)]))
    with torch.no_grad():
        for layer in state.G_ema.synthesis.layers:  # trained strengths are still ~0 after a few steps
            layer.noise.strength.fill_(0.5)
        state.G_ema.mapping.w_avg.add_(0.3)
    tensors, meta = state.state({"data": "sample"})
    ckpt.save_checkpoint(path, tensors, meta)
    return path


def assert_same_pictures(a: np.ndarray, b: np.ndarray) -> None:
    """uint8 pictures that are the same up to float rounding: other engines, batch sizes, thread counts or
    CPUs sum in other orders, so a value at a .5 rounding tie may land one level apart, and rarely."""
    assert a.shape == b.shape and a.dtype == b.dtype == np.uint8
    diff = np.abs(a.astype(int) - b.astype(int))
    assert diff.max() <= 1 and (diff > 0).mean() < 0.01, (diff.max(), (diff > 0).mean())


def wait_frames(producer: FrameProducer, count: int, timeout: float = 60.0) -> list[np.ndarray]:
    """Take `count` frames from a kiosk's producer as they come (a display never waits like this)."""
    out, deadline = [], time.monotonic() + timeout
    while len(out) < count:
        frame = producer.get()
        if frame is not None:
            out.append(frame)
        elif time.monotonic() > deadline:
            raise TimeoutError(f"{len(out)} of {count} frames in {timeout} s")
        else:
            time.sleep(0.002)
    return out


# `gen` as a runtime-only install runs it: torch, safetensors and onnxscript cannot be imported.
TORCH_BLOCKED = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('torch', 'safetensors', 'onnxscript'):
            raise ImportError('torch is not installed here')
sys.meta_path.insert(0, Block())
from gen.cli import main
sys.argv = ['gen'] + sys.argv[1:]
main()
"""


def gen_without_torch(*args: str, timeout: float = 120, **kw) -> subprocess.CompletedProcess:
    """Run `gen ARGS` as a runtime-only install would (TORCH_BLOCKED); text output captured."""
    return subprocess.run([sys.executable, "-c", TORCH_BLOCKED, *args], capture_output=True, text=True,
                          timeout=timeout, **kw)
