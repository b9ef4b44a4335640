"""NVlabs-style network pickles made without NVlabs' code, for the import tests (no NVlabs pickle is committed:
theirs embed their source). A helper module, not tests: torch is imported here, so conftest stays torch-free."""

from __future__ import annotations

import sys
import types
from contextlib import contextmanager
from pathlib import Path

import torch


def payload(marker: Path) -> str:
    """Module source that leaves `marker` behind when it is run."""
    return f"import pathlib\npathlib.Path({str(marker)!r}).touch()\nclass Generator:\n    pass\n"


@contextmanager
def fake_modules(**attrs_by_module: dict):
    """Modules named like NVlabs' (torch_utils.persistence, dnnlib.util, ...) while pickle.dump looks them up,
    gone again before the file is read, as on a machine without NVlabs' code."""
    added, renamed = [], []
    for name, attrs in attrs_by_module.items():
        parts = name.split(".")
        for i in range(1, len(parts) + 1):
            sub = ".".join(parts[:i])
            if sub not in sys.modules:
                sys.modules[sub] = types.ModuleType(sub)
                added.append(sub)
        for key, value in attrs.items():
            renamed.append((value, value.__module__, value.__qualname__))
            value.__module__, value.__qualname__ = name, key
            setattr(sys.modules[name], key, value)
    try:
        yield
    finally:
        for sub in added:
            del sys.modules[sub]
        for value, module, qualname in renamed:
            value.__module__, value.__qualname__ = module, qualname


class FakeEasyDict(dict):
    """Pickled as dnnlib.util.EasyDict once fake_modules names it so."""


def reconstruct(meta):
    raise AssertionError("NVlabs' loader would run here; the reader must never call the file's own functions")


class Persistent(torch.nn.Module):
    """Pickles as an NVlabs persistent object: a call to torch_utils.persistence._reconstruct_persistent_obj with
    the module's source and the object's __dict__."""

    src = ""

    def __init__(self, **kwargs) -> None:
        super().__init__()
        self._init_args = ()
        self._init_kwargs = dict(kwargs)

    def __reduce__(self):
        meta = dict(type="class", version=6, module_src=self.src, class_name=type(self).__name__,
                    state=self.__dict__.copy())
        return reconstruct, (meta,)


BUFFERS = ("w_avg", "noise_const", "resample_filter")  # what NVlabs' networks keep as buffers


def easy(value):
    """Nested dicts as the EasyDicts NVlabs keeps its construction arguments in."""
    return FakeEasyDict({k: easy(v) for k, v in value.items()}) if isinstance(value, dict) else value


def persistent_network(class_name: str, init_kwargs: dict, tensors: dict[str, torch.Tensor]) -> Persistent:
    """A tree of persistent modules holding `tensors` under their dotted names (mapping.fc0.weight, ...), the
    top one a `class_name` built with `init_kwargs`, as NVlabs' networks pickle."""
    root = type(class_name, (Persistent,), {})(**easy(init_kwargs))
    for name, t in tensors.items():
        *path, leaf = name.split(".")
        module = root
        for part in path:
            if part not in module._modules:
                module.add_module(part, Persistent())
            module = module._modules[part]
        if leaf in BUFFERS:
            module.register_buffer(leaf, t)
        else:
            module.register_parameter(leaf, torch.nn.Parameter(t, requires_grad=False))
    return root


def dump_nvlabs(path: Path, data: dict, src: str, protocol: int = 4) -> Path:
    """pickle.dump `data` as NVlabs' training loop writes a snapshot, with `src` as every module's source."""
    import pickle

    Persistent.src = src
    with fake_modules(**{"torch_utils.persistence": {"_reconstruct_persistent_obj": reconstruct},
                         "dnnlib.util": {"EasyDict": FakeEasyDict}}):
        path.write_bytes(pickle.dumps(data, protocol=protocol))
    return path


class FakeTFNetwork:
    """Pickled as dnnlib.tflib.network.Network (NVlabs' TensorFlow StyleGAN2) once fake_modules names it so: its
    state is its __dict__, as TensorFlow's Network.__getstate__ returned it."""

    def __init__(self, name: str, static_kwargs: dict, variables: dict, components: dict | None = None,
                 src: str = "", version: int = 4) -> None:
        self.__dict__.update(version=version, name=name, static_kwargs=dict(static_kwargs),
                             components=components or {}, build_module_src=src, build_func_name=name,
                             variables=[(k, v) for k, v in variables.items()])


def tf_networks(variables: dict, g_kwargs: dict, d_kwargs: dict, src: str) -> tuple:
    """(G, D, Gs) from variables named 'G/mapping/Dense0/weight', 'G/synthesis/4x4/Conv/weight', 'G/dlatent_avg',
    'D/4x4/Conv/weight', ...: G's components are its mapping and synthesis networks, as TensorFlow nests them."""
    def own(prefix: str, nested: bool) -> dict:
        return {k[len(prefix):]: v for k, v in variables.items()
                if k.startswith(prefix) and (nested or "/" not in k[len(prefix):])}

    def generator(name: str) -> FakeTFNetwork:
        parts = {part: FakeTFNetwork(f"G_{part}", g_kwargs, own(f"G/{part}/", True), src=src)
                 for part in ("mapping", "synthesis")}
        return FakeTFNetwork(name, g_kwargs, own("G/", False), parts, src=src)

    return generator("G"), FakeTFNetwork("D", d_kwargs, own("D/", True), src=src), generator("Gs")


def dump_tensorflow(path: Path, networks: tuple, protocol: int = 4) -> Path:
    """pickle.dump a (G, D, Gs) tuple of FakeTFNetworks as NVlabs' TensorFlow code wrote network pickles."""
    import pickle

    with fake_modules(**{"dnnlib.tflib.network": {"Network": FakeTFNetwork}}):
        path.write_bytes(pickle.dumps(networks, protocol=protocol))
    return path
