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
from gen.runtime.files import atomic_path, check_input_file

from .config import check_fields, is_number, model_from_json, train_from_json
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
    """The state saved by optimizer_tensors, refused in one line unless it fits `opt` (the same parameter groups,
    settings of the same kinds, whole float tensors of each parameter's shape): torch checks little of it, and a
    misfit would fail at the first step, or train with a string for a learning rate."""
    misfit = GenError(f"the checkpoint's {prefix} does not fit this model's optimiser; the checkpoint is damaged "
                      "(resume from an earlier copy, or train again)")
    current = opt.state_dict()["param_groups"]
    saved = meta["param_groups"]  # (a list: read_meta checked it)
    if len(saved) != len(current) or not all(map(_same_kind, saved, current)):
        raise misfit
    params = [p for group in opt.param_groups for p in group["params"]]
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, t in tensors.items():
        if key.startswith(prefix + "."):
            idx, _, name = key[len(prefix) + 1 :].partition(".")
            if not (idx.isdecimal() and int(idx) < len(params) and name in _ADAM_STATE):
                raise misfit
            if t.shape != (() if name == "step" else params[int(idx)].shape) or not t.is_floating_point():
                raise misfit
            state.setdefault(int(idx), {})[name] = t
    if not all({"step", "exp_avg", "exp_avg_sq"} <= s.keys() for s in state.values()):
        raise misfit
    opt.load_state_dict({"state": state, "param_groups": saved})


_ADAM_STATE = ("step", "exp_avg", "exp_avg_sq", "max_exp_avg_sq")


def _same_kind(saved: object, current: object) -> bool:
    """Whether a saved optimiser setting has the form of the current one: the same parameter indices, lists of
    the same length, numbers from 0 to 1e6 where numbers are (lr, betas, eps: not NaN, nor 10**400). A setting
    the saved group lacks (one a later torch added) gets torch's default."""
    if isinstance(current, dict):
        return isinstance(saved, dict) and saved.get("params") == current.get("params") and all(
            _same_kind(saved[k], current[k]) for k in current if k in saved and k != "params")
    if isinstance(current, (list, tuple)):
        return isinstance(saved, (list, tuple)) and len(saved) == len(current) and all(map(_same_kind, saved,
                                                                                            current))
    if isinstance(current, bool) or current is None:  # (foreach, fused: None is torch's choice, a bool the user's)
        return saved is None or isinstance(saved, bool)
    if isinstance(current, (int, float)):
        return is_number(saved) and 0 <= saved <= 1e6
    return isinstance(saved, type(current))


def save_checkpoint(path: str | Path, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    """Write tensors + JSON metadata atomically (temporary file, then rename). A full disk is one OutputError
    naming the checkpoint: atomic_path reads the errno from safetensors' own error, and the earlier file stays."""
    meta = {"format": FORMAT, "version": VERSION, **meta}
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"gen": json.dumps(meta)})


def read_meta(path: str | Path, training: bool = False) -> dict:
    """The JSON metadata of a checkpoint, checked for format, version and model config; with `training` (to
    resume a run), also for the training state. Whatever is missing or wrong is one GenError naming the file and
    the field, before anything is built from it (a w_dim that allocates terabytes)."""
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
    _check_config(path, meta, "model", model_from_json)
    if training:
        _check_training_state(path, meta)
    return meta


def _damaged(path: Path, field: str, why: str) -> GenError:
    return GenError(f"'{path}': its metadata '{field}' {why}; the checkpoint is damaged or was not written by gen "
                    "(use an earlier copy, or train again)")


def _object(path: Path, meta: dict, field: str) -> dict:
    if not isinstance(value := meta.get(field), dict):
        raise _damaged(path, field, "is missing" if field not in meta else "is not a JSON object")
    return value


def _check_values(path: Path, field: str, values: dict, bounds: dict) -> None:
    try:
        check_fields(values, bounds)
    except GenError as e:
        raise _damaged(path, field, f"is not valid: {e}") from None


def _check_config(path: Path, meta: dict, field: str, parse) -> None:
    """meta[field] is a JSON object that `parse` (model_from_json, train_from_json) accepts."""
    config = _object(path, meta, field)
    try:
        parse(config)
    except GenError as e:
        raise _damaged(path, field, f"is not valid: {e}") from None


def is_imported(meta: dict) -> bool:
    """A checkpoint `gen import` wrote and nobody has trained since: weights without a training state."""
    return "imported" in meta and "train" not in meta


_COUNTERS = {"step": (int, 0, 10**15), "nimg": (int, 0, 10**15), "world": (int, 1, 65536)}


def _check_training_state(path: Path, meta: dict) -> None:
    """What resuming reads besides the model: the training config, counters, optimiser settings, data, seed and
    background; each there and of the right form, or one line naming it."""
    if is_imported(meta):
        raise GenError(f"'{path}' holds a model imported by gen import, not a training run: it has no training "
                       "state to continue; fine-tune it on a folder of images with gen train DATA --resume RUN")
    _check_config(path, meta, "train", train_from_json)
    # (world: runs from before it was saved had one process)
    _check_values(path, "counters", {"world": 1, **_object(path, meta, "counters")}, _COUNTERS)
    for field in ("opt_G", "opt_D"):
        if not isinstance(_object(path, meta, field).get("param_groups"), list):
            raise _damaged(path, f"{field}.param_groups", "is missing or not a list")
    if not isinstance(meta.get("data"), str):
        raise _damaged(path, "data", "is missing or not a folder name")
    if "seed" in meta:
        _check_values(path, "seed", meta, {"seed": (int, 0, 2**63 - 1)})
    background = meta.get("background", [255, 255, 255])
    if not (isinstance(background, list) and len(background) == 3
            and all(is_number(v, int) and 0 <= v <= 255 for v in background)):
        raise _damaged(path, "background", f"is not three whole numbers from 0 to 255, got {background!r}")


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu",
                    training: bool = False) -> tuple[dict[str, torch.Tensor], dict]:
    """Every tensor and the metadata of a checkpoint (read_meta: `training` to resume it); a damaged file, or
    one holding NaN or infinite values, is one GenError naming what is wrong."""
    path = resolve_checkpoint(path)
    meta = read_meta(path, training)
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
    check_input_file(path)  # (safetensors would wait on a FIFO for a writer)
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
