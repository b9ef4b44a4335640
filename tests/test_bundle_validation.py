"""Bad bundles: every mutation of a manifest or its files ends in a clear BundleError, never a traceback."""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import SHIPPED, gen_without_torch, json_paths, tiny_dream_bundle
from conftest import edited_bundle as edited
from gen.runtime.bundle import (
    FORMAT_VERSION,
    MAX_MANIFEST_BYTES,
    MIN_FORMAT_VERSION,
    BundleError,
    is_bundle,
    load_bundle,
    sha256_file,
)
from gen.runtime.stylegan.generator import BundleGenerator
from gen.runtime.verify import verify


@pytest.fixture(scope="module")
def good_bundle(sg2_16_export) -> Path:
    """The session's sg2-16 bundle (conftest.sg2_16_export): only read, or copied to change."""
    return sg2_16_export[1].path


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
    paths = list(json_paths(manifest))
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


@pytest.mark.parametrize("version,word", [(FORMAT_VERSION + 1, "newer"), (MIN_FORMAT_VERSION - 1, "older")])
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


# -- issue 12: the bundle boundary (a hostile tester's manifests) --------------------------------

def graph_input(m: dict, graph: str, name: str) -> dict:
    return next(t for t in m["graphs"][graph]["inputs"] if t["name"] == name)


def one_line_error(p: subprocess.CompletedProcess, *words: str) -> None:
    """A CLI run that ended in a GenError: exit 2, one line, no traceback."""
    assert p.returncode == 2, (p.returncode, p.stderr[-2000:])
    assert "Traceback" not in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr[-2000:]
    for w in words:
        assert w in p.stderr, p.stderr


EMOJI = SHIPPED / "emoji"
DREAM = SHIPPED / "dream-lite0"


def test_manifest_that_is_a_device_or_a_fifo_is_refused_without_reading_it(tmp_path):
    """Item 1: /dev/zero would be read until memory runs out, a FIFO waits for a writer forever."""
    import os

    folder = copy_bundle(EMOJI, tmp_path / "zero")
    (folder / "manifest.json").unlink()
    (folder / "manifest.json").symlink_to("/dev/zero")
    assert not is_bundle(folder)
    with pytest.raises(BundleError, match="is not a regular file"):
        load_bundle(folder)
    fifo = copy_bundle(EMOJI, tmp_path / "fifo")
    (fifo / "manifest.json").unlink()
    os.mkfifo(fifo / "manifest.json")
    for command in (["info", str(fifo)], ["sample", str(fifo), "-o", str(tmp_path / "s.png")]):
        one_line_error(gen_without_torch(*command, timeout=60), "is not a regular file")


def test_oversized_manifest_is_refused(tmp_path):
    folder = copy_bundle(EMOJI, tmp_path / "big")
    text = (folder / "manifest.json").read_text()
    (folder / "manifest.json").write_text(text + " " * MAX_MANIFEST_BYTES)  # valid JSON, absurd size
    assert not is_bundle(folder)
    with pytest.raises(BundleError, match="more than a manifest's limit"):
        load_bundle(folder)


@pytest.mark.parametrize("text,words", [("[" * 100000 + "]" * 100000, "nested too deeply"),
                                        ("[" * 33 + "]" * 33, "nested too deeply"),
                                        ('{"a": "' + "[" * 5000 + '\\"' + '"}', "format"),
                                        ('{"format": ' + "9" * 5000 + "}", "not valid JSON"),
                                        ('{"a": "' + '\\"' * 1_500_000, "not valid JSON")],
                         ids=["deep", "33-deep", "brackets-in-a-string", "long-int", "unclosed-string"])
def test_pathological_json_is_one_line(tmp_path, text, words):
    """Item 2: RecursionError and the int digit limit's ValueError were tracebacks in every command."""
    folder = copy_bundle(EMOJI, tmp_path / "b")
    (folder / "manifest.json").write_text(text)
    with pytest.raises(BundleError, match=words):
        load_bundle(folder)
    assert not is_bundle(folder)
    photo = str(SHIPPED / "photos" / "chelsea.jpg")
    for command in (["info", str(folder)], ["verify", str(folder)],
                    ["sample", str(folder), "-o", str(tmp_path / "s.png")],
                    ["dream", photo, "--bundle", str(folder), "-o", str(tmp_path / "d.png")]):
        one_line_error(gen_without_torch(*command, timeout=60), words)


def test_sample_shows_a_broken_bundles_own_error_without_torch(tmp_path):
    """Item 11: a folder with a manifest.json is a bundle to `gen sample`, never a checkpoint that needs torch."""
    folder = edited(EMOJI, tmp_path / "b", lambda m: m["stylegan"].__setitem__("z_dim", "many"))
    p = gen_without_torch("sample", str(folder), "-o", str(tmp_path / "s.png"))
    assert p.returncode == 2 and "stylegan.z_dim" in p.stderr and "torch" not in p.stderr, p.stderr
    folder = edited(EMOJI, tmp_path / "c", lambda m: m.__setitem__("format", "other"))  # not ours: say so
    p = gen_without_torch("sample", str(folder), "-o", str(tmp_path / "s.png"))
    one_line_error(p, "not a gen bundle")


def fp16_img(m: dict) -> None:
    m["graphs"]["synthesis_fp16"]["outputs"][0]["shape"] = ["batch", 3, 16, 16]


