"""Shared test fixtures. `../shared` (beside the checkout) holds real data; tests fall back when it is absent."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest

from gen.runtime.bundle import FORMAT_VERSION
from gen.train.config import ModelConfig, TrainConfig

if TYPE_CHECKING:
    from gen.runtime.kiosk.producer import FrameProducer

SHARED = Path(os.environ.get("GEN_SHARED", Path(__file__).resolve().parents[2] / "shared"))
EMOJI = SHARED / "data" / "emoji-google-64"
PHOTOS = SHARED / "data" / "photos"
SHIPPED = Path(__file__).resolve().parents[1] / "models"  # the bundles and photo that ship with gen


def needs_shared(path: Path):
    return pytest.mark.skipif(not path.exists(), reason=f"{path} (../shared beside the checkout) is not here")


def link_emoji_subset(folder: Path) -> Path:
    """24 real emoji (every 150th of the set), linked into `folder`/emoji (made here); the built-in sample if no
    ../shared."""
    from gen.train.data import SAMPLE_DATA, find_images

    src = find_images(EMOJI) if EMOJI.is_dir() else find_images(SAMPLE_DATA)
    out = folder / "emoji"
    out.mkdir()
    for p in src[:: max(len(src) // 24, 1)][:24]:
        (out / p.name).symlink_to(p)
    return out


@pytest.fixture
def emoji_subset(tmp_path) -> Path:
    """24 real emoji (every 150th of the set), linked into a fresh folder; the built-in sample if no ../shared."""
    return link_emoji_subset(tmp_path)


@pytest.fixture(scope="module")
def one_thread():
    """PyTorch on one thread for a module (`pytestmark = pytest.mark.usefixtures("one_thread")`): small images
    gain nothing from threads, and on a busy 2-core machine OpenMP threads that wait for a core make a gradient
    100x slower; one thread keeps the dream tests fast and steady."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ---------------------------------------------------------------------------------------------
# Shared helpers (test modules import them from here, never from each other)

# Two tiny generators, one per variant, small enough to export in seconds.
MODELS = {
    "sg2-16": ModelConfig(resolution=16, z_dim=32, w_dim=32, mapping_layers=2, channel_base=512, channel_max=32),
    "sg1-32": ModelConfig(resolution=32, variant="stylegan1", z_dim=24, w_dim=40, mapping_layers=3,
                          channel_base=512, channel_max=24),
}
MICRO = MODELS["sg2-16"]  # the training tests' model


def micro_train(steps: int, batch: int = 4, **kw) -> TrainConfig:
    """Every phase runs within a few steps: R1 and path length every 2-3 steps, ADA adjusting fast."""
    base = TrainConfig(batch=batch, r1_interval=2, pl_interval=3, ada_interval=2, ada_kimg=0.05, ema_kimg=0.01,
                       snapshot_kimg=1000, kimg=steps * batch / 1000)
    return replace(base, **kw)


def make_checkpoint(path: Path, model: ModelConfig, steps: int) -> Path:
    """A checkpoint after a few real training steps on real images, with noise made to matter."""
    import torch

    from gen.train import checkpoint as ckpt
    from gen.train.data import SAMPLE_DATA, ImageFolder
    from gen.train.trainer import Dist, StyleGANTraining

    state = StyleGANTraining(model, TrainConfig(batch=4, r1_interval=2, pl_interval=2), Dist("cpu"))
    data = ImageFolder(SAMPLE_DATA, model.resolution, check=False)
    for step in range(steps):
        state.train_step(torch.stack([data[4 * step + i] for i in range(4)]))
    with torch.no_grad():
        for layer in state.G_ema.synthesis.layers:  # trained strengths are still ~0 after a few steps
            layer.noise.strength.fill_(0.5)
        state.G_ema.mapping.w_avg.add_(0.3)
    tensors, meta = state.state({"data": "sample"})
    ckpt.save_checkpoint(path, tensors, meta)
    return path


