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

from conftest import SHIPPED, gen_without_torch, tiny_dream_bundle
from gen.runtime.bundle import FORMAT_VERSION, MAX_MANIFEST_BYTES, BundleError, is_bundle, load_bundle, sha256_file
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


# -- issue 12: the bundle boundary (a hostile tester's manifests) --------------------------------

def edited(src: Path, dst: Path, change) -> Path:
    """A copy of the bundle `src` whose manifest `change(manifest)` edited in place (or replaced, if it returns)."""
    folder = copy_bundle(src, dst)
    m = json.loads((folder / "manifest.json").read_text())
    write_manifest(folder, change(m) or m)
    return folder


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
                                        ('{"format": ' + "9" * 5000 + "}", "not valid JSON")],
                         ids=["deep", "33-deep", "brackets-in-a-string", "long-int"])
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
    (lambda m: noise_shape(m, ["batch", 1, -4, -4]), "greater than or equal to 1"),
    (lambda m: noise_shape(m, ["batch", 1, 0, 4]), "greater than or equal to 1"),
    (lambda m: noise_shape(m, ["batch", 1, 4096, 4096]), "h, w <= 32"),
    (huge_z, "less than or equal to 4096"),
    (narrow_w, "mapping must output w [batch, 64]"),
    (lambda m: m["stylegan"].__setitem__("num_ws", 10**9), "less than or equal to 64"),
])
def test_shape_integers_are_bounded(tmp_path, change, words):
    """Item 4: negative, zero or absurd sizes were numpy ValueError / MemoryError tracebacks in `gen sample`."""
    folder = edited(EMOJI, tmp_path / "b", change)
    with pytest.raises(BundleError, match=re.escape(words)):
        use(folder)


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
    """Item 6: `gen info` on noise_inputs [] was an IndexError. Every StyleGAN synthesis layer has noise and
    `gen export` lists one input per layer, so a bundle without any is refused."""
    from gen.runtime.report import info_report

    folder = edited(EMOJI, tmp_path / "b", no_noise)
    with pytest.raises(BundleError, match="noise_inputs: List should have at least 1 item"):
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
    (lambda m: m["preprocessing"].__setitem__("mean", [0.5, 0.5]), "preprocessing.mean: List should have at least 3"),
    (lambda m: m["preprocessing"].__setitem__("std", [0.2] * 4), "preprocessing.std: List should have at most 3"),
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
    with pytest.raises(BundleError, match=f"{section}(.{key}|: Value error, {key})"):
        load_bundle(folder)


def tolerance(graph: str, value) -> callable:
    return lambda m: m["golden"]["tolerances"].__setitem__(graph, value)


@pytest.mark.parametrize("change,words", [
    (tolerance("mapping", {}), "a tolerance needs at least one of max_abs, rel_l2, psnr_db"),
    (tolerance("mapping", {"rel_l2": 1e300}), "rel_l2: Input should be less than or equal to 0.01"),
    (tolerance("mapping", {"rel_l2": float("nan")}), "rel_l2"),
    (tolerance("mapping", {"max_abs": 1e300}), "mapping.max_abs 1e+300 is looser than 0.01 of the value range"),
    (tolerance("mapping", {"max_abs": 0.021}), "is looser than 0.01 of the value range [-1.0, 1.0]"),
    (tolerance("synthesis_fp16", {"psnr_db": 1}), "psnr_db: Input should be greater than or equal to 30"),
    (lambda m: m["golden"]["cases"][0].__setitem__("outputs", {}), "outputs: Dictionary should have at least 1 item"),
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
    (lambda m: m["golden"]["pictures"][0].__setitem__("seeds", [2**32]), "golden.pictures.0.seeds.0"),
    (lambda m: m["golden"]["pictures"][0].__setitem__("image", "synthesis/0/const/img"),
     "golden array 'synthesis/0/const/img' is float32 [1, 3, 32, 32], not uint8 [1, 32, 32, 3]"),
    (lambda m: m["golden"]["pictures"][0].__setitem__("seeds", [0, 1]),
     "is float32 [1, 8, 64], not float32 [2, 8, 64]"),
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
    assert failed == {("dream_grad", "grad"), ("dream_grad", "objective"), ("features", "feat")}


def test_manifest_text_is_shown_as_text_not_markup(tmp_path):
    """A hostile tester's find: a licence or case note like '[/x]' was read as rich markup, a traceback."""
    def change(m):
        m["license"], m["golden"]["cases"][0]["note"] = "[/x] [bold]", "[/y]"

    folder = edited(EMOJI, tmp_path / "b", change)
    for command in ("info", "verify"):
        p = gen_without_torch(command, str(folder))
        assert p.returncode == 0 and "Traceback" not in p.stderr, p.stderr[-2000:]
        assert "[/x] [bold]" in p.stdout if command == "info" else "[/y]" in p.stdout
