"""Reading weight files safely (no pickled code) and checking that they fit a backbone, key by key."""

from __future__ import annotations

import pickle
import re
import warnings
from pathlib import Path

import torch

from gen.runtime.errors import GenError

from ..state_dicts import first_non_finite, mismatches
from .base import Backbone

WRAPPER_KEYS = ("state_dict", "model_state_dict", "model")  # common checkpoint layouts around a state dict
PICKLE_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")
ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")  # terminal colour codes, as torch puts in some messages
# torch's safe loader warns about any pickle not written by torch.save, then refuses it or reads it: either way
# read_state_dict says what matters in one line of its own.
warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)


def _first_line(e: BaseException) -> str:
    """An exception's first line, without terminal codes, at most 160 characters."""
    text = ANSI.sub("", str(e)).strip()
    if not text or isinstance(e, LookupError):  # (a KeyError says only the key)
        text = f"{type(e).__name__} {text}".strip()
    return text.splitlines()[0][:160]


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A `.pth`/`.pt` (loaded with weights_only=True) or `.safetensors` file -> {name: tensor}.

    Every way a file can be wrong is one GenError: damaged or foreign files, pickles with code in them,
    anything but a mapping of names to tensors."""
    path = Path(path)
    if not path.is_file():
        raise GenError(f"weights file '{path}' does not exist")
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            state = load_file(str(path))
        except Exception as e:  # SafetensorError (its home differs across versions), OSError, ...
            raise GenError(f"cannot read weights '{path}': not a readable safetensors file, damaged or cut short? "
                           f"({_first_line(e)})") from None
    elif suffix in PICKLE_SUFFIXES:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as e:
            if "weights only load failed" in ANSI.sub("", str(e)).lower():
                raise GenError(f"cannot read weights '{path}': it holds a pickle with code or objects that gen does "
                               "not run; re-save it as a plain state dict (torch.save(model.state_dict(), ...)) or "
                               "as .safetensors") from None
            raise GenError(f"cannot read weights '{path}': not a PyTorch weights file ({_first_line(e)})") from None
        except Exception as e:  # a damaged zip or pickle fails in many ways (RuntimeError, EOFError, ...)
            raise GenError(f"cannot read weights '{path}': damaged or not a PyTorch weights file "
                           f"({_first_line(e)})") from None
    else:
        raise GenError(f"'{path}': weights must be a .pth or .safetensors file")
    for key in WRAPPER_KEYS:
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not state:
        raise GenError(f"'{path}' holds no state dict of tensors")
    if (key := next((k for k in state if not isinstance(k, str)), None)) is not None:
        raise GenError(f"'{path}' holds no state dict of tensors: its key {key!r} is not a parameter name")
    if (key := next((k for k, v in state.items() if not isinstance(v, torch.Tensor)), None)) is not None:
        raise GenError(f"'{path}' holds no state dict of tensors: '{key}' is a {type(state[key]).__name__}")
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
    if (key := first_non_finite(state)) is not None:
        raise GenError(f"'{path}': tensor '{key}' holds NaN or infinite values; the file is damaged (or comes "
                       "from a diverged training run)")
    model.load_state_dict({k: v.float() for k, v in state.items()}, strict=False)