def noise_5x5(m: dict) -> None:
    for g in ("synthesis", "synthesis_fp16"):
        graph_input(m, g, "noise_0")["shape"] = ["batch", 1, 5, 5]


@pytest.mark.parametrize("change,words,sampling", [
    (lambda m: graph_input(m, "mapping", "z").__setitem__("dtype", "int64"),
     "input 'z' is tensor(float) in the graph, the manifest says int64", True),
    (lambda m: graph_input(m, "synthesis_fp16", "ws").__setitem__("dtype", "float16"),
     "input 'ws' is tensor(float) in the graph", False),
    (fp16_img, "output 'img' has shape ['batch', 3, 32, 32] in the graph", False),
    (noise_5x5, "input 'noise_0' has shape ['batch', 1, 4, 4] in the graph", True),
])
def test_manifest_dtypes_and_sizes_are_checked_against_the_graph(tmp_path, change, words, sampling):
    """Item 3: onnxruntime's own view of each graph's inputs and outputs must agree with the manifest."""
    bundle = load_bundle(edited(EMOJI, tmp_path / "b", change))
    with pytest.raises(BundleError, match=re.escape(words)):
        verify(bundle, "cpu")
    if sampling:
        with pytest.raises(BundleError, match=re.escape(words)):
            BundleGenerator(bundle, "cpu")


def noise_shape(m: dict, shape: list) -> None:
    for g in ("synthesis", "synthesis_fp16"):
        graph_input(m, g, "noise_0")["shape"] = shape


def huge_z(m: dict) -> None:
    m["stylegan"]["z_dim"] = 2**40
    m["graphs"]["mapping"]["inputs"][0]["shape"] = ["batch", 2**40]


def narrow_w(m: dict) -> None:
    m["graphs"]["mapping"]["outputs"][0]["shape"] = ["batch", 16]


@pytest.mark.parametrize("change,words", [
    (lambda m: noise_shape(m, ["batch", 1, -4, -4]), "shape[2]: Expected `int` >= 1"),
    (lambda m: noise_shape(m, ["batch", 1, 0, 4]), "shape[2]: Expected `int` >= 1"),
    (lambda m: noise_shape(m, ["batch", 1, 4096, 4096]), "h, w <= 32"),
    (huge_z, "shape[1]: Expected `int` <= 65536"),  # (the graph's z; stylegan.z_dim's bound is 4096)
    (narrow_w, "mapping must output w [batch, 64]"),
    (lambda m: m["stylegan"].__setitem__("num_ws", 10**9), "stylegan.num_ws: Expected `int` <= 64"),
])
def test_shape_integers_are_bounded(tmp_path, change, words):
    """Item 4: negative, zero or absurd sizes were numpy ValueError / MemoryError tracebacks in `gen sample`."""
    folder = edited(EMOJI, tmp_path / "b", change)
    with pytest.raises(BundleError, match=re.escape(words)):
        use(folder)


@pytest.mark.parametrize("change,words", [
    (lambda m: m["files"]["mapping.onnx"].__setitem__("size", "big"), "files['mapping.onnx'].size: Expected `int`"),
    (lambda m: m["graphs"]["synthesis"]["inputs"][0]["shape"].__setitem__(1, 0),
     "graphs['synthesis'].inputs[0].shape[1]: Expected `int` >= 1"),
    (lambda m: m["golden"]["tolerances"]["mapping"].__setitem__("rel_l2", "x"),
     "golden.tolerances['mapping'].rel_l2: Expected `float | null`, got `str`"),
])
def test_a_schema_error_in_a_dict_names_its_key(tmp_path, change, words):
    """msgspec writes a dict's key as `[...]`: the error names the graph, file or tolerance that is wrong."""
    folder = edited(EMOJI, tmp_path / "b", change)
    with pytest.raises(BundleError, match=re.escape(words)):
        load_bundle(folder)


def test_mapping_output_of_the_wrong_width_is_refused_at_run_time(tmp_path):
    """Item 4: the graph itself, whatever the manifest says: w must be [batch, w_dim]."""

    class Narrow:
        def run(self, feeds):
            return {"w": np.zeros((len(feeds["z"]), 3), np.float32)}

        def close(self):
            pass

    with BundleGenerator(load_bundle(EMOJI), "cpu") as gen:
        gen.mapping.close()
        gen.mapping = Narrow()
        with pytest.raises(BundleError, match=r"w of shape \[2, 3\] for 2 latents, not \[2, 64\]"):
            gen.images([0, 1])


def rewrite_golden(folder: Path, **arrays) -> None:
    with np.load(folder / "golden.npz") as z:
        data = {k: z[k] for k in z.files}
    data.update(arrays)
    np.savez(folder / "golden.npz", **data)
    reseal(folder, "golden.npz")


