"""NVlabs and rosinality StyleGAN files read as data: nothing in the file is imported, compiled or run.

A pickle names the functions that rebuild its objects, and plain pickle.load calls whatever it names: an
NVlabs network pickle even carries its classes' source code, which NVlabs' loader exec()s. Here every name a
file asks for is looked up in a short allow-list of data builders (tensors, numpy arrays, dicts) and of
stand-ins of ours for NVlabs' classes that keep their state, source included, as inert data; any other name
stops the read in one line before it is called. torch.save files (rosinality) go through torch's own
weights-only loader, with argparse.Namespace as the one addition.

read_model_file(path) -> ModelFile: the format, and per network its tensors by name and the arguments it
was built with, for the converters to our Generator.
"""

from __future__ import annotations

import argparse
import collections
import io
import math
import pickle
import re
import stat
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gen.runtime.errors import GenError

MAX_BYTES = 4 << 30  # the largest NVlabs pickles (G, D, G_ema at 1024px) are under 1 GiB
FORMATS = ("stylegan2-ada", "stylegan2-tf", "rosinality")
ZIP_MAGIC = b"PK\x03\x04"  # torch.save since torch 1.6
TORCH_LEGACY_MAGIC = pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2)[:-1]  # older torch.save: a magic number
KNOWN = "gen reads NVlabs network pickles (.pkl) and rosinality checkpoints (.pt)"
ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")
TORCH_REFUSED = re.compile(r"GLOBAL ([A-Za-z_][\w.]*)")  # how torch's weights-only loader names a refused global


class _Refused(Exception):
    """A global outside the allow-list: `name` is module.name as the file spells it."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


class _Damaged(Exception):
    """Data that an allowed builder cannot have been given by the program that wrote the file."""


# ---- stand-ins for NVlabs' classes: their state as data, none of their code ------------------------------------


class EasyDict(dict):
    """Stands in for dnnlib.util.EasyDict: the same items, none of its attribute magic."""


def _mapping(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


@dataclass(eq=False)
class PersistentObject:
    """One object of NVlabs' torch_utils.persistence (a network, layer or augment pipe), never rebuilt.

    `state` is what the object's __dict__ held: torch.nn.Module's _parameters, _buffers and _modules (children
    are PersistentObjects too), _init_args/_init_kwargs (how it was built) and plain attributes. `module_src` is
    the source of the module that defined the class, kept for the record: it is never compiled or run."""

    class_name: str
    module_src: str = field(repr=False)
    state: dict = field(repr=False)
    version: int | None = None

    @property
    def init_kwargs(self) -> dict:
        """The keyword arguments the object was built with (EasyDicts inside, e.g. mapping_kwargs)."""
        return _mapping(self.state.get("_init_kwargs"))

    @property
    def init_args(self) -> tuple:
        args = self.state.get("_init_args")
        return tuple(args) if isinstance(args, (tuple, list)) else ()

    @property
    def attributes(self) -> dict:
        """Plain attributes, e.g. img_resolution, w_dim, weight_gain, stylegan3's in_size and sampling rates."""
        return {k: v for k, v in self.state.items() if isinstance(k, str) and not k.startswith("_")
                and k != "training"}

    def modules(self) -> dict[str, PersistentObject]:
        """The direct children by attribute name (mapping, synthesis, b4, fc0, ...)."""
        return {k: v for k, v in _mapping(self.state.get("_modules")).items()
                if isinstance(k, str) and isinstance(v, PersistentObject)}

    def parameters(self) -> dict[str, torch.Tensor]:
        """Every parameter by dotted name, as named_parameters() lists them (e.g. 'mapping.fc0.weight')."""
        return self._named("_parameters")

    def buffers(self) -> dict[str, torch.Tensor]:
        """Every buffer by dotted name (w_avg, noise_const, resample_filter, ...), the non-persistent ones too."""
        return self._named("_buffers")

    def tensors(self) -> dict[str, torch.Tensor]:
        """Parameters and buffers together, by dotted name."""
        return {**self.parameters(), **self.buffers()}

    def _named(self, kind: str) -> dict[str, torch.Tensor]:
        found: dict[str, torch.Tensor] = {}
        seen: set[int] = set()  # pickle can share an object or make a cycle: visit each once
        todo: list[tuple[PersistentObject, str]] = [(self, "")]  # a stack, not recursion: a file sets the depth
        while todo:
            obj, prefix = todo.pop()
            if id(obj) in seen:
                continue
            seen.add(id(obj))
            for name, t in _mapping(obj.state.get(kind)).items():
                if isinstance(name, str) and isinstance(t, torch.Tensor):  # (an optional one may be None)
                    found[prefix + name] = t
            todo.extend((child, f"{prefix}{name}.") for name, child in reversed(obj.modules().items()))
        return found