@pytest.fixture(scope="session")
def sg2_16_export(tmp_path_factory):
    """(checkpoint, bundle, reports): MODELS["sg2-16"] after 3 training steps (make_checkpoint), exported. Made
    once per session for the test files that only read them (an export takes ~10 s; six files made their own):
    copy the bundle to change it. At the end of the session every file must be as it was."""
    from gen.export.stylegan import export_stylegan
    from gen.runtime.bundle import sha256_file

    folder = tmp_path_factory.mktemp("sg2-16")
    checkpoint = make_checkpoint(folder / "checkpoint.safetensors", MODELS["sg2-16"], steps=3)
    bundle, reports = export_stylegan(checkpoint, folder / "bundle")

    def files() -> dict[str, str]:
        return {str(p.relative_to(folder)): sha256_file(p) for p in sorted(folder.rglob("*")) if p.is_file()}

    before = files()
    yield checkpoint, bundle, reports
    assert files() == before, "a test changed the shared sg2-16 checkpoint or bundle (copy it to change it)"


def assert_same_pictures(a: np.ndarray, b: np.ndarray) -> None:
    """uint8 pictures that are the same up to float rounding: other engines, batch sizes, thread counts or
    CPUs sum in other orders, so a value at a .5 rounding tie may land one level apart, and rarely."""
    assert a.shape == b.shape and a.dtype == b.dtype == np.uint8
    diff = np.abs(a.astype(int) - b.astype(int))
    assert diff.max() <= 1 and (diff > 0).mean() < 0.01, (diff.max(), (diff > 0).mean())


def json_paths(tree, prefix=(), leaves_first: bool = False):
    """Every path (a tuple of keys and list indices, the first four items of a list) into a JSON tree;
    `leaves_first` puts the root last (hypothesis leans towards the first items of a list it draws from)."""
    if not leaves_first:
        yield prefix
    if isinstance(tree, dict):
        for k, v in tree.items():
            yield from json_paths(v, prefix + (k,), leaves_first)
    elif isinstance(tree, list):
        for i, v in enumerate(tree[:4]):
            yield from json_paths(v, prefix + (i,), leaves_first)
    if leaves_first:
        yield prefix


def edited_bundle(src: Path, dst: Path, change) -> Path:
    """A copy of the bundle `src` at `dst` (replaced if there) whose manifest `change(manifest)` edited in place
    (or replaced, if it returns one)."""
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst)
    m = json.loads((dst / "manifest.json").read_text())
    (dst / "manifest.json").write_text(json.dumps(change(m) or m))
    return dst


def run_gen(*args: str, timeout: float = 300, **kw) -> subprocess.CompletedProcess:
    """`gen ARGS` in a fresh interpreter, text output captured."""
    return subprocess.run([sys.executable, "-m", "gen.cli", *args], capture_output=True, text=True,
                          timeout=timeout, **kw)


# Several `gen` commands in one fresh interpreter: each runs as `python -m gen.cli ARGS` would (gen.cli.main, its
# exit status from SystemExit, an uncaught exception a traceback and status 1), its file descriptors 1 and 2
# pointed at files of its own, so even output that C libraries write is told apart, and the warning filters as
# they were at the start, with no memory of warnings shown before (each is shown as in a fresh interpreter).
# Torch is imported once.
GEN_STEPS = """
import json, os, sys, traceback, warnings
from gen.cli import main
folder, commands = sys.argv[1], json.loads(sys.argv[2])
filters = warnings.filters[:]
for i, args in enumerate(commands):
    sys.argv = ['gen', *args]
    warnings.filters[:] = filters
    warnings._filters_mutated()  # forget which warnings were shown ("default" and "module" show them again)
    warnings.onceregistry.clear()  # ("once" too)
    with open(f'{folder}/{i}.out', 'w') as out, open(f'{folder}/{i}.err', 'w') as err:
        saved = os.dup(1), os.dup(2)
        sys.stdout.flush(); sys.stderr.flush()
        os.dup2(out.fileno(), 1); os.dup2(err.fileno(), 2)
        try:
            main()
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 0 if e.code is None else 1
            if not isinstance(e.code, (int, type(None))):
                print(e.code, file=sys.stderr)
        except BaseException:
            traceback.print_exc()
            code = 1
        finally:
            sys.stdout.flush(); sys.stderr.flush()
            os.dup2(saved[0], 1); os.dup2(saved[1], 2)
            os.close(saved[0]); os.close(saved[1])
    with open(f'{folder}/{i}.rc', 'w') as f:
        f.write(str(code))
"""