@pytest.mark.parametrize("key,value,words", [
    ("mapping/0/z", np.array([["x"] * 64]), "golden array 'mapping/0/z' is <U1 [1, 64] but 'z' is float32"),
    ("mapping/0/w", np.array([["x"] * 64]), "golden array 'mapping/0/w' is <U1"),
    ("mapping/0/w", np.zeros((1, 64), np.float64), "is float64 [1, 64] but 'w' is float32"),
    ("mapping/0/z", np.zeros((1, 63), np.float32), "is float32 [1, 63] but 'z' is float32 ['batch', 64]"),
    ("mapping/0/w", np.zeros((1, 64), np.complex64), "is complex64"),
])
def test_golden_arrays_must_be_numbers_of_the_declared_dtype_and_shape(tmp_path, key, value, words):
    """Item 5: a golden array of strings (rehashed) was a ValueError traceback in `gen verify`."""
    folder = copy_bundle(EMOJI, tmp_path / "b")
    rewrite_golden(folder, **{key: value})
    with pytest.raises(BundleError, match=re.escape(words)):
        verify(load_bundle(folder), "cpu")


def no_noise(m: dict) -> None:
    m["stylegan"]["noise_inputs"] = []
    for g in ("synthesis", "synthesis_fp16"):
        m["graphs"][g]["inputs"] = m["graphs"][g]["inputs"][:2]
    for case in m["golden"]["cases"]:
        case["inputs"] = {k: v for k, v in case["inputs"].items() if not k.startswith("noise")}


def test_a_stylegan_bundle_needs_noise_inputs(tmp_path):
    """Item 6: `gen info` on noise_inputs [] was an IndexError. Every StyleGAN2 (and 1) synthesis layer has noise
    and `gen export` lists one input per layer, so such a bundle without any is refused (StyleGAN3 has none:
    tests/test_stylegan3_bundle.py)."""
    from gen.runtime.report import info_report

    folder = edited(EMOJI, tmp_path / "b", no_noise)
    with pytest.raises(BundleError, match="noise_inputs is empty, but every stylegan2 layer has noise"):
        info_report(folder)


def test_tiny_dream_bundle_dreams_and_verifies(tmp_path):
    from gen.runtime.dream.engine import bundle_engine

    bundle = load_bundle(tiny_dream_bundle(tmp_path / "d"))
    assert all(c.ok for c in verify(bundle, "cpu"))
    engine = bundle_engine(bundle, "cpu")
    grad, objective = engine.gradient(np.full((1, 3, 9, 8), 0.5, np.float32))
    assert grad.shape == (1, 3, 9, 8) and objective == pytest.approx(0.25)
    engine.close()


@pytest.mark.parametrize("change,words", [
    (lambda m: m["preprocessing"].__setitem__("mean", [0.5, 0.5]),
     "preprocessing.mean: Expected `array` of length >= 3"),
    (lambda m: m["preprocessing"].__setitem__("std", [0.2] * 4), "preprocessing.std: Expected `array` of length <= 3"),
    (lambda m: m["dream"]["objective"].__setitem__("terms", 5), "objective.terms must be a list"),
    (lambda m: m["dream"]["objective"].__setitem__("terms", None), "objective.terms must be a list"),
    (lambda m: m["dream"]["objective"].__setitem__("terms", [1, {}]), "objective.terms must be a list of strings"),
    (lambda m: m["dream"]["objective"].__setitem__("class", "cat"), "objective.class must be a int"),
])
def test_dream_manifest_values_are_checked(tmp_path, change, words):
    """Item 7: these were tracebacks in `gen dream --bundle`."""
    from gen.runtime.dream.engine import bundle_engine

    folder = edited(DREAM, tmp_path / "b", change)
    with pytest.raises(BundleError, match=re.escape(words)):
        bundle_engine(folder, "cpu")


@pytest.mark.parametrize("bad,objective_shape,words", [
    ("objective", None, "output 'objective' has shape [1, 3, 1, 1] in the graph, the manifest says float32 []"),
    ("grad", None, "a gradient of shape [1, 3, 1, 8] for an image of shape [1, 3, 8, 8]"),
    (None, [1, 3], "output 'objective' has shape [] in the graph, the manifest says float32 [1, 3]"),
])
def test_dream_gradient_graph_must_give_a_scalar_and_a_gradient_of_the_image_shape(tmp_path, bad, objective_shape,
                                                                                   words):
    """Item 7: verify reported these as FAIL; dreaming did not check and failed later in NumPy."""
    from gen.runtime.dream.engine import bundle_engine

    bundle = load_bundle(tiny_dream_bundle(tmp_path / "d", bad, objective_shape))
    with pytest.raises(BundleError, match=re.escape(words)):
        engine = bundle_engine(bundle, "cpu")
        engine.gradient(np.zeros((1, 3, 8, 8), np.float32))
    if bad == "grad":
        assert not all(c.ok for c in verify(bundle, "cpu"))


def test_dream_gradient_checks_what_the_graph_returns(tmp_path):
    """Item 7: the graph's own outputs, whatever its signature says (onnxruntime may not know their shapes)."""
    from gen.runtime.dream.engine import bundle_gradient

    gradient, runner = bundle_gradient(load_bundle(tiny_dream_bundle(tmp_path / "d")), "cpu")
    runner.run = lambda feeds: {"grad": feeds["image"], "objective": np.zeros((2, 2), np.float32)}
    with pytest.raises(BundleError, match=re.escape("an objective of shape [2, 2], not a scalar")):
        gradient(np.zeros((1, 3, 8, 8), np.float32))
    runner.close()


