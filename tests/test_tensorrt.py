"""TensorRT: names, profiles, engine choice and messages on recorded manifests (everywhere); building and
running engines (only where NVIDIA's tensorrt, cuda-python and a GPU are: `pytest -m gpu tests/test_tensorrt.py`)."""

from __future__ import annotations

import json
from importlib.util import find_spec
from pathlib import Path

import numpy as np
import pytest
from msgspec import ValidationError
from msgspec.structs import replace

from gen.runtime.bundle import Bundle, EngineRecord, GraphSpec, Manifest, parse, to_data
from gen.runtime.engines import available_engines, resolve_engine
from gen.runtime.engines.trt import import_cudart, import_tensorrt, this_device
from gen.runtime.engines.trt_plan import (
    Device,
    build_source,
    cached_records,
    derive_profiles,
    engine_file_name,
    graph_precision,
    has_fast_fp16,
    no_engine_message,
    parse_range,
    select_engine,
    shape_outside,
    timing_cache_name,
    version_tuple,
    write_record,
)
from gen.runtime.errors import GenError
from gen.runtime.verify import FP16_PSNR_DB, psnr, tolerance_for

SHA_A, SHA_B = "a" * 64, "b" * 64
ORIN = Device("Orin", "8.7", "10.3.0")
H100 = Device("NVIDIA H100 80GB HBM3", "9.0", "10.8.0")
BATCH = {"ws": {"min": [1, 8, 32], "opt": [8, 8, 32], "max": [32, 8, 32]},
         "noise_0": {"min": [1, 1, 4, 4], "opt": [8, 1, 4, 4], "max": [32, 1, 4, 4]}}


def record(graph="synthesis", cc="8.7", trt="10.3.0", precision="fp16", gpu="Orin", sha=SHA_A, **flags) -> dict:
    return dict(graph=graph, file=engine_file_name(graph, cc, trt, precision), onnx_sha256=sha, gpu_name=gpu,
                compute_capability=cc, tensorrt_version=trt, precision=precision, profiles=BATCH, **flags)


# A manifest as `gen export --target trt` wrote it on a Jetson AGX Orin (JetPack 6) and an H100 desktop.
RECORDED = {
    "format": "gen-bundle", "format_version": 2, "gen_version": "0.1.0", "created": "2026-11-20T10:00:00+00:00",
    "license": "test", "kind": "stylegan",
    "files": {f: {"sha256": SHA_A, "size": 1} for f in [
        "mapping.onnx", "synthesis.onnx", "golden.npz", "synthesis.sm87.trt10.3.0.fp16.engine",
        "mapping.sm87.trt10.3.0.fp32.engine", "synthesis.sm90.trt10.8.0.fp16.engine",
        "synthesis.sm90.trt10.8.0.fp32.engine", "timing.sm87.trt10.3.0.cache"]},
    "graphs": {
        "mapping": {"file": "mapping.onnx", "opset": 18, "inputs": [{"name": "z", "dtype": "float32",
                    "shape": ["batch", 32]}], "outputs": [{"name": "w", "dtype": "float32", "shape": ["batch", 32]}]},
        "synthesis": {"file": "synthesis.onnx", "opset": 18, "inputs": [
            {"name": "ws", "dtype": "float32", "shape": ["batch", 8, 32]},
            {"name": "const_noise", "dtype": "float32", "shape": [1]},
            {"name": "noise_0", "dtype": "float32", "shape": ["batch", 1, 4, 4]}],
            "outputs": [{"name": "img", "dtype": "float32", "shape": ["batch", 3, 16, 16]}]}},
    "preprocessing": {"value_range": [-1.0, 1.0]},
    "stylegan": {"variant": "stylegan2", "resolution": 16, "z_dim": 32, "w_dim": 32, "num_ws": 8,
                 "w_avg": [0.0] * 32, "noise_inputs": ["noise_0"]},
    "golden": {"cases": [{"graph": "synthesis", "inputs": {"ws": "a", "const_noise": "c", "noise_0": "d"},
                          "outputs": {"img": "b"}}],
               "pictures": [{"seeds": [0], "ws": "a", "image": "e"},
                            {"seeds": [0], "ws": "a", "image": "e", "noise": "random"}],
               "tolerances": {"synthesis": {"max_abs": 1e-4}, "synthesis_fp16": {"psnr_db": 45.0}}},
    "engines": [record(), record("mapping", precision="fp32"),
                record(cc="9.0", trt="10.8.0", gpu=H100.gpu_name),
                record(cc="9.0", trt="10.8.0", gpu=H100.gpu_name, precision="fp32")],
}


