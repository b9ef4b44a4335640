"""Run by tests under torchrun: trains (or resumes) a micro StyleGAN, then every rank saves its own weights.

    ddp_worker.py DATA OUT STEPS new|resume
"""

import os
import sys
from pathlib import Path

from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).parent))
from conftest import MICRO, micro_train  # noqa: E402
from gen.train.trainer import train  # noqa: E402

if __name__ == "__main__":
    data, out, steps, resume = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "resume"
    cfg = micro_train(steps=steps, batch=4, ada_target=-1.0)  # ADA on from the start: its stats cross ranks
    state = train(data, out, MICRO, cfg, device="cpu", workers=0, resume=resume)
    rank = int(os.environ["RANK"])
    weights = {f"G.{k}": v for k, v in state.G.state_dict().items()}
    weights |= {f"D.{k}": v for k, v in state.D.state_dict().items()}
    weights |= {f"G_ema.{k}": v for k, v in state.G_ema.state_dict().items()}
    save_file({k: v.contiguous() for k, v in weights.items()}, str(out / f"rank{rank}.safetensors"))