class TFNetwork:
    """Stands in for dnnlib.tflib.network.Network of NVlabs' TensorFlow StyleGAN2: its pickled state as data.

    The state holds version, name, static_kwargs, components (sub-networks: mapping, synthesis), build_module_src
    (source, kept for the record and never run), build_func_name and variables [(name, numpy array)]."""

    state: dict | None = None

    def __setstate__(self, state: Any) -> None:  # pickle's BUILD: keep the state, build nothing
        if not isinstance(state, dict):
            raise _Damaged("a TensorFlow network's state is not a dict")
        self.state = state

    def __repr__(self) -> str:
        return f"TFNetwork({self.name!r})"

    def _get(self, key: str) -> Any:
        return (self.state or {}).get(key)

    @property
    def name(self) -> str | None:
        return self._get("name")

    @property
    def version(self) -> int | None:
        return self._get("version")

    @property
    def static_kwargs(self) -> dict:
        """The keyword arguments the network was built with (resolution, fmap_base, mapping_layers, ...)."""
        return _mapping(self._get("static_kwargs"))

    @property
    def build_module_src(self) -> str | None:
        return self._get("build_module_src")

    @property
    def build_func_name(self) -> str | None:
        return self._get("build_func_name")

    def components(self) -> dict[str, TFNetwork]:
        return {k: v for k, v in _mapping(self._get("components")).items()
                if isinstance(k, str) and isinstance(v, TFNetwork)}

    def variables(self) -> dict[str, np.ndarray]:
        """This network's own variables by TensorFlow name (a 0-d variable comes as a 0-d array)."""
        pairs = self._get("variables")
        pairs = pairs if isinstance(pairs, (list, tuple)) else []
        return {p[0]: np.asarray(p[1]) for p in pairs if isinstance(p, (list, tuple)) and len(p) == 2
                and isinstance(p[0], str) and isinstance(p[1], (np.ndarray, np.generic))}

    def arrays(self) -> dict[str, np.ndarray]:
        """Own and components' variables, components' prefixed by their name: 'mapping/Dense0/weight',
        'synthesis/4x4/Conv/weight', 'dlatent_avg', ..."""
        found: dict[str, np.ndarray] = {}
        seen: set[int] = set()
        todo: list[tuple[TFNetwork, str]] = [(self, "")]
        while todo:
            net, prefix = todo.pop()
            if id(net) in seen:
                continue
            seen.add(id(net))
            found.update({prefix + k: v for k, v in net.variables().items()})
            todo.extend((comp, f"{prefix}{name}/") for name, comp in reversed(net.components().items()))
        return found


# ---- the allow-list: each name a file may ask for, and what answers it -------------------------------------------


def _persistent_object(meta: Any) -> PersistentObject:
    """Answers torch_utils.persistence._reconstruct_persistent_obj: NVlabs' would exec meta['module_src']."""
    if not isinstance(meta, dict):
        raise _Damaged("a persistent object's description is not a dict")
    src, name, state = meta.get("module_src"), meta.get("class_name"), meta.get("state")
    if not isinstance(src, str) or not isinstance(name, str) or not isinstance(state, (dict, type(None))):
        raise _Damaged("a persistent object lacks its class name, module source or state")
    version = meta.get("version")
    return PersistentObject(name, src, dict(state or {}), version if isinstance(version, int) else None)


def _storage(blob: Any) -> torch.TypedStorage:
    """Answers torch.storage._load_from_bytes, how pickle.dump writes a tensor's storage: a small torch.save
    file inside the pickle. torch's own reads it with weights_only=False; we use its weights-only loader."""
    if not isinstance(blob, (bytes, bytearray)):
        raise _Damaged("a tensor's storage is not bytes")
    try:
        storage = torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if found := TORCH_REFUSED.search(ANSI.sub("", str(e))):
            raise _Refused(found.group(1)) from None
        raise _Damaged(f"a tensor's storage is unreadable ({_first_line(e)})") from None
    except Exception as e:  # a damaged blob fails in many ways (RuntimeError, EOFError, ...)
        raise _Damaged(f"a tensor's storage is unreadable ({_first_line(e)})") from None
    if not isinstance(storage, torch.TypedStorage):  # (what torch writes there: a storage of a dtype)
        raise _Damaged("a tensor's storage holds something else")
    return storage