@pytest.fixture
def manifest() -> Manifest:
    return parse(json.loads(json.dumps(RECORDED)), Manifest)


# ---- names, versions, precision


def test_engine_and_cache_names_say_gpu_tensorrt_and_precision():
    assert engine_file_name("synthesis", "8.7", "10.3.0.30", "fp16") == "synthesis.sm87.trt10.3.0.fp16.engine"
    assert engine_file_name("dream_grad", "12.0", "10.8.0", "fp32") == "dream_grad.sm120.trt10.8.0.fp32.engine"
    assert timing_cache_name("9.0", "10.8.0.post1") == "timing.sm90.trt10.8.0.cache"
    assert version_tuple("10.3") == (10, 3, 0)
    with pytest.raises(GenError, match="TensorRT version"):
        version_tuple("ten")


def test_fp16_default_follows_the_gpu_and_mapping_stays_fp32():
    assert [has_fast_fp16(cc) for cc in ("5.2", "5.3", "6.1", "6.2", "7.5", "8.7", "9.0")] == [
        False, True, False, True, True, True, True]
    assert graph_precision("synthesis", None, "8.7") == "fp16"
    assert graph_precision("synthesis", None, "6.1") == "fp32"
    assert graph_precision("synthesis", False, "9.0") == "fp32"
    assert graph_precision("mapping", True, "9.0") == "fp32"
    assert graph_precision("synthesis_fp16", False, "6.1") == "fp16"


def test_fp16_engines_build_from_the_fp16_graph_when_there_is_one():
    graphs = {"mapping", "synthesis", "synthesis_fp16"}
    assert build_source("synthesis", graphs, "fp16", has_fp16_flag=True) == ("synthesis_fp16", True)
    assert build_source("synthesis", {"synthesis"}, "fp16", has_fp16_flag=True) == ("synthesis", False)
    assert build_source("synthesis", graphs, "fp32", has_fp16_flag=False) == ("synthesis", False)
    assert build_source("synthesis_fp16", graphs, "fp16", has_fp16_flag=False) == ("synthesis_fp16", True)
    with pytest.raises(GenError, match="--fp16-graph"):  # TensorRT 11: no weak typing
        build_source("synthesis", {"synthesis"}, "fp16", has_fp16_flag=False)


# ---- optimisation profiles


def test_parse_range():
    assert parse_range("1,8,32", "--trt-batch") == (1, 8, 32)
    assert parse_range("4", "--trt-batch") == (4, 4, 4)
    for bad in ("8,1,32", "0,1,2", "1,2", "a,b,c", ""):
        with pytest.raises(GenError, match="--trt-batch must be MIN,OPT,MAX"):
            parse_range(bad, "--trt-batch")


def test_generator_profiles_cover_the_batch_axis_only(manifest):
    spec = manifest.graphs["synthesis"]
    p = derive_profiles(spec)
    assert set(p) == {"ws", "noise_0"}  # const_noise is fixed: no profile
    assert (p["ws"].min, p["ws"].opt, p["ws"].max) == ([1, 8, 32], [8, 8, 32], [32, 8, 32])
    p = derive_profiles(spec, {"batch": (2, 4, 6)})
    assert (p["noise_0"].min, p["noise_0"].opt, p["noise_0"].max) == ([2, 1, 4, 4], [4, 1, 4, 4], [6, 1, 4, 4])


def test_batch_max_shrinks_for_large_pictures():
    def spec(r):
        ws = {"name": "ws", "dtype": "float32", "shape": ["batch", 18, 512]}
        img = {"name": "img", "dtype": "float32", "shape": ["batch", 3, r, r]}
        return parse({"file": "s.onnx", "opset": 18, "inputs": [ws], "outputs": [img]}, GraphSpec)
    assert [derive_profiles(spec(r))["ws"].max[0] for r in (256, 512, 1024)] == [32, 16, 8]