@pytest.mark.parametrize("section,key,value", [
    ("stylegan", "default_psi", float("nan")), ("stylegan", "default_psi", float("inf")),
    ("stylegan", "default_psi", 1e300), ("stylegan", "w_avg", "nan-entry"), ("stylegan", "w_avg", "huge-entry"),
    ("preprocessing", "value_range", [float("nan"), 1.0]), ("preprocessing", "value_range", [1.0, -1.0]),
    ("preprocessing", "value_range", [-1.0, float("inf")]), ("preprocessing", "mean", [0.5, float("nan"), 0.5]),
    ("preprocessing", "std", [0.2, float("inf"), 0.2]), ("preprocessing", "std", [0.2, 0.0, 0.2]),
    ("preprocessing", "std", [0.2, -0.2, 0.2]),
])
def test_non_finite_numbers_are_refused(tmp_path, section, key, value):
    """Item 8 (the schema's part): NaN and infinity in what feeds pictures, std 0, a range running backwards."""

    def change(m):
        v = value
        if value in ("nan-entry", "huge-entry"):
            v = list(m["stylegan"]["w_avg"])
            v[3] = float("nan") if value == "nan-entry" else 1e300
        m[section][key] = v

    folder = edited(EMOJI, tmp_path / "b", change)
    # NaN and infinities are refused as the JSON is read (RFC 8259 has neither), wherever they are; the rest by the
    # field's bounds or check, which the message names
    finite = value not in ("nan-entry",) and all(np.isfinite(v) for v in np.ravel([value]) if isinstance(v, float))
    words = re.escape(f"{section}.{key}") + "[[0-9]*]*: |" + re.escape(f"{section}: {key}") if finite else (
        "manifest.json is not valid JSON [(](NaN|Infinity) is not a number a manifest may hold[)]")
    with pytest.raises(BundleError, match=words):
        load_bundle(folder)


def tolerance(graph: str, value) -> callable:
    return lambda m: m["golden"]["tolerances"].__setitem__(graph, value)


@pytest.mark.parametrize("change,words", [
    (tolerance("mapping", {}), "a tolerance needs at least one of max_abs, rel_l2, psnr_db"),
    (tolerance("mapping", {"rel_l2": 1e300}), "rel_l2: Expected `float` <= 0.01"),
    (tolerance("mapping", {"rel_l2": float("nan")}), "NaN is not a number a manifest may hold"),
    (tolerance("mapping", {"max_abs": 1e300}), "mapping.max_abs 1e+300 is looser than 0.01 of the value range"),
    (tolerance("mapping", {"max_abs": 0.021}), "is looser than 0.01 of the value range [-1.0, 1.0]"),
    (tolerance("synthesis_fp16", {"psnr_db": 1}), "psnr_db: Expected `float` >= 30.0"),
    (lambda m: m["golden"]["cases"][0].__setitem__("outputs", {}), "outputs: Expected `object` of length >= 1"),
    (lambda m: m["golden"].__setitem__("cases", [c for c in m["golden"]["cases"] if c["graph"] != "synthesis"]),
     "graphs ['synthesis'] have no golden cases"),
])
def test_a_manifest_cannot_switch_verification_off(tmp_path, change, words):
    """Item 9: these made `gen verify` say "all within tolerance" whatever the graphs computed."""
    folder = edited(EMOJI, tmp_path / "b", change)
    with pytest.raises(BundleError, match=re.escape(words)):
        load_bundle(folder)


def test_tolerances_at_the_runtimes_limits_are_accepted(tmp_path):
    def change(m):
        m["golden"]["tolerances"].update({"mapping": {"rel_l2": 1e-2, "max_abs": 0.02},
                                          "synthesis_fp16": {"psnr_db": 30}})

    assert all(c.ok for c in verify(load_bundle(edited(EMOJI, tmp_path / "b", change)), "cpu"))


@pytest.mark.parametrize("path", [EMOJI, DREAM])
def test_shipped_bundles_meet_the_bounds(path):
    assert is_bundle(path)
    from gen.runtime.report import info_report

    assert info_report(path)


def shift_w_avg(m: dict) -> None:
    m["stylegan"]["w_avg"] = [v + 0.05 for v in m["stylegan"]["w_avg"]]


@pytest.mark.parametrize("change,failing", [
    (lambda m: m["stylegan"].__setitem__("default_psi", 0.701), {"ws"}),
    (lambda m: m["stylegan"].__setitem__("default_psi", 1.0), {"ws", "image"}),
    (shift_w_avg, {"ws"}),
    (lambda m: m["preprocessing"].__setitem__("value_range", [-1.0, 1.1]), {"image"}),
    (lambda m: m["preprocessing"].__setitem__("value_range", [-0.9, 1.0]), {"image"}),
])
def test_verify_covers_what_the_manifest_feeds_into_the_pictures(tmp_path, change, failing):
    """Item 8: a changed w_avg, psi or value range changed every picture while verify said all within tolerance.
    The graphs' own cases still pass: only the redrawn seeds can tell."""
    checks = verify(load_bundle(edited(EMOJI, tmp_path / "b", change)), "cpu")
    failed = {c.output for c in checks if not c.ok}
    assert failing <= failed and {c.graph for c in checks if not c.ok} == {"pictures"}, failed


def test_the_shipped_pictures_are_redrawn_and_pass():
    checks = [c for c in verify(load_bundle(EMOJI), "cpu") if c.graph == "pictures"]
    assert {c.output for c in checks} == {"ws", "image"} and all(c.ok for c in checks)
    assert max(c.max_abs for c in checks if c.output == "image") <= 1  # levels: only rounding ties differ