def _ints(value: Any) -> bool:
    return isinstance(value, (tuple, list)) and all(isinstance(v, int) for v in value)


def _tensor(storage: Any, offset: Any, size: Any, stride: Any, *_flags: Any) -> torch.Tensor:
    """Answers torch._utils._rebuild_tensor_v2. The flags (requires_grad, backward hooks, metadata) are
    training state; data needs none of them, and hooks would be callables."""
    if not isinstance(storage, torch.TypedStorage) or not isinstance(offset, int) \
            or not _ints(size) or not _ints(stride) or len(size) != len(stride):
        raise _Damaged("a tensor's storage, shape or strides are malformed")
    if offset < 0 or any(n < 0 for n in size) or any(n < 0 for n in stride):
        raise _Damaged("a tensor has a negative offset, size or stride")
    if numel := math.prod(size):
        # torch's rebuild trusts these numbers: it grows a storage too small for the view (as much memory as
        # the file says, filled with whatever was there), and zero strides, which weights never have, make a
        # few bytes a tensor that fills memory once a converter copies it
        last = offset + sum((n - 1) * st for n, st in zip(size, stride))
        if numel > storage.size() or last >= storage.size():
            raise _Damaged(f"a tensor of shape {tuple(size)} does not fit its storage of {storage.size()} values")
    return torch._utils._rebuild_tensor_v2(storage, offset, tuple(size), tuple(stride), False,
                                           collections.OrderedDict())


def _parameter(data: Any, *_flags: Any) -> torch.Tensor:
    """Answers torch._utils._rebuild_parameter(_with_state): the tensor alone, as a parameter's attributes
    (requires_grad, hooks, Python state) are training state."""
    if not isinstance(data, torch.Tensor):
        raise _Damaged("a parameter holds no tensor")
    return data


_NDARRAY = object()  # numpy.ndarray as _reconstruct's argument: a token, so a file cannot call ndarray(shape)
_np_reconstruct = np.zeros(0).__reduce__()[0]  # found through numpy itself: numpy.core or numpy._core by version
_np_scalar = np.float64(0).__reduce__()[0]
_np_frombuffer = np.zeros(1).__reduce_ex__(5)[0]


def _ndarray(subtype: Any, shape: Any, dtype: Any) -> np.ndarray:
    """Answers numpy's _reconstruct, which makes an empty array that pickle then fills (ndarray.__setstate__)."""
    if subtype is not _NDARRAY:
        raise _Damaged("a numpy array of another type than ndarray")
    return _np_reconstruct(np.ndarray, shape, dtype)


def _bytes(*args: Any) -> bytes:
    """Answers builtins.bytes (protocol 2 writes b'' as bytes()); never bytes(n), which would allocate n."""
    if args and not isinstance(args[0], (bytes, bytearray, memoryview)):
        raise _Damaged("bytes built from something other than bytes")
    return bytes(*args[:1])


def _bytearray(*args: Any) -> bytearray:
    if args and not isinstance(args[0], (bytes, bytearray, memoryview)):
        raise _Damaged("a bytearray built from something other than bytes")
    return bytearray(*args[:1])