def test_dream_profiles_cover_height_and_width():
    spec = parse({"file": "dream_grad.onnx", "opset": 18,
                  "inputs": [{"name": "image", "dtype": "float32", "shape": [1, 3, "height", "width"]}],
                  "outputs": [{"name": "grad", "dtype": "float32", "shape": [1, 3, "height", "width"]},
                              {"name": "objective", "dtype": "float32", "shape": []}]}, GraphSpec)
    p = derive_profiles(spec)["image"]
    assert (p.min, p.opt, p.max) == ([1, 3, 64, 64], [1, 3, 512, 512], [1, 3, 1024, 1024])
    p = derive_profiles(spec, {"height": (128, 256, 768), "width": (128, 256, 768)})["image"]
    assert p.max == [1, 3, 768, 768]
    odd = replace(spec, inputs=[replace(spec.inputs[0], shape=[1, 3, "h", "w"])])
    with pytest.raises(GenError, match="dynamic axis 'h' with no range"):
        derive_profiles(odd)


def test_shapes_outside_the_profile_are_refused_clearly(manifest):
    rec = manifest.engines[0]
    assert shape_outside(rec, "ws", (4, 8, 32)) is None
    assert shape_outside(rec, "const_noise", (1,)) is None
    msg = shape_outside(rec, "ws", (64, 8, 32))
    assert "[64, 8, 32] is outside the engine's profile [1, 8, 32]..[32, 8, 32]" in msg and "\n" not in msg


# ---- manifest records


def test_recorded_manifest_round_trips_with_its_engines(manifest):
    again = parse(json.loads(json.dumps(to_data(manifest))), Manifest)
    assert again.engines == manifest.engines
    assert again.engines[0].profiles["ws"].max == [32, 8, 32]


def test_a_manifest_without_engines_writes_no_engines_key(manifest):
    plain = replace(manifest, engines=None)
    assert "engines" not in to_data(plain)


@pytest.mark.parametrize("change, error", [
    ({"graph": "features"}, "names graph 'features'"),
    ({"file": "other.engine"}, "or a file that the bundle does not have"),
    ({"compute_capability": "sm87"}, "compute_capability"),
    ({"tensorrt_version": "10"}, "tensorrt_version"),
    ({"precision": "int8"}, "precision"),
    ({"profiles": {"ws": {"min": [4], "opt": [2], "max": [8]}}}, "min <= opt <= max"),
])
def test_bad_engine_records_are_refused(change, error):
    raw = json.loads(json.dumps(RECORDED))
    raw["engines"][0].update(change)
    with pytest.raises(ValidationError, match=error):
        parse(raw, Manifest)


# ---- choosing an engine


def test_each_device_gets_its_own_engine(manifest):
    assert select_engine(manifest.engines, "synthesis", ORIN, "fp16").file == "synthesis.sm87.trt10.3.0.fp16.engine"
    assert select_engine(manifest.engines, "synthesis", H100, "fp16").file == "synthesis.sm90.trt10.8.0.fp16.engine"
    assert select_engine(manifest.engines, "synthesis", H100, "fp32").file == "synthesis.sm90.trt10.8.0.fp32.engine"
    assert select_engine(manifest.engines, "mapping", ORIN, "fp32").file == "mapping.sm87.trt10.3.0.fp32.engine"
    assert select_engine(manifest.engines, "synthesis", ORIN, "fp32") is None
    assert select_engine(manifest.engines, "mapping", H100, "fp32") is None


def test_another_tensorrt_release_or_graph_does_not_fit(manifest):
    assert select_engine(manifest.engines, "synthesis", Device("Orin", "8.7", "10.3.1"), "fp16") is None
    assert select_engine(manifest.engines, "synthesis", Device("RTX 4090", "8.9", "10.3.0"), "fp16") is None
    assert select_engine(manifest.engines, "synthesis", ORIN, "fp16", onnx_sha256=SHA_B) is None
    assert select_engine(manifest.engines, "synthesis", ORIN, "fp16", onnx_sha256=SHA_A) is not None


