"""Run by tests under torchrun: trains a micro StyleGAN, then every rank saves its own weights."""

import os
import sys
from pathlib import Path

from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).parent))
from test_training import MICRO, micro_train  # noqa: E402

from gen.train.trainer import train  # noqa: E402

if __name__ == "__main__":
    data, out = Path(sys.argv[1]), Path(sys.argv[2])
    state = train(data, out, MICRO, micro_train(steps=4, batch=4), device="cpu", workers=0)
    rank = int(os.environ["RANK"])
    weights = {f"G.{k}": v for k, v in state.G.state_dict().items()}
    weights |= {f"D.{k}": v for k, v in state.D.state_dict().items()}
    weights |= {f"G_ema.{k}": v for k, v in state.G_ema.state_dict().items()}
    save_file({k: v.contiguous() for k, v in weights.items()}, str(out / f"rank{rank}.safetensors"))
