"""Hostile manifests, generated: every mutation of a small real bundle's manifest (or golden data, rehashed) is
either a bundle that works or a GenError of short lines (one per problem), in every public entry point; never
another exception. And a bundle that passes `gen verify` draws the unmutated bundle's pictures (dreams the same
gradients): no edit changes them unnoticed. A quick run here; the slow one 3,000 examples (a few minutes on two
cores)."""

from __future__ import annotations

import copy
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from conftest import SHIPPED, json_paths, tiny_dream_bundle
from gen.runtime.bundle import load_bundle, sha256_file
from gen.runtime.dream.engine import bundle_engine
from gen.runtime.errors import GenError
from gen.runtime.report import info_report
from gen.runtime.stylegan.generator import BundleGenerator
from gen.runtime.verify import PICTURE_MAX_LEVELS, relative_l2, verify

MANIFEST = "manifest.json"


def _rehash(folder: Path, manifest: dict) -> dict:
    manifest["files"] = {p.name: {"sha256": sha256_file(p), "size": p.stat().st_size}
                         for p in sorted(folder.iterdir()) if p.name != MANIFEST}
    return manifest


def small_stylegan(folder: Path) -> Path:
    """The shipped emoji bundle cut to what runs fast: no FP16 graph, one golden case per graph, the first picture
    (and the random-noise one, which format 3 requires)."""
    src = SHIPPED / "emoji"
    m = json.loads((src / MANIFEST).read_text())
    folder.mkdir()
    for name in ("mapping.onnx", "synthesis.onnx"):
        shutil.copy2(src / name, folder / name)
    del m["graphs"]["synthesis_fp16"], m["golden"]["tolerances"]["synthesis_fp16"]
    cases = [next(c for c in m["golden"]["cases"] if c["graph"] == g) for g in ("mapping", "synthesis")]
    pictures = [p for i, p in enumerate(m["golden"]["pictures"]) if i == 0 or p.get("noise") == "random"]
    m["golden"]["cases"], m["golden"]["pictures"] = cases, pictures
    keys = {k for c in cases for k in [*c["inputs"].values(), *c["outputs"].values()]}
    keys |= {p[k] for p in pictures for k in ("ws", "image")}
    with np.load(src / "golden.npz") as z:
        np.savez(folder / "golden.npz", **{k: z[k] for k in keys})
    (folder / MANIFEST).write_text(json.dumps(_rehash(folder, m)))
    load_bundle(folder)
    return folder


IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]  # not the identity


@pytest.fixture(scope="module")
def bundles(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("fuzz")
    folders = {"stylegan": small_stylegan(base / "stylegan"),
               "dream": tiny_dream_bundle(base / "dream", mean=IMAGENET_MEAN, std=IMAGENET_STD)}
    for kind, folder in folders.items():
        verified, DRAWN[kind] = use_everything(folder)
        assert verified
    return folders


# ---------------------------------------------------------------------------------------------
# Mutations

RAW = "\x00raw\x00"  # a placeholder value replaced by raw JSON text after encoding
RAW_TEXTS = ["[" * 100000 + "]" * 100000, "[" * 900 + "]" * 900, '{"a":' * 3000 + "1" + "}" * 3000,
             "9" * 5000, "-" + "9" * 4000, "1e999", "-1e999", "NaN", "Infinity", "-Infinity", "1e-400"]
NUMBERS = st.sampled_from([0, -1, 1, 2**31, 2**40, 2**63, -(2**63), 10**30, 10**300, 0.0, -0.0, 1e-300, 1e300,
                           float("nan"), float("inf"), float("-inf"), 0.5, -3.5, 7, 64, 4096, 4097, 1024, 65536])
SCALARS = (st.none() | st.booleans() | NUMBERS | st.integers(-10**6, 10**6) | st.floats(allow_nan=True)
           | st.text(max_size=12) | st.sampled_from(["batch", "float16", "int64", "", "x" * 3000, "a\nb",
                                                     "mapping", "synthesis", "noise_0", "image", "grad"]))
JSON_VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=8)


SECTIONS = ["stylegan", "dream", "graphs", "preprocessing", "golden", "files", "kind"]


def _section(path: tuple) -> int:
    """The model's sections first: hypothesis leans towards the first paths, and they matter most."""
    return SECTIONS.index(path[0]) if path and path[0] in SECTIONS else len(SECTIONS) + (not path)


