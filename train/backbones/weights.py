"""Reading weight files safely (no pickled code) and checking that they fit a backbone, key by key."""

from __future__ import annotations

import io
import pickle
import pickletools
import re
import warnings
import zipfile
from pathlib import Path

import torch

from gen.runtime.errors import GenError
from gen.runtime.files import check_input_file

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


class _ScriptObject:
    """Stands in for every class of a TorchScript archive while its data.pkl is read: it only holds the
    attributes the pickle sets (tensors, numbers, child objects). None of the archive's code runs."""


def _torchscript_root(path: Path) -> str | None:
    """The folder inside the zip that holds a TorchScript archive's data.pkl, or None for anything else
    (torch.save writes data.pkl too, but no code/ folder)."""
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
    except (zipfile.BadZipFile, OSError):
        return None
    roots = {n.split("/", 1)[0] for n in names if n.count("/") >= 2 and n.split("/")[1] == "code"}
    root = next(iter(roots), None) if len(roots) == 1 else None
    return root if root is not None and f"{root}/data.pkl" in names else None


def read_torchscript_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a TorchScript archive by attribute path ('net.layers.conv.weight'), read from its
    data.pkl with torch's weights-only unpickler: the archive's classes become inert records and only
    tensor rebuilding is allowed, so nothing in the file is executed (torch.jit.load would run its code,
    and torch.load refuses weights_only=True for such archives and hands them to torch.jit.load)."""
    from torch._weights_only_unpickler import Unpickler

    path = Path(path)
    root = _torchscript_root(path)
    if root is None:
        raise GenError(f"'{path}' is not a TorchScript archive")
    with zipfile.ZipFile(path) as z:
        data = z.read(f"{root}/data.pkl")
        # Every class the archive defines (__torch__.*) is read as a record; the list helper of TorchScript
        # pickles is a plain list. Anything else must be on torch's own weights-only allowlist.
        names = {arg.replace(" ", ".") for op, arg, _ in pickletools.genops(data) if op.name == "GLOBAL"}
        stand_ins: list = [(_ScriptObject, n) for n in names if n.startswith("__torch__.")]
        stand_ins.append((list, "torch.jit._pickle.build_intlist"))

        def storage(pid):
            _, storage_type, key, _location, _numel = pid
            raw = torch.UntypedStorage.from_buffer(z.read(f"{root}/data/{key}"), dtype=torch.uint8)
            return torch.storage.TypedStorage(wrap_storage=raw, dtype=storage_type.dtype, _internal=True)

        unpickler = Unpickler(io.BytesIO(data), encoding="utf-8")
        unpickler.persistent_load = storage
        try:
            with torch.serialization.safe_globals(stand_ins):
                top = unpickler.load()
        except Exception as e:  # UnpicklingError for anything not allowed, KeyError for a missing record, ...
            raise GenError(f"cannot read the TorchScript archive '{path}' as weights ({_first_line(e)})") from None
    tensors: dict[str, torch.Tensor] = {}

    def walk(obj: object, prefix: str) -> None:
        for name, value in vars(obj).items():
            if isinstance(value, torch.Tensor):
                tensors[prefix + name] = value
            elif isinstance(value, _ScriptObject):
                walk(value, f"{prefix}{name}.")

    if isinstance(top, _ScriptObject):
        walk(top, "")
    return tensors


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A `.pth`/`.pt` (loaded with weights_only=True), a TorchScript archive (its tensors only, see
    read_torchscript_tensors) or a `.safetensors` file -> {name: tensor}.

    Every way a file can be wrong is one GenError: damaged or foreign files, pickles with code in them,
    anything but a mapping of names to tensors."""
    path = Path(path)
    check_input_file(path)  # a FIFO would be waited on; it is no missing file either
    if not path.is_file():
        raise GenError(f"weights file '{path}' does not exist")
    suffix = path.suffix.lower()
    if suffix in PICKLE_SUFFIXES and _torchscript_root(path) is not None:
        state = read_torchscript_tensors(path)
    elif suffix == ".safetensors":
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


def load_weights(model: Backbone, path: str | Path, state: dict[str, torch.Tensor] | None = None) -> None:
    """Load a weight file (or `state`, already read from it) into `model`, or say in one line which keys are
    missing, unexpected or misshapen."""
    def relevant(key: str) -> bool:
        return not key.endswith("num_batches_tracked") and not key.startswith(model.ignored_keys)

    state = {k: v for k, v in (read_state_dict(path) if state is None else state).items() if relevant(k)}
    expected = {k: v for k, v in model.state_dict().items() if relevant(k)}
    problems = mismatches(expected, state)
    if problems:
        raise GenError(f"'{path}' does not fit {model.name}: " + "; ".join(problems))
    if (key := first_non_finite(state)) is not None:
        raise GenError(f"'{path}': tensor '{key}' holds NaN or infinite values; the file is damaged (or comes "
                       "from a diverged training run)")
    model.load_state_dict({k: v.float() for k, v in state.items()}, strict=False)
