"""NVlabs and rosinality model files read as data: every file is built here, in the test (an NVlabs pickle embeds
NVlabs' source code, so none is committed), and each carries code that would leave a marker file if it ran."""

from __future__ import annotations

import argparse
import builtins
import io
import os
import pickle
import subprocess
import sys
import webbrowser
from pathlib import Path

import numpy as np
import pytest
import torch
from nvlabs_fakes import FakeEasyDict, Persistent, fake_modules, payload, reconstruct

from gen.runtime.errors import GenError
from gen.train.importers.pickles import EasyDict, PersistentObject, TFNetwork, read_model_file


class FullyConnectedLayer(Persistent):
    def __init__(self, n_in: int, n_out: int) -> None:
        super().__init__(in_features=n_in, out_features=n_out)
        self.weight = torch.nn.Parameter(torch.randn(n_out, n_in))
        self.bias = torch.nn.Parameter(torch.randn(n_out))
        self.weight_gain = np.float32(1) / np.sqrt(n_in)  # a numpy scalar, as NVlabs keeps it


class Mapping(Persistent):
    def __init__(self) -> None:
        super().__init__(z_dim=4, w_dim=4, num_layers=2)
        self.fc0 = FullyConnectedLayer(4, 4)
        self.fc1 = FullyConnectedLayer(4, 4)
        self.register_buffer("w_avg", torch.randn(4))


class Synthesis(Persistent):
    def __init__(self) -> None:
        super().__init__(w_dim=4, img_resolution=8)
        self.const = torch.nn.Parameter(torch.randn(3, 4, 4).half())
        self.register_buffer("resample_filter", torch.randn(4, 4), persistent=False)
        self.in_size = np.broadcast_to(np.asarray(8), [2])  # a numpy array, as stylegan3 keeps it
        self.up = torch.randn(8, 8)[::2, 1::2]  # a strided view: offset and strides must survive
        self.skip = None


class Generator(Persistent):
    def __init__(self) -> None:
        super().__init__(z_dim=4, c_dim=0, w_dim=4, img_resolution=8, img_channels=3,
                         mapping_kwargs=FakeEasyDict(num_layers=2), synthesis_kwargs=FakeEasyDict())
        self.mapping = Mapping()
        self.synthesis = Synthesis()
        self.img_resolution = 8