@pytest.mark.parametrize("change,words", [
    (lambda m: m["golden"].__setitem__("pictures", []), "golden.pictures is empty"),
    (lambda m: m["golden"].pop("pictures") and None, "golden.pictures is empty"),
    (lambda m: m["golden"]["pictures"][0].__setitem__("seeds", [2**32]),
     "golden.pictures[0].seeds[0]: Expected `int` <= 4294967295"),
    (lambda m: m["golden"]["pictures"][0].__setitem__("image", "synthesis/0/const/img"),
     "golden array 'synthesis/0/const/img' is float32 [1, 3, 32, 32] but 'image' is uint8 [1, 32, 32, 3]"),
    (lambda m: m["golden"]["pictures"][0].__setitem__("seeds", [0, 1]),
     "is float32 [1, 8, 64] but 'ws' is float32 [2, 8, 64]"),
])
def test_a_manifest_cannot_drop_or_bend_the_picture_check(tmp_path, change, words):
    folder = edited(EMOJI, tmp_path / "b", change)
    with pytest.raises(BundleError, match=re.escape(words)):
        verify(load_bundle(folder), "cpu")


def test_the_picture_check_is_one_line_from_the_cli(tmp_path):
    folder = edited(EMOJI, tmp_path / "b", lambda m: m["stylegan"].__setitem__("default_psi", 0.5))
    p = gen_without_torch("verify", str(folder))
    assert p.returncode == 1 and "Traceback" not in p.stderr and "outside tolerance" in p.stdout, p.stdout[-3000:]


@pytest.mark.parametrize("key,value", [("mean", [0.4, 0.456, 0.406]), ("std", [0.229, 0.224, 0.3]),
                                       ("value_range", [0.0, 255.0])])
def test_verify_maps_dream_golden_images_through_the_preprocessing(tmp_path, key, value):
    """Item 8: dream golden images are pictures; verify feeds them to the graphs as `gen dream` does, so a changed
    mean, std or value range (every dream changes) fails where it used to pass."""
    folder = tiny_dream_bundle(tmp_path / "d", mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])
    assert all(c.ok for c in verify(load_bundle(folder), "cpu"))
    m = json.loads((folder / "manifest.json").read_text())
    m["preprocessing"][key] = value
    write_manifest(folder, m)
    failed = {(c.graph, c.output) for c in verify(load_bundle(folder), "cpu") if not c.ok}
    assert failed == {("dream_grad", "grad"), ("dream_grad", "objective"), ("features", "feat"), ("dream", "image")}


def test_manifest_text_is_shown_as_text_not_markup(tmp_path):
    """A hostile tester's find: a licence or case note like '[/x]' was read as rich markup, a traceback."""
    def change(m):
        m["license"], m["golden"]["cases"][0]["note"] = "[/x] [bold]", "[/y]"

    folder = edited(EMOJI, tmp_path / "b", change)
    for command in ("info", "verify"):
        p = gen_without_torch(command, str(folder))
        assert p.returncode == 0 and "Traceback" not in p.stderr, p.stderr[-2000:]
        assert "[/x] [bold]" in p.stdout if command == "info" else "[/y]" in p.stdout


# -- hostile campaign 2: tolerances in the outputs' own units, noise order, run-time failures ---------------


@pytest.mark.parametrize("bundle,graph,value", [
    (DREAM, "dream_grad", {"max_abs": 0.01}), (DREAM, "features", {"max_abs": 0.01}),
    (EMOJI, "mapping", {"max_abs": 0.005}),
])
def test_an_absolute_bound_alone_is_refused_where_the_output_is_not_a_picture(tmp_path, bundle, graph, value):
    """F3: max_abs is bounded by 1% of value_range, the units of a picture. A dream graph's features, objective and
    gradient (and w) have their own scale: models/dream-inception's gradients are below 0.005, so max_abs 0.01
    alone passed a graph that returns zeros."""
    folder = edited(bundle, tmp_path / "b", tolerance(graph, value))
    with pytest.raises(BundleError, match=re.escape(f"tolerance {graph} has only max_abs")):
        load_bundle(folder)
    folder = edited(bundle, tmp_path / "c", tolerance(graph, value | {"rel_l2": 1e-4}))  # max_abs may tighten
    assert load_bundle(folder).manifest.golden.tolerances[graph].max_abs == value["max_abs"]


@pytest.mark.parametrize("value,words", [
    (0, "Expected `int` >= 1"), (-3, "Expected `int` >= 1"), (257, "Expected `int` <= 256"),
    (65536, "Expected `int` <= 256"), (10**12, "Expected `int` <= 256"), (True, "Expected `int`, got `bool`"),
    (1000.0, "Expected `int`, got `float`"),
])
def test_dream_min_size_is_bounded(tmp_path, value, words):
    """F5: min_size 65536 passed the schema and was blamed on the user's --tile ("at least 131072 pixels");
    true and 1e3 were read as 1 and 1000."""
    folder = edited(DREAM, tmp_path / "b", lambda m: m["dream"].__setitem__("min_size", value))
    with pytest.raises(BundleError, match=re.escape("dream.min_size: ") + ".*" + re.escape(words)):
        load_bundle(folder)
    p = gen_without_torch("dream", str(SHIPPED / "photos" / "chelsea.jpg"), "--bundle", str(folder),
                          "-o", str(tmp_path / "d.png"), timeout=60)
    assert p.returncode == 2 and "Traceback" not in p.stderr and "dream.min_size" in p.stderr, p.stderr[-2000:]