def run_gen_steps(*commands: tuple[str, ...] | list[str], timeout: float = 600, **kw
                  ) -> list[subprocess.CompletedProcess]:
    """`gen ARGS` for each ARGS in `commands`, in order, in one fresh interpreter (GEN_STEPS): what `run_gen`
    gives for each, less a fresh interpreter's start (torch's import) for all but the first. For tests of the CLI
    whose steps do not depend on what the test does between them."""
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        args = [[str(a) for a in c] for c in commands]
        p = subprocess.run([sys.executable, "-c", GEN_STEPS, folder, json.dumps(args)], capture_output=True,
                           text=True, timeout=timeout, **kw)
        results = []
        for i, c in enumerate(args):
            rc = Path(folder, f"{i}.rc")
            assert rc.exists(), f"gen {' '.join(c)} never finished: {p.returncode}\n{p.stdout}\n{p.stderr}"
            results.append(subprocess.CompletedProcess(["gen", *c], int(rc.read_text()),
                                                       Path(folder, f"{i}.out").read_text(),
                                                       Path(folder, f"{i}.err").read_text()))
    return results


def import_each(tmp_path_factory, cases, make) -> dict:
    """case: (file, folder, `gen import FILE --out FOLDER/run`) for each of `cases`, in their order: `make(case,
    folder)` writes the case's file into a fresh folder of the case's own and returns its path; the imports run
    one after another in one interpreter (`run_gen_steps`). For a module-scoped fixture of files `gen import`
    must refuse, each case then asserted by a test of its own."""
    folders = {case: tmp_path_factory.mktemp(case) for case in cases}
    files = {case: make(case, folders[case]) for case in cases}
    done = run_gen_steps(*(["import", str(files[case]), "--out", str(folders[case] / "run")] for case in cases))
    return {case: (files[case], folders[case], p) for case, p in zip(cases, done)}


@pytest.fixture
def marker(tmp_path) -> Path:
    """A file a hostile pickle's payload leaves behind if it ever runs (it never may)."""
    path = tmp_path / "ran"
    yield path
    assert not path.exists(), "code from the file ran"


def sample_args(source: Path, psi: float, folder: Path, seeds: list[int], *more: str) -> list[str]:
    """The arguments of `gen sample SOURCE` of `seeds` (const noise) into `folder` (made here), for `read_sampled`."""
    folder.mkdir()
    return ["sample", str(source), "--seeds", ",".join(map(str, seeds)), "--psi", str(psi), "--noise-mode", "const",
            "--out", str(folder / "grid.png"), "--outdir", str(folder), *more]


def read_sampled(p: subprocess.CompletedProcess, folder: Path, seeds: list[int]) -> np.ndarray:
    """The pictures `gen sample` (of `sample_args`) wrote into `folder`, as [n, H, W, 3] uint8."""
    from PIL import Image

    assert p.returncode == 0, p.stderr
    return np.stack([np.asarray(Image.open(folder / f"seed{s:04d}.png").convert("RGB")) for s in seeds])