def expected_tensors(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {**dict(module.named_parameters()), **dict(module.named_buffers())}


def write_nvlabs(path: Path, marker: Path, extra: dict | None = None, protocol: int = 4) -> dict:
    """An NVlabs-style network snapshot: a dict of persistent G, D, G_ema and an EasyDict of dataset options."""
    Persistent.src = payload(marker)
    torch.manual_seed(0)
    data = dict(G=Generator(), D=Mapping(), G_ema=Generator(), augment_pipe=None,
                training_set_kwargs=FakeEasyDict(path="faces.zip", resolution=8, use_labels=False),
                **(extra or {}))
    with fake_modules(**{"torch_utils.persistence": {"_reconstruct_persistent_obj": reconstruct},
                         "dnnlib.util": {"EasyDict": FakeEasyDict}}):
        path.write_bytes(pickle.dumps(data, protocol=protocol))
    return data


def assert_one_line(e: pytest.ExceptionInfo, *words: str) -> None:
    text = str(e.value)
    assert "\n" not in text, text
    for word in words:
        assert word in text, text


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_nvlabs_pickle_is_read_as_data(tmp_path, marker, protocol):
    path = tmp_path / "network-snapshot.pkl"
    data = write_nvlabs(path, marker, protocol=protocol)
    assert "torch_utils" not in sys.modules and "dnnlib" not in sys.modules

    model = read_model_file(path)

    assert model.format == "stylegan2-ada"
    assert set(model.networks) == {"G", "D", "G_ema"}
    assert model.extras == {"augment_pipe": None, "training_set_kwargs": {"path": "faces.zip", "resolution": 8,
                                                                          "use_labels": False}}
    assert type(model.extras["training_set_kwargs"]) is EasyDict
    g = model.generator
    assert isinstance(g, PersistentObject) and g.class_name == "Generator" and g.version == 6
    assert g.module_src == payload(marker)  # kept as a string, never run
    want = expected_tensors(data["G_ema"])
    got = g.tensors()
    assert set(got) == set(want) == {"mapping.fc0.weight", "mapping.fc0.bias", "mapping.fc1.weight",
                                     "mapping.fc1.bias", "mapping.w_avg", "synthesis.const",
                                     "synthesis.resample_filter"}
    for name, t in want.items():
        assert got[name].dtype == t.dtype and torch.equal(got[name], t.detach()), name
        assert type(got[name]) is torch.Tensor and not got[name].requires_grad
    assert set(g.parameters()) == set(dict(data["G_ema"].named_parameters()))
    assert set(g.buffers()) == {"mapping.w_avg", "synthesis.resample_filter"}
    assert g.init_kwargs["mapping_kwargs"] == {"num_layers": 2}
    assert type(g.init_kwargs["mapping_kwargs"]) is EasyDict
    assert g.attributes["img_resolution"] == 8
    synthesis = g.modules()["synthesis"]
    assert np.array_equal(synthesis.attributes["in_size"], [8, 8])
    assert torch.equal(synthesis.attributes["up"], data["G_ema"].synthesis.up)
    fc0 = g.modules()["mapping"].modules()["fc0"]
    assert fc0.attributes["weight_gain"] == data["G_ema"].mapping.fc0.weight_gain
    assert not torch.equal(model.networks["G"].tensors()["synthesis.const"], got["synthesis.const"])
    assert "torch_utils" not in sys.modules and "dnnlib" not in sys.modules


class Call:
    """Pickles as a call of `fn(*args)`, the way a hostile file runs code on pickle.load."""

    def __init__(self, fn, *args) -> None:
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


def hostile_calls(marker: Path) -> list[tuple[Call, str]]:
    touch = f"open({str(marker)!r}, 'w').close()"
    return [
        (Call(os.system, f"touch {marker}"), f"{os.system.__module__}.system"),
        (Call(builtins.eval, touch), "builtins.eval"),
        (Call(builtins.exec, touch), "builtins.exec"),
        (Call(builtins.getattr, "text", "upper"), "builtins.getattr"),
        (Call(subprocess.Popen, ["touch", str(marker)]), "subprocess.Popen"),
        (Call(webbrowser.open, "http://localhost:1"), "webbrowser.open"),
        (Call(np.load, str(marker)), "numpy.load"),
        (Call(torch.load, str(marker)), "torch.serialization.load"),
    ]


@pytest.mark.parametrize("case", range(8))
def test_hostile_globals_are_refused_before_they_run(tmp_path, marker, case):
    call, name = hostile_calls(marker)[case]
    path = tmp_path / "hostile.pkl"
    # nested inside an otherwise fine snapshot, after the networks
    write_nvlabs(path, marker, extra={"progress": {"kimg": 100, "note": [1, (2, call)]}})
    with pytest.raises(GenError) as e:
        read_model_file(path)
    assert_one_line(e, str(path), name, "not a model gen can read safely")


def test_refused_inside_a_tensor_storage(tmp_path, marker):
    """pickle.dump keeps each storage as a small torch.save file: what is in it is refused as well."""
    blob = io.BytesIO()
    torch.save(Call(os.system, f"touch {marker}"), blob, _use_new_zipfile_serialization=False)
    path = tmp_path / "storage.pkl"
    write_nvlabs(path, marker, extra={"x": Call(torch.storage._load_from_bytes, blob.getvalue())})
    with pytest.raises(GenError) as e:
        read_model_file(path)
    assert_one_line(e, f"{os.system.__module__}.system", "not a model gen can read safely")


def test_allowed_builders_given_bad_data_are_one_line(tmp_path, marker):
    with fake_modules(**{"torch_utils.persistence": {"_reconstruct_persistent_obj": reconstruct}}):
        raw = pickle.dumps({"G_ema": Call(reconstruct, "import os")})
    path = tmp_path / "bad.pkl"
    path.write_bytes(raw)
    with pytest.raises(GenError) as e:
        read_model_file(path)
    assert_one_line(e, str(path), "damaged or foreign pickle")


class Network:
    """NVlabs' TensorFlow network as pickle sees it: a class whose state is a dict, source code included."""

    def __init__(self, name: str, variables: dict, components: dict | None = None, src: str = "") -> None:
        self.name, self.vars, self.components, self.src = name, variables, components or {}, src

    def __getstate__(self):
        return dict(version=4, name=self.name, static_kwargs=dict(resolution=8, fmap_base=64, mapping_layers=1),
                    components=dict(self.components), build_module_src=self.src, build_func_name="G_main",
                    variables=list(self.vars.items()))

    def __setstate__(self, state):
        raise AssertionError("NVlabs' loader would exec build_module_src here")


def test_tensorflow_pickle_is_read_as_data(tmp_path, marker):
    src = payload(marker)
    rng = np.random.default_rng(0)
    mapping = Network("G_mapping", {"Dense0/weight": rng.standard_normal((4, 4), dtype=np.float32),
                                    "Dense0/bias": np.zeros(4, np.float32)}, src=src)
    synthesis = Network("G_synthesis", {"4x4/Conv/weight": rng.standard_normal((3, 3, 4, 4), dtype=np.float32),
                                        "4x4/Conv/noise_strength": np.float32(0.25)}, src=src)
    g = Network("G", {"dlatent_avg": rng.standard_normal(4).astype(np.float32)},
                {"mapping": mapping, "synthesis": synthesis}, src=src)
    d = Network("D", {"Output/weight": np.ones((4, 1), np.float32)}, src=src)
    path = tmp_path / "stylegan2-tf.pkl"
    with fake_modules(**{"dnnlib.tflib.network": {"Network": Network}}):
        path.write_bytes(pickle.dumps((g, d, g), protocol=3))  # Python 3.6's default, as NVlabs wrote them

    model = read_model_file(path)

    assert model.format == "stylegan2-tf" and set(model.networks) == {"G", "D", "Gs"}
    gs = model.generator
    assert isinstance(gs, TFNetwork) and gs is model.networks["Gs"]
    assert gs.name == "G" and gs.version == 4 and gs.build_func_name == "G_main" and gs.build_module_src == src
    assert gs.static_kwargs["resolution"] == 8
    arrays = gs.arrays()
    want = {"dlatent_avg": g.vars["dlatent_avg"],
            **{f"mapping/{k}": v for k, v in mapping.vars.items()},
            **{f"synthesis/{k}": v for k, v in synthesis.vars.items()}}
    assert set(arrays) == set(want)
    for name, value in want.items():
        assert np.array_equal(arrays[name], value) and arrays[name].dtype == np.float32, name
    assert arrays["synthesis/4x4/Conv/noise_strength"].shape == ()
    assert set(gs.components()) == {"mapping", "synthesis"}


class Custom:
    """A class of the file's own, which a torch.save file may not bring."""


def rosinality_checkpoint(extra: dict | None = None) -> dict:
    g = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 2))
    d = torch.nn.Linear(2, 1)
    g_optim = torch.optim.Adam(g.parameters())
    g(torch.randn(1, 4)).sum().backward()
    g_optim.step()
    return {"g": g.state_dict(), "d": d.state_dict(), "g_ema": g.state_dict(), "g_optim": g_optim.state_dict(),
            "args": argparse.Namespace(size=8, latent=4, n_mlp=2, arch="stylegan2", channel_multiplier=2),
            "ada_aug_p": 0.1, **(extra or {})}