def test_reordered_noise_inputs_fail_verify(good_bundle, tmp_path):
    """F4: the runtime feeds each seed's random noise to the noise inputs in the order of stylegan.noise_inputs;
    constant noise is zeros in any order, so only a random-noise picture can tell a reordered list."""
    m = load_bundle(good_bundle).manifest
    assert [p.noise for p in m.golden.pictures].count("random") == 1
    assert gen_without_torch("verify", str(good_bundle)).returncode == 0
    folder = edited(good_bundle, tmp_path / "b", lambda m: m["stylegan"]["noise_inputs"].reverse())
    p = gen_without_torch("verify", str(folder))
    assert p.returncode == 1 and "Traceback" not in p.stderr and "outside tolerance" in p.stdout, p.stdout[-3000:]
    failed = {(c.graph, c.output, c.note) for c in verify(load_bundle(folder), "cpu") if not c.ok}
    assert {(graph, output) for graph, output, _ in failed} == {("pictures", "image")}
    assert all("random noise" in note for _, _, note in failed), failed


def without_random_pictures(m: dict) -> None:
    m["golden"]["pictures"] = [p for p in m["golden"]["pictures"] if p.get("noise") != "random"]


def test_a_format_3_stylegan_bundle_needs_a_random_noise_picture(good_bundle, tmp_path):
    with pytest.raises(BundleError, match="no random-noise case"):
        load_bundle(edited(good_bundle, tmp_path / "b", without_random_pictures))


def test_what_format_3_added_cannot_be_left_out(good_bundle, tmp_path):
    """A manifest cannot leave the random-noise pictures or the golden dreams out to leave the noise order or
    dream.min_size unverified, whatever format_version it claims."""
    with pytest.raises(BundleError, match="no random-noise case.*re-export"):
        load_bundle(edited(good_bundle, tmp_path / "b", without_random_pictures))
    with pytest.raises(BundleError, match="golden.dreams is for dream bundles, each needs at least one"):
        load_bundle(edited(DREAM, tmp_path / "d", lambda m: m["golden"].__setitem__("dreams", [])))
    for version in (2, 1):
        with pytest.raises(BundleError, match=f"format version {version} is older than this runtime reads"):
            old = edited(DREAM, tmp_path / f"v{version}", lambda m, v=version: m.__setitem__("format_version", v))
            load_bundle(old)


def test_an_unconditional_bundle_has_no_class_input_and_c_dim_is_optional(good_bundle, tmp_path):
    """Unconditional mappings take z alone; c_dim (0) may be left out of a format 3 manifest (conditional bundles:
    tests/test_conditional_bundle.py)."""
    m = load_bundle(good_bundle).manifest
    assert m.stylegan.c_dim == 0 and [t.name for t in m.graphs["mapping"].inputs] == ["z"]
    assert all(p.class_index is None for p in m.golden.pictures)
    folder = edited(good_bundle, tmp_path / "b", lambda m: m["stylegan"].pop("c_dim") and None)
    checks = verify(load_bundle(folder), "cpu")
    assert checks and all(c.ok for c in checks)


def rewire(folder: Path, file: str, output: str, make) -> Path:
    """The graph `file` with `output` computed from what it was (`raw`) by the nodes `make(raw, output)` returns
    (with their initializers), rehashed: a graph that is broken only when it runs."""
    import onnx

    model = onnx.load(folder / file)
    raw = f"{output}_raw"
    for node in model.graph.node:
        node.output[:] = [raw if o == output else o for o in node.output]
    nodes, inits = make(raw, output)
    model.graph.node.extend(nodes)
    model.graph.initializer.extend(inits)
    onnx.save(model, folder / file)
    reseal(folder, file)
    return folder


def past_the_end(raw: str, output: str):
    """output = raw + raw[10**6] along axis 0: onnxruntime's Gather fails when it runs (the axis has 1..8)."""
    from onnx import helper, numpy_helper

    return ([helper.make_node("Gather", [raw, "far"], ["gathered"], axis=0),
             helper.make_node("Add", [raw, "gathered"], [output])],
            [numpy_helper.from_array(np.array([10**6], np.int64), "far")])


def times(value: float):
    def make(raw: str, output: str):
        from onnx import helper, numpy_helper

        return ([helper.make_node("Mul", [raw, "poison"], [output])],
                [numpy_helper.from_array(np.array(value, np.float32), "poison")])
    return make


def broken_bundle(good_bundle: Path, folder: Path, file: str, output: str, make) -> Path:
    """A stylegan bundle (the tiny export's copy) or a dream one (tiny_dream_bundle) with `file` rewired."""
    folder = copy_bundle(good_bundle, folder) if file != "dream_grad.onnx" else tiny_dream_bundle(folder)
    return rewire(folder, file, output, make)