def assert_import_round_trip(file: Path, tmp_path: Path, words: tuple[str, ...], reference: dict,
                             seeds: list[int]) -> Path:
    """`gen import FILE`, its summary naming `words`; the run exported, the bundle verified; run and bundle
    draw `reference["psi1.0"]` and `["psi0.7"]` (pictures of `seeds` by the original code). Returns the run.
    The seven commands run one after another in one interpreter (`run_gen_steps`)."""
    run, bundle = tmp_path / "run", tmp_path / "bundle"
    samples = [(psi, source, tmp_path / f"{source.name}-{psi}") for psi in (1.0, 0.7) for source in (run, bundle)]
    imported, exported, verified, *drawn = run_gen_steps(
        ["import", str(file), "--out", str(run)], ["export", str(run), "--out", str(bundle)], ["verify", str(bundle)],
        *[sample_args(source, psi, folder, seeds) for psi, source, folder in samples])
    assert imported.returncode == 0, imported.stderr
    for w in words:
        assert w in imported.stdout, imported.stdout
    assert exported.returncode == 0, exported.stderr
    assert verified.returncode == 0 and "all within tolerance" in verified.stdout, verified.stdout + verified.stderr
    for (psi, _, folder), p in zip(samples, drawn):
        assert_same_pictures(read_sampled(p, folder, seeds), reference[f"psi{psi:.1f}"])
    return run


def wait_frames(producer: FrameProducer, count: int, timeout: float = 60.0) -> list[np.ndarray]:
    """Take `count` frames from a kiosk's producer as they come (a display never waits like this)."""
    out, deadline = [], time.monotonic() + timeout
    while len(out) < count:
        frame = producer.get()
        if frame is not None:
            out.append(frame)
        elif time.monotonic() > deadline:
            raise TimeoutError(f"{len(out)} of {count} frames in {timeout} s")
        else:
            time.sleep(0.002)
    return out


# `gen` as a runtime-only install runs it: torch, safetensors and onnxscript cannot be imported.
TORCH_BLOCKED = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('torch', 'safetensors', 'onnxscript'):
            raise ImportError('torch is not installed here')
