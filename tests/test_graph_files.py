"""Issue 12, item 10: a bundle's graphs are self-contained and the bytes an engine loads are the bytes whose hash
was checked. ONNX's external data (tensors kept in a side file that no hash in manifest.json covers) is refused
by every entry point in one line, and no engine ever reads such a file; `gen export` never writes one."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import SHIPPED, gen_without_torch
from gen.runtime.bundle import BundleError, load_bundle, sha256_file
from gen.runtime.engines import onnx_file
from gen.runtime.engines.onnx_file import Malformed, external_tensor
from gen.runtime.errors import GenError
from gen.runtime.stylegan.generator import BundleGenerator
from gen.runtime.verify import verify

onnx = pytest.importorskip("onnx")
EMOJI = SHIPPED / "emoji"
SIDE = "mapping.weights"


def reseal(folder: Path, name: str) -> None:
    m = json.loads((folder / "manifest.json").read_text())
    m["files"][name] = {"sha256": sha256_file(folder / name), "size": (folder / name).stat().st_size}
    (folder / "manifest.json").write_text(json.dumps(m))


def one_line(e: pytest.ExceptionInfo, *words: str) -> str:
    text = str(e.value)
    assert isinstance(e.value, BundleError) and "\n" not in text.strip(), text
    for w in words:
        assert w in text, text
    return text


@pytest.fixture
def external(tmp_path) -> Path:
    """The shipped emoji bundle whose mapping graph keeps its weights in an unlisted side file, resealed: every
    hash in manifest.json matches."""
    folder = tmp_path / "b"
    shutil.copytree(EMOJI, folder)
    model = onnx.load(str(folder / "mapping.onnx"))
    onnx.save_model(model, str(folder / "mapping.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=SIDE, size_threshold=1024)  # (small constants stay: shape inference reads them)
    reseal(folder, "mapping.onnx")
    assert (folder / SIDE).stat().st_size > 1000 and SIDE not in json.loads((folder / "manifest.json").read_text())
    return folder


def test_the_side_file_is_real_and_would_change_the_pictures(external):
    """The hole as it was: opened by path, onnxruntime reads the side file, and editing it changes w."""
    import onnxruntime as ort

    z = np.random.default_rng(0).standard_normal((1, 64), dtype=np.float32)
    before = ort.InferenceSession(str(external / "mapping.onnx")).run(None, {"z": z})[0]
    weights = np.fromfile(external / SIDE, np.float32)
    (weights * 1.5).tofile(external / SIDE)
    after = ort.InferenceSession(str(external / "mapping.onnx")).run(None, {"z": z})[0]
    assert not np.allclose(before, after)
    load_bundle(external)  # every listed file is as the manifest says


def test_a_graph_with_external_data_is_one_line_everywhere(external, tmp_path, monkeypatch):
    bundle = load_bundle(external)
    words = ("mapping.onnx", f"({SIDE})", "re-export")
    with pytest.raises(GenError) as e:
        BundleGenerator(bundle, "cpu")
    one_line(e, *words)
    with pytest.raises(GenError) as e:
        verify(bundle, "cpu")
    one_line(e, *words)
    monkeypatch.chdir(external)  # loaded from bytes, onnxruntime would look for the side file here
    with pytest.raises(GenError) as e:
        BundleGenerator(load_bundle("."), "cpu")
    one_line(e, *words)
    for command in (["sample", str(external), "-o", str(tmp_path / "s.png")], ["verify", str(external)],
                    ["sample", ".", "-o", str(tmp_path / "s.png")]):
        p = gen_without_torch(*command, timeout=60, cwd=external)
        assert p.returncode == 2 and "Traceback" not in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr
        assert SIDE in p.stderr and not (tmp_path / "s.png").exists()


def test_onnxruntime_never_reads_a_side_file_even_if_the_check_missed_one(external, monkeypatch):
    """The second lock: sessions are made from bytes, with external data pointed at a folder that cannot exist."""
    monkeypatch.setattr(onnx_file, "external_tensor", lambda data: None)
    monkeypatch.chdir(external)
    with pytest.raises(GenError) as e:
        BundleGenerator(load_bundle("."), "cpu")
    one_line(e, "'mapping.onnx' cannot be loaded by onnxruntime")


def test_a_graph_changed_after_loading_is_refused(tmp_path):
    """The bytes an engine loads are the bytes whose hash is checked: no window between load_bundle and the run."""
    folder = tmp_path / "b"
    shutil.copytree(EMOJI, folder)
    bundle = load_bundle(folder)
    f = folder / "mapping.onnx"
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 1  # inside the weights: onnxruntime would load it and draw other pictures
    f.write_bytes(bytes(data))
    with pytest.raises(GenError) as e:
        BundleGenerator(bundle, "cpu")
    one_line(e, "'", "mapping.onnx' fails its sha256 check")
    f.write_bytes(bytes(data) + b"\0")
    with pytest.raises(GenError) as e:
        verify(bundle, "cpu")
    one_line(e, "bytes, the manifest says")


# -- where ONNX keeps tensors: each place is looked at -------------------------------------------

def _model(graph, functions=()):
    from onnx import helper

    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("local", 1)],
                             functions=list(functions))


def _places():
    """(where, a model with one tensor in that place marked external)."""
    from onnx import TensorProto, helper, numpy_helper
    from onnx.external_data_helper import set_external_data

    def tensor(name: str):
        t = numpy_helper.from_array(np.ones(4, np.float32), name)
        set_external_data(t, location=f"{name}.bin")
        t.ClearField("raw_data")
        return t

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])
    cond = helper.make_tensor_value_info("c", TensorProto.BOOL, [])
    const = lambda name: helper.make_node("Constant", [], ["y"], value=tensor(name))  # noqa: E731
    branch = lambda name: helper.make_graph([const(name)], "branch", [], [y])  # noqa: E731
    yield "initializer", _model(helper.make_graph([helper.make_node("Add", ["x", "w"], ["y"])], "g", [x], [y],
                                                  [tensor("w")]))
    yield "attribute", _model(helper.make_graph([const("k")], "g", [], [y]))
    yield "subgraph", _model(helper.make_graph(
        [helper.make_node("If", ["c"], ["y"], then_branch=branch("t"), else_branch=branch("e"))], "g", [cond], [y]))
    yield "sparse", _model(helper.make_graph([const("unused")], "g", [], [y], sparse_initializer=[
        helper.make_sparse_tensor(tensor("v"), numpy_helper.from_array(np.array([0], np.int64), "i"), [4])]))
    fn = helper.make_function("local", "f", [], ["y"], [const("f")], [helper.make_opsetid("", 18)])
    yield "function", _model(helper.make_graph([helper.make_node("f", [], ["y"], domain="local")], "g", [], [y]),
                             [fn])


@pytest.mark.parametrize("where,model", list(_places()), ids=[w for w, _ in _places()])
def test_an_external_tensor_is_found_wherever_it_is(where, model):
    found = external_tensor(model.SerializeToString())
    assert found is not None and found[1] == f"{found[0]}.bin", (where, found)


def _field(number: int, wire: int, payload: bytes | int) -> bytes:
    def varint(v: int) -> bytes:
        out = b""
        while v >= 0x80:
            out, v = out + bytes([v & 0x7F | 0x80]), v >> 7
        return out + bytes([v])

    if wire == 0:
        return varint(number << 3) + varint(payload)
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def test_the_reader_counts_what_protobuf_would_and_refuses_what_it_cannot_read():
    tensor = _field(8, 2, b"w") + _field(14, 0, 2**32 + 1)  # data_location: an int32 enum, so 2**32 + 1 is 1
    assert external_tensor(_field(7, 2, _field(5, 2, tensor))) == ("w", "")
    assert external_tensor(_field(7, 2, _field(5, 2, _field(8, 2, b"w") + _field(14, 0, 0)))) is None
    assert external_tensor(_field(7, 2, _field(5, 2, _field(8, 2, b"w") + _field(13, 2, b"")))) == ("w", "")
    assert external_tensor(_field(99, 2, _field(5, 2, tensor))) is None  # an unknown field: protobuf skips it
    for f in sorted((SHIPPED).glob("*/*.onnx")):
        assert external_tensor(f.read_bytes()) is None, f
    for bad in (b"\x3a\x10abc", b"\x3a", b"\xff" * 11, b"\x0b\x0c", _field(7, 2, b"\x2a\x05ab")):
        with pytest.raises(Malformed):
            external_tensor(bad)


def test_a_damaged_graph_is_one_line(tmp_path):
    folder = tmp_path / "b"
    shutil.copytree(EMOJI, folder)
    f = folder / "mapping.onnx"
    f.write_bytes(f.read_bytes()[:-7])
    reseal(folder, "mapping.onnx")
    with pytest.raises(GenError) as e:
        BundleGenerator(load_bundle(folder), "cpu")
    one_line(e, "mapping.onnx' cannot be loaded by onnxruntime", "copy the bundle again")


# -- gen export writes whole graphs ----------------------------------------------------------------

def test_export_writes_graphs_whole_and_never_a_side_file(external, tmp_path):
    from gen.export.onnx_graph import save_graph

    whole = onnx.load(str(external / "mapping.onnx"))  # (reads the side file back in)
    save_graph(whole, tmp_path / "mapping.onnx")
    assert (tmp_path / "mapping.onnx").read_bytes() == whole.SerializeToString()
    assert external_tensor((tmp_path / "mapping.onnx").read_bytes()) is None
    marked = onnx.load(str(external / "mapping.onnx"), load_external_data=False)  # tensors still point outside
    with pytest.raises(GenError, match="keeps tensor .* in another file"):
        save_graph(marked, tmp_path / "out.onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b", "mapping.onnx"]  # no graph, no side file