def test_rosinality_checkpoint_is_read(tmp_path):
    ckpt = rosinality_checkpoint()
    path = tmp_path / "010000.pt"
    torch.save(ckpt, path)

    model = read_model_file(path)

    assert model.format == "rosinality" and set(model.networks) == {"g_ema", "g", "d"}
    for name, t in ckpt["g_ema"].items():
        assert torch.equal(model.generator[name], t)
    assert model.extras["args"] == {"size": 8, "latent": 4, "n_mlp": 2, "arch": "stylegan2", "channel_multiplier": 2}
    assert model.extras["ada_aug_p"] == 0.1 and set(model.extras["g_optim"]) == {"state", "param_groups"}


def test_rosinality_converted_weights_are_read(tmp_path):
    """convert_weight.py's output: g_ema and latent_avg only."""
    path = tmp_path / "stylegan2-ffhq-config-f.pt"
    torch.save({"g_ema": {"style.1.weight": torch.ones(2, 2)}, "latent_avg": torch.zeros(2)}, path)
    model = read_model_file(path)
    assert model.format == "rosinality" and set(model.networks) == {"g_ema"}
    assert torch.equal(model.extras["latent_avg"], torch.zeros(2))


@pytest.mark.parametrize("extra, name", [({"extra": Custom()}, f"{Custom.__module__}.Custom"),
                                         ({"extra": Call(os.system, "true")}, f"{os.system.__module__}.system")])
def test_rosinality_with_foreign_globals_is_refused(tmp_path, extra, name):
    path = tmp_path / "ckpt.pt"
    torch.save(rosinality_checkpoint(extra), path)
    with pytest.raises(GenError) as e:
        read_model_file(path)
    assert_one_line(e, str(path), name, "not a model gen can read safely")