sys.meta_path.insert(0, Block())
from gen.cli import main
sys.argv = ['gen'] + sys.argv[1:]
main()
"""


def gen_without_torch(*args: str, timeout: float = 120, **kw) -> subprocess.CompletedProcess:
    """Run `gen ARGS` as a runtime-only install would (TORCH_BLOCKED); text output captured."""
    return subprocess.run([sys.executable, "-c", TORCH_BLOCKED, *args], capture_output=True, text=True,
                          timeout=timeout, **kw)


def tiny_dream_bundle(folder: Path, bad: str | None = None, objective_shape: list | None = None,
                      mean: list | None = None, std: list | None = None) -> Path:
    """A dream bundle of a few ONNX ops on the graph's input v: objective = mean(v^2), grad = 2 v (not its true
    gradient: a stand-in the runtime cannot tell apart), features = relu(v). Its golden data is what the runtime
    must compute for a [0, 1] picture x, v = x mapped by the preprocessing (`mean`/`std`). `bad` makes the graph
    return a grad of another shape ("grad") or a non-scalar objective ("objective") while declaring the right ones."""
    import json

    import onnx
    from onnx import TensorProto, helper

    from gen.runtime.bundle import MANIFEST, Preprocessing, sha256_file
    from gen.runtime.dream.loop import DreamSettings, dream_planes

    folder.mkdir(parents=True)
    image = helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, "height", "width"])
    ints = lambda name, v: helper.make_tensor(name, TensorProto.INT64, [len(v)], v)  # noqa: E731
    nodes = [helper.make_node("Add", ["image", "image"], ["grad2"]),
             helper.make_node("Mul", ["image", "image"], ["sq"]),
             helper.make_node("Slice", ["grad2", "zero", "one", "two"], ["grad"]) if bad == "grad"
             else helper.make_node("Identity", ["grad2"], ["grad"]),
             helper.make_node("ReduceMean", ["sq", "hw"], ["objective"], keepdims=1) if bad == "objective"
             else helper.make_node("ReduceMean", ["sq"], ["objective"], keepdims=0)]
    inits = [ints("zero", [0]), ints("one", [1]), ints("two", [2]), ints("hw", [2, 3])]
    like = lambda name: helper.make_tensor_value_info(name, TensorProto.FLOAT, [1, 3, "height", "width"])  # noqa: E731
    graphs = {"dream_grad": helper.make_graph(nodes, "dream_grad", [image], [
                  like("grad"), helper.make_tensor_value_info("objective", TensorProto.FLOAT, [])], initializer=inits),
              "features": helper.make_graph([helper.make_node("Relu", ["image"], ["feat"])], "features", [image],
                                            [like("feat")])}
    for name, g in graphs.items():
        model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
        model.ir_version = 9
        onnx.save(model, folder / f"{name}.onnx")
    preprocessing = {"value_range": [0.0, 1.0]} | ({"mean": mean, "std": std} if mean is not None else {})
    scale, offset = Preprocessing(**preprocessing).affine()
    x = np.random.default_rng(0).random((1, 3, 8, 8), dtype=np.float32)
    v = x * scale + offset
    def gradient(image: np.ndarray) -> tuple[np.ndarray, float]:  # what the graph computes, through preprocessing
        u = image * scale + offset
        return (2 * u * scale).astype(np.float32), float(np.mean(u * u))

    # golden dreams (export/dream.py's golden_dreams): 11 px runs octaves 8 and 11, 10 px only 10 (7 < min_size 8)
    settings = DreamSettings(octaves=2, octave_scale=1.4, iterations=2, step=0.05, jitter=2, tile=0, min_side=8)
    dreams = {}
    for s in (11, 10):
        base = np.random.default_rng(s).random((3, s, s), dtype=np.float32)
        dreams |= {f"dream/{s}/image": base, f"dream/{s}/result": dream_planes(base, gradient, settings)}
    np.savez(folder / "golden.npz", image=x, grad=2 * v * scale, objective=np.float32(np.mean(v * v)),
             feat=np.maximum(v, 0), **dreams)
    spec = {"name": "image", "dtype": "float32", "shape": [1, 3, "height", "width"]}
    out = lambda name, shape: {"name": name, "dtype": "float32", "shape": shape}  # noqa: E731
    manifest = {
        "format": "gen-bundle", "format_version": FORMAT_VERSION, "gen_version": "test",
        "created": "2026-12-01T00:00:00+00:00", "license": "test", "kind": "dream",
        "files": {f.name: {"sha256": sha256_file(f), "size": f.stat().st_size} for f in sorted(folder.iterdir())},
        "graphs": {"dream_grad": {"file": "dream_grad.onnx", "opset": 18, "inputs": [spec], "outputs": [
            out("grad", [1, 3, "height", "width"]), out("objective", objective_shape or [])]},
            "features": {"file": "features.onnx", "opset": 18, "inputs": [spec],
                         "outputs": [out("feat", [1, 3, "height", "width"])]}},
        "preprocessing": preprocessing,
        "dream": {"backbone": "tiny", "layers": {"feat": 1.0}, "classes": 10, "min_size": 8,
                  "objective": {"type": "layers", "terms": ["feat"], "value": "mean(image^2)"}},
        "golden": {"cases": [{"graph": "dream_grad", "inputs": {"image": "image"},
                              "outputs": {"grad": "grad", "objective": "objective"}, "note": "random"},
                             {"graph": "features", "inputs": {"image": "image"}, "outputs": {"feat": "feat"}}],
                   "dreams": [{"image": f"dream/{s}/image", "result": f"dream/{s}/result", "size": [s, s], "octaves": 2,
                               "octave_scale": 1.4, "iterations": 2, "step": 0.05, "jitter": 2, "seed": 0,
                               "note": f"{s} px"}
                              for s in (11, 10)],
                   "tolerances": {"dream_grad": {"rel_l2": 1e-5}, "features": {"rel_l2": 1e-5}}},
    }
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=1))
    return folder