def error_at_the_end(p: subprocess.CompletedProcess, *words: str) -> None:
    """A CLI run that ended in a GenError after its progress lines (`gen dream`): one error line, exit 2."""
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 2 and "Traceback" not in p.stderr and lines[-1].startswith("error: "), p.stderr[-2000:]
    assert sum(line.startswith("error: ") for line in lines) == 1 and all(w in lines[-1] for w in words), lines


def cli_use(folder: Path, tmp_path: Path, command: str) -> list[str]:
    if command == "dream":
        return ["dream", str(SHIPPED / "photos" / "chelsea.jpg"), "--bundle", str(folder), "-o",
                str(tmp_path / "d.png"), "--octaves", "1", "--iterations", "1"]
    return [command, str(folder)] + (["-o", str(tmp_path / "s.png"), "--seeds", "0-1"] if command == "sample" else [])


@pytest.mark.parametrize("file,output,command", [
    ("mapping.onnx", "w", "sample"), ("synthesis.onnx", "img", "sample"), ("synthesis.onnx", "img", "verify"),
    ("dream_grad.onnx", "grad", "verify"), ("dream_grad.onnx", "grad", "dream"),
])
def test_a_graph_that_fails_when_it_runs_is_one_line(good_bundle, tmp_path, file, output, command):
    """F6: onnxruntime's own error while running (a Gather past the end) was a traceback."""
    folder = broken_bundle(good_bundle, tmp_path / "b", file, output, past_the_end)
    p = gen_without_torch(*cli_use(folder, tmp_path, command), timeout=120)
    (error_at_the_end if command == "dream" else one_line_error)(p, f"'{file}' failed to run", "re-export")
    assert not (tmp_path / "s.png").exists() and not (tmp_path / "d.png").exists()


@pytest.mark.parametrize("file,output,value,command", [
    ("mapping.onnx", "w", float("nan"), "sample"), ("synthesis.onnx", "img", float("inf"), "sample"),
    ("synthesis.onnx", "img", float("nan"), "verify"),
    ("dream_grad.onnx", "grad", float("nan"), "dream"), ("dream_grad.onnx", "objective", float("inf"), "dream"),
])
def test_non_finite_graph_outputs_are_one_line(good_bundle, tmp_path, file, output, value, command):
    """F9: a graph giving NaN or infinity made `gen sample` write black pictures and exit 0."""
    folder = broken_bundle(good_bundle, tmp_path / "b", file, output, times(value))
    p = gen_without_torch(*cli_use(folder, tmp_path, command), timeout=120)
    (error_at_the_end if command == "dream" else one_line_error)(p, f"'{file}'", f"'{output}'", "NaN or infinity",
                                                                 "re-export")
    assert not (tmp_path / "s.png").exists() and not (tmp_path / "d.png").exists()


def npy_member(path: Path, key: str, shape: tuple, data: bytes = b"\0" * 64) -> None:
    """Put member `key` into the npz at `path`: an npy header declaring float32 `shape`, then only `data`."""
    import io
    import zipfile

    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files if k != key}
    np.savez(path, **arrays)
    head = io.BytesIO()
    np.lib.format.write_array_header_1_0(head, {"descr": "<f4", "fortran_order": False, "shape": shape})
    with zipfile.ZipFile(path, "a") as z:
        z.writestr(f"{key}.npy", head.getvalue() + data)


def test_golden_data_the_manifest_does_not_name_is_not_read(tmp_path):
    """F7: an extra member declaring 10 GB was read (allocated) by Bundle.golden()."""
    folder = copy_bundle(EMOJI, tmp_path / "b")
    npy_member(folder / "golden.npz", "huge", (2_500_000_000,))
    reseal(folder, "golden.npz")
    assert all(c.ok for c in verify(load_bundle(folder), "cpu"))


@pytest.mark.parametrize("shape,words", [
    ((1_000_000_000, 64), "declares 256,000,000,000 bytes"),  # a dynamic batch: within the spec, not the bound
    ((1, 63), "is float32 [1, 63] but 'z' is float32 ['batch', 64]"),
])
def test_a_golden_array_is_checked_from_its_header_before_it_is_read(tmp_path, shape, words):
    folder = copy_bundle(EMOJI, tmp_path / "b")
    npy_member(folder / "golden.npz", "mapping/0/z", shape)  # (the data are short: reading would fail or allocate)
    reseal(folder, "golden.npz")
    with pytest.raises(BundleError, match=re.escape(words)):
        load_bundle(folder).golden()
    one_line_error(gen_without_torch("verify", str(folder)), words)


def endless_loop(raw: str, output: str):
    """output = raw + a Loop's count, the Loop running 2**63 - 1 times with its condition always true."""
    from onnx import TensorProto, helper, numpy_helper

    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]), helper.make_node("Add", ["v_in", "one"], ["v_out"])],
        "body", [helper.make_tensor_value_info("i", TensorProto.INT64, []),
                 helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
                 helper.make_tensor_value_info("v_in", TensorProto.FLOAT, [])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("v_out", TensorProto.FLOAT, [])],
        initializer=[numpy_helper.from_array(np.array(1.0, np.float32), "one")])
    return ([helper.make_node("Loop", ["trips", "yes", "zero"], ["count"], body=body),
             helper.make_node("Add", [raw, "count"], [output])],
            [numpy_helper.from_array(np.array(v), name) for name, v in
             (("trips", np.int64(2**63 - 1)), ("yes", True), ("zero", np.float32(0.0)))])