def plausible(old, draw):
    """A value of the same kind as `old`, near it: what passes a schema and must be caught later."""
    if isinstance(old, bool):
        return not old
    if isinstance(old, int):
        return draw(st.sampled_from([old + 1, old - 1, old * 2, max(old // 2, 1), 1, 3, 5, 7, 16, 1000]))
    if isinstance(old, float):
        return draw(st.sampled_from([old * 2, -old, old + 0.5, 0.0, 1e-3, 0.99, 1e-2, 1e3]))
    if isinstance(old, str):
        return draw(st.sampled_from(["batch", "height", "float16", "int64", "int32", "mapping", "synthesis", "ws",
                                     "z", "w", "img", "noise_0", "noise_6", "image", "grad", "objective", "feat",
                                     "dream_grad", "features", "golden.npz", "mapping.onnx", "features.onnx",
                                     old + "x", old.upper()]))
    if isinstance(old, list):
        return old[::-1] if len(old) > 1 else old * 2
    return old


def mutate(tree, path, action, value):
    if not path:
        return value if action != "delete" else {}
    parent = tree
    for key in path[:-1]:
        parent = parent[key]
    last, old = path[-1], parent[path[-1]]
    if action == "plausible":
        parent[last] = value
    elif action == "delete":
        del parent[last]
    elif action == "replace":
        parent[last] = value
    elif action == "nest":  # the old value, wrapped in lists
        parent[last] = json.loads("[" * 50 + json.dumps(old) + "]" * 50)
    elif action == "scale" and isinstance(old, (int, float)) and not isinstance(old, bool):
        parent[last] = old * value if isinstance(value, (int, float)) and not isinstance(value, bool) else -old
    elif action == "duplicate" and isinstance(parent, list):
        parent.append(copy.deepcopy(old))
    else:  # add an unknown field or item beside it
        if isinstance(parent, dict):
            parent["unexpected_" + str(last)] = value
        else:
            parent.append(value)
    return tree


def golden_change(rng: np.random.Generator, a: np.ndarray, how: str) -> np.ndarray:
    return {"strings": lambda: np.full(a.shape, "x"), "float64": lambda: a.astype(np.float64),
            "int": lambda: a.astype(np.int64), "shape": lambda: a.reshape(-1),
            "empty": lambda: a.reshape(-1)[:0],
            "nan": lambda: np.full(a.shape, np.nan, a.dtype), "bool": lambda: a > 0,
            "huge": lambda: np.full(a.shape, 3e38, np.float32), "noise": lambda: a + rng.normal(size=a.shape)
            .astype(a.dtype)}[how]()


@st.composite
def mutated_bundle(draw, bundles: dict[str, Path]) -> tuple[str, str | None, dict | None, str]:
    """(kind, manifest text, golden changes, description)."""
    kind = draw(st.sampled_from(sorted(bundles)), label="kind")
    manifest = json.loads((bundles[kind] / MANIFEST).read_text())
    what, raw = [], False
    for _ in range(draw(st.integers(0, 3), label="mutations")):
        path = draw(st.sampled_from(sorted(json_paths(manifest, leaves_first=True), key=_section)), label="path")
        action = draw(st.sampled_from(["plausible", "replace", "delete", "add", "nest", "scale", "duplicate", "raw"]),
                      label="action")
        if action == "raw" and raw:
            continue  # one raw text per manifest
        raw |= action == "raw"
        if action == "plausible":
            old = manifest
            for key in path:
                old = old[key]
            value = plausible(old, draw)
        else:
            value = RAW if action == "raw" else draw(JSON_VALUES, label="value")
        manifest = mutate(manifest, path, "replace" if action == "raw" else action, value)
        what.append(f"{action} {list(path)}")
    golden = None
    if not what or draw(st.booleans(), label="golden change"):
        keys = sorted(golden_keys(bundles[kind]))
        key = draw(st.sampled_from(keys), label="golden key")
        how = draw(st.sampled_from(["strings", "float64", "int", "shape", "empty", "nan", "bool", "huge", "noise"]),
                   label="golden how")
        golden = {key: how}
        what.append(f"golden {key} {how}")
    try:
        text = json.dumps(manifest)
    except ValueError:  # an integer too long for Python to print: write it raw instead
        text = json.dumps(mutate(manifest, (), "replace", {}))
    if json.dumps(RAW) in text:
        text = text.replace(json.dumps(RAW), draw(st.sampled_from(RAW_TEXTS), label="raw"), 1)
    return kind, text, golden, "; ".join(what)


def golden_keys(folder: Path) -> set[str]:
    golden = json.loads((folder / MANIFEST).read_text())["golden"]
    return ({k for c in golden["cases"] for k in [*c["inputs"].values(), *c["outputs"].values()]}
            | {p[k] for p in golden.get("pictures", []) for k in ("ws", "image")})


def materialise(src: Path, dst: Path, text: str, golden: dict | None) -> None:
    """The bundle's files linked (golden.npz rewritten and its hash updated when changed), the manifest written."""
    dst.mkdir()
    for p in src.iterdir():
        if p.name != MANIFEST:
            (dst / p.name).symlink_to(p)
    if golden:
        with np.load(src / "golden.npz") as z:
            data = {k: z[k] for k in z.files}
        rng = np.random.default_rng(0)
        for key, how in golden.items():
            data[key] = golden_change(rng, data[key], how)
        (dst / "golden.npz").unlink()
        np.savez(dst / "golden.npz", **data)
        try:  # rehash, if the mutated manifest still lists it where expected
            m = json.loads(text)
            m["files"]["golden.npz"] = {"sha256": sha256_file(dst / "golden.npz"),
                                        "size": (dst / "golden.npz").stat().st_size}
            text = json.dumps(m)
        except (ValueError, TypeError, KeyError, IndexError, RecursionError, AttributeError):
            pass
    (dst / MANIFEST).write_text(text)


def use_everything(folder: Path) -> tuple[bool, np.ndarray]:
    """Every public entry point a device calls on a bundle; whether it verified, and what it draws by default
    (pictures of seeds 0-2 at the default psi and constant noise; a dream's gradient)."""
    info_report(folder)
    bundle = load_bundle(folder)
    verified = all(c.ok for c in verify(bundle, "cpu"))
    if bundle.manifest.kind == "stylegan":
        with BundleGenerator(bundle, "cpu") as gen:
            pictures = gen.images([0, 1], psi=gen.psi(None), noise_mode="random")
            assert pictures.dtype == np.uint8 and pictures.shape[0] == 2
            gen.images([2], psi=1.0, cutoff=2, noise_mode="const")
            return verified, gen.images([0, 1, 2], psi=gen.psi(None), noise_mode="const")
    with bundle_engine(bundle, "cpu") as engine:
        x = np.random.default_rng(1).random((1, 3, 9, 8), dtype=np.float32)
        grad, objective = engine.gradient(x)
        assert grad.shape == x.shape and isinstance(objective, float)
        return verified, grad


DRAWN: dict[str, np.ndarray] = {}  # what each unmutated bundle draws


def same_drawing(kind: str, drawn: np.ndarray) -> bool:
    """Pictures within verify's own picture bound (2 levels) plus a rounding tie; gradients to float rounding."""
    want = DRAWN[kind]
    if drawn.shape != want.shape:
        return False
    if kind == "stylegan":
        return int(np.abs(drawn.astype(np.int16) - want).max()) <= PICTURE_MAX_LEVELS + 1
    return relative_l2(drawn, want) <= 1e-5


def _where(line: str) -> str:
    """A message's kind, for statistics: the words after the path."""
    return " ".join(line.split(": ", 1)[-1].split()[:3])[:40]


def check_one(bundles: dict[str, Path], case) -> str:
    kind, text, golden, what = case
    work = Path(tempfile.mkdtemp(dir=bundles[kind].parent))
    try:
        materialise(bundles[kind], work / "b", text, golden)
        try:
            verified, drawn = use_everything(work / "b")
        except GenError as e:
            message = str(e)
            lines = message.splitlines()
            assert message.strip() and "Traceback" not in message, what
            # a schema error: its first problem, then what to do; damaged files: one line each (the shipped bundles
            # have under 10 files)
            assert len(lines) <= 10 and all(0 < len(line) <= 400 for line in lines), (what, message)
            schema = lines[-1] == "re-export the bundle with `gen export`"
            return f"{type(e).__name__}: {_where(lines[0])}" + (" schema" if schema else "")
        except Exception as e:  # anything but a GenError is a bug
            raise AssertionError(f"{type(e).__name__}: {str(e)[:500]} after {what}") from e
        if not verified:
            return "verify fails"
        assert same_drawing(kind, drawn), f"verify passed, but the bundle draws other pictures after {what}"
        return "ok"
    finally:
        shutil.rmtree(work, ignore_errors=True)


FAST = settings(max_examples=50, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                       HealthCheck.data_too_large])


def outcome(bundles: dict[str, Path], data) -> None:
    """Check one mutated bundle; the outcomes are events (pytest --hypothesis-show-statistics)."""
    result = check_one(bundles, data.draw(mutated_bundle(bundles)))
    event(result)
    event("outcome: " + {"ok": "works", "verify fails": "verify fails"}.get(
        result, "schema" if result.endswith("schema") else "refused later"))


@FAST
@given(data=st.data())
def test_mutated_bundles_work_or_fail_in_one_clear_line(bundles, data):
    outcome(bundles, data)


@pytest.mark.slow
@settings(FAST, max_examples=3000)
@given(data=st.data())
def test_mutated_bundles_many(bundles, data):
    outcome(bundles, data)


def test_the_fuzzed_bundles_work_unmutated(bundles):
    for kind, folder in bundles.items():
        assert check_one(bundles, (kind, (folder / MANIFEST).read_text(), None, "nothing")) == "ok"


def test_the_oracle_sees_changed_pictures(bundles, tmp_path):
    """The check above can fail: a w_avg or preprocessing edit changes what is drawn, and verify sees it."""
    for kind, section, key in (("stylegan", "stylegan", "w_avg"), ("dream", "preprocessing", "mean")):
        m = json.loads((bundles[kind] / MANIFEST).read_text())
        m[section][key] = [v + 0.3 for v in m[section][key]]
        materialise(bundles[kind], tmp_path / kind, json.dumps(m), None)
        verified, drawn = use_everything(tmp_path / kind)
        assert not verified and not same_drawing(kind, drawn)