def test_foreign_but_harmless_files_are_one_line(tmp_path, marker):
    path = tmp_path / "plain.pkl"
    path.write_bytes(pickle.dumps({"a": [1, 2]}))
    with pytest.raises(GenError) as e:
        read_model_file(path)
    assert_one_line(e, "not an NVlabs network pickle", "'a'")
    path = tmp_path / "weights.pt"
    torch.save({"fc.weight": torch.ones(2)}, path)
    with pytest.raises(GenError) as e:
        read_model_file(path)
    assert_one_line(e, "not a rosinality StyleGAN2 checkpoint")


def test_damaged_and_odd_files_are_one_line(tmp_path, marker):
    whole = tmp_path / "whole.pkl"
    write_nvlabs(whole, marker)
    raw = whole.read_bytes()
    torch.save(rosinality_checkpoint(), tmp_path / "whole.pt")
    zipped = (tmp_path / "whole.pt").read_bytes()
    cases = {
        "cut.pkl": (raw[: len(raw) // 2], "cut short"),
        "cut-early.pkl": (raw[:40], "cut short"),
        "cut.pt": (zipped[: len(zipped) // 2], "cut-short torch.save file"),
        "empty.pkl": (b"", "is empty"),
        "notes.txt": (b"hello, not a model\n", "not a StyleGAN model file"),
        "proto0.pkl": (pickle.dumps({"G": 1}, protocol=0), "not a StyleGAN model file"),
    }
    for name, (content, words) in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(GenError) as e:
            read_model_file(tmp_path / name)
        assert_one_line(e, str(tmp_path / name), words)
    with pytest.raises(GenError) as e:
        read_model_file(tmp_path)
    assert_one_line(e, "is a folder")
    with pytest.raises(GenError) as e:
        read_model_file(tmp_path / "missing.pkl")
    assert_one_line(e, "no model file at")
    with pytest.raises(GenError) as e:
        read_model_file(whole, max_bytes=1000)
    assert_one_line(e, "GiB", "not one gen reads")
    if hasattr(os, "mkfifo"):
        os.mkfifo(tmp_path / "pipe")
        with pytest.raises(GenError) as e:
            read_model_file(tmp_path / "pipe")
        assert_one_line(e, "not a regular file")


def test_numpy_1_names_are_read(tmp_path, marker):
    """Pickles from NVlabs' time name numpy.core where numpy 2 writes numpy._core."""
    path = tmp_path / "numpy1.pkl"
    data = write_nvlabs(path, marker, protocol=2)  # (GLOBAL opcodes: names as plain text, no lengths)
    raw = path.read_bytes()
    assert b"numpy._core.multiarray\n" in raw
    path.write_bytes(raw.replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n"))
    synthesis = read_model_file(path).generator.modules()["synthesis"]
    assert np.array_equal(synthesis.attributes["in_size"], data["G_ema"].synthesis.in_size)


def test_rosinality_checkpoint_in_torch_legacy_format_is_read(tmp_path):
    """torch.save before torch 1.6 wrote no zip."""
    ckpt = rosinality_checkpoint()
    path = tmp_path / "old.pt"
    torch.save(ckpt, path, _use_new_zipfile_serialization=False)
    model = read_model_file(path)
    assert model.format == "rosinality" and model.extras["args"]["size"] == 8
    for name, t in ckpt["g_ema"].items():
        assert torch.equal(model.generator[name], t)


@pytest.mark.parametrize("offset, size, stride, words", [(0, (10**6, 10**6), (0, 0), "does not fit its storage"),
                                                         (0, (2,), (10,), "does not fit its storage"),
                                                         (2, (1,), (1,), "does not fit its storage"),
                                                         (0, (-1,), (1,), "negative"),
                                                         (0, (2,), (-1,), "negative")])
def test_tensors_larger_than_their_data_are_refused(tmp_path, marker, offset, size, stride, words):
    """torch trusts a tensor's numbers: it grows a storage too small for the view (uninitialised memory, as much
    as the file says), and a few bytes viewed with zero strides as a huge tensor fill memory once copied."""
    import collections

    storage = torch.ones(2).storage()
    call = Call(torch._utils._rebuild_tensor_v2, storage, offset, size, stride, False, collections.OrderedDict())
    path = tmp_path / "huge.pkl"
    write_nvlabs(path, marker, extra={"x": call})
    with pytest.raises(GenError) as e:
        read_model_file(path)
    assert_one_line(e, str(path), words)