def loop_in_a_branch(raw: str, output: str):
    """output = If(true) of a branch that holds the endless Loop."""
    from onnx import TensorProto, helper, numpy_helper

    nodes, inits = endless_loop(raw, "branch_out")
    scalar = lambda name: helper.make_tensor_value_info(name, TensorProto.FLOAT, None)  # noqa: E731
    then = helper.make_graph(nodes, "then", [], [scalar("branch_out")], initializer=inits)
    other = helper.make_graph([helper.make_node("Identity", [raw], ["other_out"])], "else", [], [scalar("other_out")])
    return ([helper.make_node("If", ["yes"], [output], then_branch=then, else_branch=other)],
            [numpy_helper.from_array(np.array(True), "yes")])


def scan_in_a_function(folder: Path):
    """A model-local function holding a Scan (never called: the reader looks at everything the file holds)."""
    import onnx
    from onnx import helper

    model = onnx.load(folder / "dream_grad.onnx")
    body = helper.make_graph([], "body", [], [])
    model.functions.append(helper.make_function("local", "scanner", ["x"], ["y"],
                                                [helper.make_node("Scan", ["x"], ["y"], body=body, num_scan_inputs=1)],
                                                [helper.make_opsetid("", 18)]))
    model.opset_import.append(helper.make_opsetid("local", 1))
    onnx.save(model, folder / "dream_grad.onnx")
    reseal(folder, "dream_grad.onnx")


@pytest.mark.parametrize("how,ops", [("loop", "Loop"), ("branch", "If, Loop"), ("function", "Scan")])
def test_control_flow_is_refused_when_a_graph_is_opened(tmp_path, how, ops):
    """F8: an endless ONNX Loop made `gen verify` hang; gen export never writes control flow (Loop, Scan, If)."""
    folder = tiny_dream_bundle(tmp_path / "d")
    if how == "function":
        scan_in_a_function(folder)
    else:
        rewire(folder, "dream_grad.onnx", "objective", endless_loop if how == "loop" else loop_in_a_branch)
    words = f"'{folder / 'dream_grad.onnx'}' holds control flow ({ops})"
    from gen.runtime.dream.engine import bundle_engine

    with pytest.raises(BundleError, match=re.escape(words)):
        bundle_engine(folder, "cpu")
    if how == "loop":
        one_line_error(gen_without_torch("verify", str(folder), timeout=60), words)


@pytest.mark.parametrize("path", sorted(SHIPPED.glob("*/*.onnx")), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_shipped_graphs_hold_no_control_flow(path):
    from gen.runtime.engines.onnx_file import control_flow

    assert control_flow(path.read_bytes()) == set()


@pytest.mark.parametrize("min_size", [7, 9, 10])
def test_dream_min_size_is_verified(tmp_path, min_size):
    """dream.min_size decides which octaves of a dream run: one more or one less than the exporter's, and a golden
    dream (its smaller octave exactly min_size, or one pixel short) comes out otherwise: verify fails, exit 1."""
    folder = tiny_dream_bundle(tmp_path / "d")
    assert all(c.ok for c in verify(load_bundle(folder), "cpu"))
    m = json.loads((folder / "manifest.json").read_text())
    m["dream"]["min_size"] = min_size
    write_manifest(folder, m)
    with pytest.raises(BundleError, match=f"do not pin dream.min_size {min_size}"):  # no octave of it in the dreams
        load_bundle(folder)
    p = gen_without_torch("verify", str(folder))
    assert p.returncode == 2 and "do not pin dream.min_size" in p.stderr, p.stderr[-2000:]
    for d in m["golden"]["dreams"]:  # the same dreams at sizes that pin the new min_size: their results differ
        d["size"] = [d["size"][0] + min_size - 8] * 2
    write_manifest(folder, m)
    with pytest.raises(BundleError):  # (the golden arrays are the old sizes)
        verify(load_bundle(folder), "cpu")


@pytest.mark.parametrize("keep, min_size", [(0, 11), (1, 10), (0, 6), (1, 3), ("both", 12), ("both", 11)])
def test_golden_dreams_cannot_be_left_out_to_move_min_size(tmp_path, keep, min_size):
    """A hostile tester's find: with one golden dream deleted, a min_size that dream cannot see passed verify. The
    dreams must hold an octave of exactly min_size and one a pixel short (whatever min_size the manifest says), and
    then any other min_size changes one of them."""
    folder = tiny_dream_bundle(tmp_path / "d")

    def change(m):
        if keep != "both":
            m["golden"]["dreams"] = [m["golden"]["dreams"][keep]]
        m["dream"]["min_size"] = min_size

    edited_folder = tmp_path / "e"
    shutil.copytree(folder, edited_folder)
    m = json.loads((edited_folder / "manifest.json").read_text())
    change(m)
    write_manifest(edited_folder, m)
    if (keep, min_size) == ("both", 11):  # pinned by octaves of 11 and 10 px: the 11 px dream loses its 8 px octave
        failed = [c.note for c in verify(load_bundle(edited_folder), "cpu") if not c.ok]  # (the 10 px one is too small)
        assert failed == ["11 px", "10 px"], failed
    else:
        with pytest.raises(BundleError, match="do not pin dream.min_size"):
            load_bundle(edited_folder)