def test_compatible_builds_fit_later_tensorrt_and_other_ampere_gpus():
    vc = parse(record(cc="8.6", trt="10.3.0", version_compatible=True), EngineRecord)
    hc = parse(record(cc="8.6", trt="10.8.0", hardware_compatible=True), EngineRecord)
    assert select_engine([vc], "synthesis", Device("A10", "8.6", "10.8.0")) is vc
    assert select_engine([vc], "synthesis", Device("A10", "8.6", "10.2.0")) is None
    assert select_engine([vc], "synthesis", Device("L4", "8.9", "10.8.0")) is None
    assert select_engine([hc], "synthesis", H100) is hc
    assert select_engine([hc], "synthesis", Device("T4", "7.5", "10.8.0")) is None
    exact = parse(record(cc="9.0", trt="10.8.0"), EngineRecord)
    assert select_engine([hc, exact], "synthesis", H100) is exact  # exact builds can be faster


def test_any_precision_prefers_fp16(manifest):
    assert select_engine(manifest.engines, "synthesis", H100).precision == "fp16"


def test_mismatch_message_says_what_was_built_what_this_is_and_what_to_run(manifest):
    msg = no_engine_message("synthesis", manifest.engines, Device("NVIDIA H100", "9.0", "10.7.0"), "fp16")
    assert "\n" not in msg
    assert "synthesis.sm87.trt10.3.0.fp16.engine built for compute 8.7 / TensorRT 10.3.0 (Orin, fp16)" in msg
    assert "this is 9.0 / 10.7.0 (NVIDIA H100)" in msg
    assert "(Orin, fp16): it was built for another GPU and it was built with another TensorRT version" in msg
    assert "(NVIDIA H100 80GB HBM3, fp16): it was built with another TensorRT version;" in msg
    assert "run `gen export --target trt` here" in msg
    msg = no_engine_message("synthesis", manifest.engines, H100, "fp16", onnx_sha256=SHA_B)
    assert "built from a different version of the graph" in msg
    msg = no_engine_message("features", manifest.engines, ORIN)
    assert "has no TensorRT engine for 'features'" in msg and "this is 8.7 / 10.3.0 (Orin)" in msg


# ---- engines built on a device: the cache beside the bundle


def test_cached_records_skip_damaged_or_orphaned_entries(tmp_path):
    good = parse(record(), EngineRecord)
    write_record(tmp_path, good)
    (tmp_path / good.file).write_bytes(b"plan")
    orphan = parse(record(cc="9.0", trt="10.8.0"), EngineRecord)
    write_record(tmp_path, orphan)  # its engine file never arrived
    (tmp_path / "x.engine.json").write_text("{not json")
    (tmp_path / "x.engine").write_bytes(b"plan")
    assert cached_records(tmp_path) == [good]


# ---- FP16 tolerance and PSNR


def test_fp16_engines_are_held_to_the_fp16_tolerance(manifest):
    b = Bundle(Path("."), manifest)
    assert tolerance_for(b, "synthesis").max_abs == 1e-4
    assert tolerance_for(b, "synthesis", "fp16").psnr_db == 45.0
    assert tolerance_for(b, "mapping", "fp16").psnr_db == FP16_PSNR_DB  # none stated: the default


def test_psnr():
    want = np.linspace(-1, 1, 1000).astype(np.float32)
    assert psnr(want + 0.01, want) == pytest.approx(10 * np.log10(4 / 1e-4), abs=1e-3)
    assert psnr(want, want) == float("inf")
    assert psnr(want[:10], want) == float("-inf")


# ---- clear messages where TensorRT, cuda-python or a GPU is missing (real imports, nothing faked)


@pytest.mark.skipif(find_spec("tensorrt") is not None, reason="tensorrt is installed here")
def test_missing_tensorrt_is_one_clear_line():
    with pytest.raises(GenError, match="TensorRT is not installed.*use --engine cuda or --engine cpu"):
        import_tensorrt()
    with pytest.raises(GenError, match="TensorRT is not installed"):
        this_device()
    assert "trt" not in available_engines()
    with pytest.raises(GenError, match="engine 'trt' is not available here .*tensorrt"):
        resolve_engine("trt")


