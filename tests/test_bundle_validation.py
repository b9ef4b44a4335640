"""Bad bundles: every mutation of a manifest or its files ends in a clear BundleError, never a traceback."""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gen.runtime.bundle import FORMAT_VERSION, BundleError, load_bundle, sha256_file
from gen.runtime.stylegan.generator import BundleGenerator
from gen.runtime.verify import verify


@pytest.fixture(scope="module")
def good_bundle(tmp_path_factory) -> Path:
    from conftest import MODELS, make_checkpoint
    from gen.export.stylegan import export_stylegan

    folder = tmp_path_factory.mktemp("good")
    checkpoint = make_checkpoint(folder / "c.safetensors", MODELS["sg2-16"], steps=1)
    bundle, _ = export_stylegan(checkpoint, folder / "bundle")
    return bundle.path


def copy_bundle(src: Path, dst: Path) -> Path:
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst)
    return dst


def write_manifest(folder: Path, manifest) -> None:
    (folder / "manifest.json").write_text(json.dumps(manifest))


def reseal(folder: Path, name: str) -> None:
    """Update a file's checksum so a damaged file gets past the checksum to the next line of defence."""
    m = json.loads((folder / "manifest.json").read_text())
    m["files"][name] = {"sha256": sha256_file(folder / name), "size": (folder / name).stat().st_size}
    write_manifest(folder, m)


def use(folder: Path) -> None:
    """Everything a device does with a bundle: load, open the runners, verify, sample."""
    bundle = load_bundle(folder)
    verify(bundle, "cpu")
    BundleGenerator(bundle, "cpu").images([0, 1])


# -- property-based: random mutations of the manifest ------------------------------------------

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-10**12, 10**12) | st.floats(allow_nan=True) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=6,
)


def paths_of(tree, prefix=()):
    yield prefix
    if isinstance(tree, dict):
        for k, v in tree.items():
            yield from paths_of(v, prefix + (k,))
    elif isinstance(tree, list):
        for i, v in enumerate(tree[:4]):
            yield from paths_of(v, prefix + (i,))


def mutate(tree, path, action, value):
    tree = copy.deepcopy(tree)
    if not path:
        return value
    parent = tree
    for key in path[:-1]:
        parent = parent[key]
    last = path[-1]
    if action == "delete":
        del parent[last]
    elif action == "replace":
        parent[last] = value
    else:  # add an unknown field beside it
        if isinstance(parent, dict):
            parent["unexpected_" + str(last)] = value
        else:
            parent.append(value)
    return tree


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_mutated_manifest_is_a_clear_error(good_bundle, tmp_path_factory, data):
    manifest = json.loads((good_bundle / "manifest.json").read_text())
    paths = list(paths_of(manifest))
    path = data.draw(st.sampled_from(paths), label="path")
    action = data.draw(st.sampled_from(["delete", "replace", "add"]), label="action")
    value = data.draw(JSON_VALUES, label="value")
    mutated = mutate(manifest, path, action, value)
    folder = copy_bundle(good_bundle, tmp_path_factory.mktemp("m") / "b")
    write_manifest(folder, mutated)
    try:
        use(folder)
    except BundleError as e:
        assert str(e).strip() and "Traceback" not in str(e)
    except Exception as e:  # anything but a BundleError (or GenError) is a bug
        from gen.runtime.errors import GenError

        assert isinstance(e, GenError), f"{type(e).__name__}: {e} after {action} at {path}"


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.sampled_from(["mapping.onnx", "synthesis.onnx", "golden.npz"]),
       cut=st.floats(0.0, 0.99), flip=st.booleans())
def test_damaged_files_are_clear_errors(good_bundle, tmp_path_factory, name, cut, flip):
    folder = copy_bundle(good_bundle, tmp_path_factory.mktemp("f") / "b")
    data = bytearray((folder / name).read_bytes())
    if flip:
        i = int(cut * len(data))
        data[i] ^= 0xFF
    else:
        data = data[: int(cut * len(data))]
    (folder / name).write_bytes(bytes(data))
    with pytest.raises(BundleError, match="copy the bundle again"):
        load_bundle(folder)
    # With the checksum updated, the damage must still be caught downstream, clearly.
    reseal(folder, name)
    from gen.runtime.errors import GenError

    try:
        use(folder)
    except GenError as e:
        assert str(e)
    else:  # a flipped byte inside float data can leave a loadable file: then verify must flag it
        assert flip


# -- the specific cases of the issue -------------------------------------------------------------


def test_truncated_onnx_file(good_bundle, tmp_path):
    folder = copy_bundle(good_bundle, tmp_path / "b")
    f = folder / "synthesis.onnx"
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    with pytest.raises(BundleError, match=r"'synthesis.onnx' is \d+ bytes, the manifest says \d+"):
        load_bundle(folder)
    reseal(folder, "synthesis.onnx")
    with pytest.raises(BundleError, match="cannot be loaded by onnxruntime"):
        BundleGenerator(load_bundle(folder), "cpu")


