"""Reading weight files safely (no pickled code) and checking that they fit a backbone, key by key."""

from __future__ import annotations

import pickle
from pathlib import Path

import torch

from gen.runtime.errors import GenError

from ..state_dicts import mismatches
from .base import Backbone

WRAPPER_KEYS = ("state_dict", "model_state_dict", "model")  # common checkpoint layouts around a state dict


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A `.pth`/`.pt` (loaded with weights_only=True) or `.safetensors` file -> {name: tensor}."""
    path = Path(path)
    if not path.is_file():
        raise GenError(f"weights file '{path}' does not exist")
    suffix = path.suffix.lower()
    try:
        if suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        elif suffix in (".pth", ".pt", ".bin", ".ckpt"):
            state = torch.load(path, map_location="cpu", weights_only=True)
        else:
            raise GenError(f"'{path}': weights must be a .pth or .safetensors file")
    except GenError:
        raise
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise GenError(f"cannot read weights '{path}' as a plain state dict ({first[:160]})") from None
    for key in WRAPPER_KEYS:
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise GenError(f"'{path}' holds no state dict of tensors")
    return {k.removeprefix("module."): v for k, v in state.items()}


def load_weights(model: Backbone, path: str | Path) -> None:
    """Load a weight file into `model`, or say in one line which keys are missing, unexpected or misshapen."""
    def relevant(key: str) -> bool:
        return not key.endswith("num_batches_tracked") and not key.startswith(model.ignored_keys)

    state = {k: v for k, v in read_state_dict(path).items() if relevant(k)}
    expected = {k: v for k, v in model.state_dict().items() if relevant(k)}
    problems = mismatches(expected, state)
    if problems:
        raise GenError(f"'{path}' does not fit {model.name}: " + "; ".join(problems))
    model.load_state_dict({k: v.float() for k, v in state.items()}, strict=False)
