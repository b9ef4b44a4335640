"""Training checkpoints: one safetensors file, never a pickle.

Every tensor (G, D, G_ema, optimiser states, augmentation state, RNG state) is a safetensors
tensor; config and counters are JSON in the file's metadata, so the whole checkpoint is written
with one atomic rename and can never be half old, half new.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from gen.runtime.errors import GenError
from gen.runtime.files import atomic_path

from .state_dicts import first_non_finite, mismatches

FORMAT = "gen-stylegan-checkpoint"
VERSION = 1
CHECKPOINT_NAME = "checkpoint.safetensors"


def optimizer_tensors(opt: torch.optim.Optimizer, prefix: str) -> tuple[dict[str, torch.Tensor], dict]:
    """Split an optimiser state dict into tensors and JSON-able hyper-parameters."""
    sd = opt.state_dict()
    tensors = {
        f"{prefix}.{idx}.{name}": t.detach().cpu().contiguous()
        for idx, state in sd["state"].items()
        for name, t in state.items()
    }
    return tensors, {"param_groups": sd["param_groups"]}


def load_optimizer(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], prefix: str, meta: dict) -> None:
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, t in tensors.items():
        if key.startswith(prefix + "."):
            idx, name = key[len(prefix) + 1 :].split(".", 1)
            state.setdefault(int(idx), {})[name] = t
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def save_checkpoint(path: str | Path, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    """Write tensors + JSON metadata atomically (temporary file, then rename). A full disk is one OutputError
    naming the checkpoint: atomic_path reads the errno from safetensors' own error, and the earlier file stays."""
    meta = {"format": FORMAT, "version": VERSION, **meta}
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"gen": json.dumps(meta)})


def read_meta(path: str | Path) -> dict:
    """The JSON metadata of a checkpoint, checked for format and version."""
    path = resolve_checkpoint(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = (f.metadata() or {}).get("gen")
    except Exception as e:  # safetensors raises its own error type, named differently across versions
        raise GenError(f"'{path}' is not a readable safetensors checkpoint ({e})") from None
    if raw is None:
        raise GenError(f"'{path}' is a safetensors file but not a gen checkpoint (no 'gen' metadata)")
    try:
        meta = json.loads(raw)
    except ValueError:
        meta = None
    if not isinstance(meta, dict):
        raise GenError(f"'{path}' is not a readable gen checkpoint: its 'gen' metadata is not a JSON object")
    if meta.get("format") != FORMAT:
        raise GenError(f"'{path}' is a '{meta.get('format')}' file, not a {FORMAT}")
    if meta.get("version") != VERSION:
        raise GenError(
            f"'{path}' is checkpoint version {meta.get('version')}; this gen reads version {VERSION}. "
            "Use the gen release that wrote it."
        )
    return meta


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> tuple[dict[str, torch.Tensor], dict]:
    """Every tensor and the metadata of a checkpoint; a damaged file, or one holding NaN or infinite values, is
    one GenError naming what is wrong."""
    path = resolve_checkpoint(path)
    meta = read_meta(path)
    tensors = {}
    try:
        with safe_open(str(path), framework="pt", device=str(device)) as f:
            for key in f.keys():
                tensors[key] = f.get_tensor(key)
    except Exception as e:  # safetensors' own error type, OSError, a device that cannot hold it ...
        first = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
        raise GenError(f"'{path}' is not a readable safetensors checkpoint ({first})") from None
    if (key := first_non_finite(tensors)) is not None:
        raise GenError(f"'{path}': tensor '{key}' holds NaN or infinite values; the checkpoint is damaged or its "
                       "run diverged (resume from an earlier copy, or train again)")
    return tensors, meta


def resolve_checkpoint(path: str | Path) -> Path:
    """Accept a run folder or a checkpoint file."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if not path.exists():
        raise GenError(f"no checkpoint at '{path}'; give a run folder or a .safetensors checkpoint")
    return path


def subdict(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    n = len(prefix) + 1
    return {k[n:]: v for k, v in tensors.items() if k.startswith(prefix + ".")}


def prefixed(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {f"{prefix}.{k}": v for k, v in state.items()}


def load_module(module: torch.nn.Module, state: dict[str, torch.Tensor], what: str) -> None:
    """load_state_dict with a one-line error naming a few mismatches instead of a wall of text."""
    if problems := mismatches(module.state_dict(), state):
        raise GenError(f"{what} does not match this model ({'; '.join(problems)}); was it trained with another "
                       "config?")
    module.load_state_dict(state)