def _latin1(text: Any, encoding: Any = "latin1") -> bytes:
    """Answers _codecs.encode, how protocol 2 writes bytes: text encoded as latin-1, nothing else."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise _Damaged("_codecs.encode used for something other than bytes")
    return text.encode("latin-1")


def _scalar(dtype: Any, *data: Any) -> Any:
    if not isinstance(dtype, np.dtype):
        raise _Damaged("a numpy scalar without a dtype")
    return _np_scalar(dtype, *data)


# (module, name) -> what answers it. Why each is here: a network pickle cannot be read without it, and calling
# it builds data from data (a tensor, an array, a container) or a stand-in of ours; nothing reaches a file,
# a process, an import or eval.
ALLOWED: dict[tuple[str, str], Any] = {
    # NVlabs' classes, as inert stand-ins (their source stays a string)
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): _persistent_object,
    ("dnnlib.util", "EasyDict"): EasyDict,
    ("dnnlib.tflib.network", "Network"): TFNetwork,
    # tensors, as pickle.dump writes them (torch's __reduce_ex__)
    ("torch._utils", "_rebuild_tensor_v2"): _tensor,
    ("torch._utils", "_rebuild_parameter"): _parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _parameter,
    ("torch.storage", "_load_from_bytes"): _storage,
    # containers torch.nn.Module keeps its parameters, buffers, modules and hooks in; sets (protocol 2 and 3
    # spell them as calls; _non_persistent_buffers_set is one); complex and slice for completeness
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "complex"): complex,
    ("builtins", "slice"): slice,
    ("builtins", "bytes"): _bytes,
    ("builtins", "bytearray"): _bytearray,
    ("_codecs", "encode"): _latin1,
    # numpy arrays and scalars: TensorFlow variables, and NVlabs attributes such as weight_gain (a float64)
    # and stylegan3's in_size (an array); numpy 1 wrote numpy.core, numpy 2 writes numpy._core
    ("numpy", "ndarray"): _NDARRAY,
    ("numpy", "dtype"): np.dtype,
    **{(f"numpy.{core}.multiarray", "_reconstruct"): _ndarray for core in ("core", "_core")},
    **{(f"numpy.{core}.multiarray", "scalar"): _scalar for core in ("core", "_core")},
    **{(f"numpy.{core}.numeric", "_frombuffer"): _np_frombuffer for core in ("core", "_core")},  # protocol 5
    # shapes kept as attributes
    ("torch", "Size"): torch.Size,
}
# torch.float32 and co.: constants. Listed from vars(), as getattr(torch, name) may import a torch submodule.
TORCH_DTYPES = {k: v for k, v in vars(torch).items() if isinstance(v, torch.dtype)}
PY2_MODULES = {"__builtin__": "builtins"}  # how protocol 2 spells builtins


class _DataUnpickler(pickle.Unpickler):
    """pickle.Unpickler that answers only the allow-list; anything else is refused before it is called."""

    def find_class(self, module: str, name: str) -> Any:
        module = PY2_MODULES.get(module, module)
        if (module, name) in ALLOWED:
            return ALLOWED[module, name]
        if module == "torch" and name in TORCH_DTYPES:
            return TORCH_DTYPES[name]
        raise _Refused(f"{module}.{name}")

    def persistent_load(self, pid: Any) -> Any:
        raise _Damaged("it holds pickle persistent ids, which no network pickle uses")


# ---- the file ----------------------------------------------------------------------------------------------------


@dataclass
class ModelFile:
    """What a model file holds, as data for a converter.

    format "stylegan2-ada" (stylegan2-ada-pytorch and stylegan3 pickles): networks G, D, G_ema (and augment_pipe
    when the run had one) as PersistentObjects; extras such as training_set_kwargs.
    format "stylegan2-tf" (NVlabs' TensorFlow StyleGAN2 and StyleGAN2-ADA pickles): networks G, D, Gs as
    TFNetworks.
    format "rosinality" (rosinality/stylegan2-pytorch checkpoints): networks g_ema (and g, d when saved) as state
    dicts {name: tensor}; extras such as latent_avg, args (a dict), ada_aug_p, g_optim, d_optim."""

    path: Path
    format: str
    networks: dict[str, Any]
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def generator(self) -> Any:
        """The generator to convert: the moving average (G_ema, Gs, g_ema) when the file has it."""
        for key in ("G_ema", "Gs", "g_ema", "G", "g"):
            if key in self.networks:
                return self.networks[key]
        raise KeyError("no generator")


def _first_line(e: BaseException) -> str:
    text = ANSI.sub("", str(e)).strip()
    if not text or isinstance(e, LookupError):  # (a KeyError says only the key)
        text = f"{type(e).__name__} {text}".strip()
    return text.splitlines()[0][:160]


def _refused(path: Path, name: str) -> GenError:
    return GenError(f"'{path}' is not a model gen can read safely: it asks to run {name}, which is not model "
                    f"data (gen runs nothing from a model file; {KNOWN})")


def _check_file(path: Path, max_bytes: int) -> None:
    try:
        st = path.stat()
    except FileNotFoundError:
        raise GenError(f"no model file at '{path}'") from None
    except OSError as e:
        raise GenError(f"cannot read '{path}': {e.strerror or e}") from None
    if stat.S_ISDIR(st.st_mode):
        raise GenError(f"'{path}' is a folder; give the model file itself ({KNOWN})")
    if not stat.S_ISREG(st.st_mode):
        raise GenError(f"'{path}' is not a regular file (a device, pipe or socket?); give a model file")
    if st.st_size == 0:
        raise GenError(f"'{path}' is empty; download or copy the model again")
    if st.st_size > max_bytes:
        raise GenError(f"'{path}' is {st.st_size / 2**30:.1f} GiB, more than any StyleGAN model file "
                       f"({max_bytes / 2**30:.0f} GiB at most); it is not one gen reads")


def _unpickle(path: Path) -> Any:
    try:
        with open(path, "rb") as f, warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # TypedStorage deprecation: we only read storages
            return _DataUnpickler(f).load()
    except _Refused as e:
        raise _refused(path, e.name) from None
    except _Damaged as e:
        raise GenError(f"'{path}' is a damaged or foreign pickle: {e}") from None
    except EOFError:
        raise GenError(f"'{path}' is cut short (the pickle ends early); download or copy it again") from None
    except pickle.UnpicklingError as e:
        if "truncated" in str(e):
            raise GenError(f"'{path}' is cut short (the pickle ends early); download or copy it again") from None
        raise GenError(f"'{path}' is a damaged pickle ({_first_line(e)})") from None
    except OSError as e:
        raise GenError(f"cannot read '{path}': {e.strerror or e}") from None
    except MemoryError:
        raise GenError(f"'{path}' asks for more memory than there is; it is damaged or not a model") from None
    except Exception as e:  # a builder given the wrong data: TypeError, ValueError, RecursionError, ...
        raise GenError(f"'{path}' is a damaged or foreign pickle ({_first_line(e)})") from None


def _torch_load(path: Path) -> Any:
    try:
        with torch.serialization.safe_globals([argparse.Namespace]), warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if found := TORCH_REFUSED.search(ANSI.sub("", str(e))):
            raise _refused(path, found.group(1)) from None
        raise GenError(f"'{path}' is a damaged torch.save file ({_first_line(e)})") from None
    except OSError as e:
        raise GenError(f"cannot read '{path}': {e.strerror or e}") from None
    except Exception as e:  # a cut-short zip, a damaged record: RuntimeError, EOFError, ...
        raise GenError(f"'{path}' is a damaged or cut-short torch.save file ({_first_line(e)})") from None


def _describe(data: Any) -> str:
    if isinstance(data, dict):
        keys = ", ".join(repr(k) for k in list(data)[:6])
        return f"a dict with keys {keys}" if keys else "an empty dict"
    return f"a {type(data).__name__}"


def _nvlabs(path: Path, data: Any) -> ModelFile:
    if isinstance(data, tuple) and len(data) == 3 and all(isinstance(n, TFNetwork) for n in data):
        return ModelFile(path, "stylegan2-tf", dict(zip(("G", "D", "Gs"), data)))
    if isinstance(data, dict) and any(isinstance(data.get(k), PersistentObject) for k in ("G_ema", "G")):
        networks = {k: v for k, v in data.items() if isinstance(v, PersistentObject)}
        return ModelFile(path, "stylegan2-ada", networks, {k: v for k, v in data.items() if k not in networks})
    raise GenError(f"'{path}' is a pickle of {_describe(data)}, not an NVlabs network pickle (a dict with G, D "
                   "and G_ema, or TensorFlow's (G, D, Gs))")


def _is_state_dict(value: Any) -> bool:
    return isinstance(value, dict) and bool(value) and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in value.items())


def _rosinality(path: Path, data: Any) -> ModelFile:
    if not isinstance(data, dict) or not _is_state_dict(data.get("g_ema")):
        raise GenError(f"'{path}' is a torch.save file of {_describe(data)}, not a rosinality StyleGAN2 checkpoint "
                       "(a dict with a 'g_ema' state dict)")
    networks = {k: data[k] for k in ("g_ema", "g", "d") if _is_state_dict(data.get(k))}
    extras = {k: v for k, v in data.items() if k not in networks}
    if isinstance(extras.get("args"), argparse.Namespace):
        extras["args"] = dict(vars(extras["args"]))  # its training options (size, latent, n_mlp, ...) as data
    return ModelFile(path, "rosinality", networks, extras)


def read_model_file(path: str | Path, max_bytes: int = MAX_BYTES) -> ModelFile:
    """Read an NVlabs network pickle or a rosinality checkpoint as data; every way it can fail (a name outside
    the allow-list, a damaged, cut-short, empty or foreign file) is one GenError line."""
    path = Path(path)
    _check_file(path, max_bytes)
    try:
        with open(path, "rb") as f:
            head = f.read(len(TORCH_LEGACY_MAGIC))
    except OSError as e:
        raise GenError(f"cannot read '{path}': {e.strerror or e}") from None
    if head.startswith(ZIP_MAGIC) or head == TORCH_LEGACY_MAGIC:
        return _rosinality(path, _torch_load(path))
    if len(head) >= 2 and head[0] == pickle.PROTO[0] and 2 <= head[1] <= pickle.HIGHEST_PROTOCOL:
        return _nvlabs(path, _unpickle(path))
    raise GenError(f"'{path}' is not a StyleGAN model file: neither a pickle nor a torch.save zip ({KNOWN})")