@pytest.mark.skipif(find_spec("cuda") is not None, reason="cuda-python is installed here")
def test_missing_cuda_python_is_one_clear_line():
    with pytest.raises(GenError, match="needs cuda-python.*pip install 'cuda-python"):
        import_cudart()


@pytest.mark.skipif(find_spec("cuda") is None, reason="needs cuda-python to ask CUDA for a GPU")
def test_missing_gpu_is_one_clear_line():
    cudart = import_cudart()
    err, count = cudart.cudaGetDeviceCount()
    if int(err) == 0 and count > 0:
        pytest.skip("a GPU is visible here")
    pytest.importorskip("tensorrt", reason="this_device() asks TensorRT its version first")
    with pytest.raises(GenError, match="no CUDA GPU is usable here .*use --engine cpu"):
        this_device()


# ---- on a machine with TensorRT and a GPU: build, run, reuse (skipped elsewhere, with the reason)


def _needs_tensorrt_gpu():
    pytest.importorskip("tensorrt", reason="NVIDIA's tensorrt is not installed (TensorRT cannot be installed "
                                           "from PyPI alone); run on a GPU machine with it, see README")
    pytest.importorskip("cuda", reason="cuda-python is not installed: pip install 'cuda-python>=12'")
    pytest.importorskip("torch", reason="the test exports a small checkpoint with PyTorch")
    try:
        return this_device()
    except GenError as e:
        pytest.skip(str(e))


@pytest.mark.gpu
def test_engine_built_on_first_use_verifies_and_is_reused(tmp_path):
    device = _needs_tensorrt_gpu()
    from conftest import MODELS, make_checkpoint
    from gen.export.stylegan import export_stylegan
    from gen.runtime.engines.trt import TrtRunner
    from gen.runtime.engines.trt_plan import cache_dir
    from gen.runtime.verify import verify

    bundle, _ = export_stylegan(make_checkpoint(tmp_path / "ck.safetensors", MODELS["sg2-16"], 2), tmp_path / "b")
    with pytest.warns(UserWarning, match="building a TensorRT"):
        TrtRunner(bundle, "synthesis")
    cached = {r.file for r in cached_records(cache_dir(bundle))}
    assert engine_file_name("synthesis", device.compute_capability, device.tensorrt_version,
                            graph_precision("synthesis", None, device.compute_capability)) in cached
    checks = verify(bundle, "trt")  # builds mapping too, reuses synthesis
    assert checks and all(c.ok for c in checks), [(c.graph, c.max_abs, c.psnr_db) for c in checks if not c.ok]


@pytest.mark.gpu
def test_export_target_trt_records_engines_in_the_manifest(tmp_path):
    device = _needs_tensorrt_gpu()
    from conftest import MODELS, make_checkpoint
    from gen.export.engines import add_engines
    from gen.export.stylegan import export_stylegan
    from gen.runtime.bundle import load_bundle
    from gen.runtime.engines.trt import TrtRunner

    bundle, _ = export_stylegan(make_checkpoint(tmp_path / "ck.safetensors", MODELS["sg2-16"], 2), tmp_path / "b")
    bundle = add_engines(load_bundle(bundle.path), fp16=False, ranges={"batch": (1, 2, 4)})
    recs = {r.graph: r for r in bundle.manifest.engines}
    assert set(recs) == {"mapping", "synthesis"} and recs["synthesis"].profiles["ws"].max[0] == 4
    assert recs["synthesis"].compute_capability == device.compute_capability
    assert timing_cache_name(device.compute_capability, device.tensorrt_version) in bundle.manifest.files
    runner = TrtRunner(bundle, "synthesis", fp16=False)
    assert runner.record == recs["synthesis"]
    with pytest.raises(GenError, match="outside the engine's profile"):
        g = bundle.golden()
        case = next(c for c in bundle.manifest.golden.cases if c.graph == "synthesis")
        runner.run({k: np.repeat(g[v], 8, axis=0) if g[v].shape[0] == 1 and k != "const_noise" else g[v]
                    for k, v in case.inputs.items()})