def test_checksum_mismatch(good_bundle, tmp_path):
    folder = copy_bundle(good_bundle, tmp_path / "b")
    f = folder / "mapping.onnx"
    data = bytearray(f.read_bytes())
    data[-10] ^= 1
    f.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="'mapping.onnx' fails its sha256 check: a corrupt copy"):
        load_bundle(folder)


@pytest.mark.parametrize("version,word", [(FORMAT_VERSION + 1, "newer"), (FORMAT_VERSION - 1, "older")])
def test_other_format_version(good_bundle, tmp_path, version, word):
    folder = copy_bundle(good_bundle, tmp_path / "b")
    m = json.loads((folder / "manifest.json").read_text())
    m["format_version"] = version
    write_manifest(folder, m)
    with pytest.raises(BundleError, match=f"format version {version} is {word}"):
        load_bundle(folder)


def test_missing_file_unknown_kind_and_wrong_shapes(good_bundle, tmp_path):
    folder = copy_bundle(good_bundle, tmp_path / "b")
    (folder / "golden.npz").unlink()
    with pytest.raises(BundleError, match="missing file 'golden.npz'"):
        load_bundle(folder)
    folder = copy_bundle(good_bundle, tmp_path / "c")
    m = json.loads((folder / "manifest.json").read_text())
    m["kind"] = "vae"
    write_manifest(folder, m)
    with pytest.raises(BundleError, match="kind"):
        load_bundle(folder)
    folder = copy_bundle(good_bundle, tmp_path / "d")
    m = json.loads((folder / "manifest.json").read_text())
    m["graphs"]["synthesis"]["inputs"][0]["shape"] = ["batch", 5]
    write_manifest(folder, m)
    with pytest.raises(BundleError, match=r"synthesis input ws has shape \['batch', 5\]"):
        load_bundle(folder)
    gen = BundleGenerator(load_bundle(good_bundle), "cpu")
    from gen.runtime.errors import GenError

    with pytest.raises(GenError, match=r"input 'ws' of synthesis.onnx must have shape \['batch', \d+, \d+\]"):
        gen.synthesize(np.zeros((1, 2, 3), np.float32))


def test_graph_signature_mismatches_are_caught(good_bundle, tmp_path):
    cases = {
        "noise input name": lambda m: m["stylegan"]["noise_inputs"].__setitem__(0, "noise_0x"),
        "mapping output": lambda m: m["graphs"]["mapping"]["outputs"][0].__setitem__("name", "w2"),
        "golden output": lambda m: m["golden"]["cases"][0]["outputs"].__setitem__("nope", "mapping/0/w"),
        "no noise inputs": lambda m: m["stylegan"].__setitem__("noise_inputs", []),
    }
    for what, change in cases.items():
        folder = copy_bundle(good_bundle, tmp_path / "b")
        m = json.loads((folder / "manifest.json").read_text())
        change(m)
        write_manifest(folder, m)
        with pytest.raises(BundleError):
            use(folder)
        assert what


def test_overwrite_never_deletes_a_folder_that_is_not_a_bundle(tmp_path):
    from gen.export.writer import write_bundle
    from gen.runtime.bundle import is_bundle
    from gen.runtime.errors import GenError

    app = tmp_path / "webapp"
    app.mkdir()
    (app / "manifest.json").write_text('{"name": "my web app"}')
    assert not is_bundle(app)
    with pytest.raises(GenError, match="choose another --out"):
        write_bundle(app, lambda folder: {}, overwrite=True)
    assert (app / "manifest.json").read_text() == '{"name": "my web app"}'


def test_cli_bad_bundle_is_one_line(good_bundle, tmp_path):
    folder = copy_bundle(good_bundle, tmp_path / "b")
    (folder / "manifest.json").write_text("{ not json")
    p = subprocess.run([sys.executable, "-m", "gen.cli", "info", str(folder)], capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 2 and "not valid JSON" in p.stderr and "Traceback" not in p.stderr
    p = subprocess.run([sys.executable, "-m", "gen.cli", "verify", str(tmp_path / "none")],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "does not exist" in p.stderr


def test_export_is_atomic_and_refuses_to_overwrite(good_bundle, tmp_path):
    from gen.runtime.errors import GenError

    target = tmp_path / "out"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    from gen.export.writer import write_bundle

    with pytest.raises(GenError, match="already exists"):
        write_bundle(target, lambda folder: {})
    assert (target / "keep.txt").read_text() == "mine"

    def broken(folder):
        (folder / "half.onnx").write_bytes(b"x")
        raise RuntimeError("export crashed")

    with pytest.raises(RuntimeError):
        write_bundle(tmp_path / "new", broken)
    assert not (tmp_path / "new").exists() and not list(tmp_path.glob(".new*"))
