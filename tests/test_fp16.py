"""The FP16 synthesis graph: converted by onnxruntime's tool, FP32 at its edges and in the normalising
statistics, checked by PSNR against the PyTorch outputs, and never written when it drifts too far."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from importlib.util import find_spec

import numpy as np
import onnx
import pytest

from gen.export import fp16
from gen.export.fp16 import KEEP_FP32_OPS, add_fp16_graph
from gen.runtime.bundle import load_bundle
from gen.runtime.errors import GenError, GenWarning
from gen.runtime.verify import FP16_PSNR_DB, Check, verify


@pytest.fixture(scope="module")
def bundles(sg2_16_export, tmp_path_factory):
    """A small StyleGAN2 bundle (the session's, conftest.sg2_16_export: only read), and a copy with the FP16 graph
    added."""
    folder = tmp_path_factory.mktemp("fp16")
    plain = sg2_16_export[1]
    shutil.copytree(plain.path, folder / "half")
    half, worst = add_fp16_graph(load_bundle(folder / "half"))
    return plain, half, worst


def test_fp16_graph_is_half_inside_and_fp32_at_its_edges(bundles):
    plain, half, _ = bundles
    spec = half.manifest.graphs["synthesis_fp16"]
    assert spec.inputs == plain.manifest.graphs["synthesis"].inputs  # callers and golden data unchanged
    assert [t.dtype for t in spec.outputs] == ["float32"]
    model = onnx.load(str(half.graph_path("synthesis_fp16")))
    kinds = {i.data_type for i in model.graph.initializer if len(i.dims) > 1}
    assert kinds == {onnx.TensorProto.FLOAT16}  # every weight tensor
    size = half.manifest.files["synthesis_fp16.onnx"].size / half.manifest.files["synthesis.onnx"].size
    assert 0.4 < size < 0.7


def test_normalising_statistics_stay_fp32(bundles):
    _, half, _ = bundles
    model = onnx.shape_inference.infer_shapes(onnx.load(str(half.graph_path("synthesis_fp16"))))
    types = {v.name: v.type.tensor_type.elem_type for v in model.graph.value_info}
    kept = [n for n in model.graph.node if n.op_type in KEEP_FP32_OPS]
    assert kept, "the StyleGAN2 graph demodulates with Pow/Sqrt/Reciprocal"
    assert {types.get(o) for n in kept for o in n.output} == {onnx.TensorProto.FLOAT}


def test_fp16_graph_passes_its_psnr_tolerance_and_really_differs(bundles):
    _, half, worst = bundles
    assert half.manifest.golden.tolerances["synthesis_fp16"].psnr_db == FP16_PSNR_DB
    checks = verify(half, "cpu")
    assert all(c.ok for c in checks)
    fp16_checks = [c for c in checks if c.graph == "synthesis_fp16"]
    assert len(fp16_checks) == len([c for c in checks if c.graph == "synthesis"])
    psnrs = [c.psnr_db for c in fp16_checks]
    assert min(psnrs) == pytest.approx(worst)
    assert FP16_PSNR_DB < worst < 120, psnrs  # FP16 rounding is there (FP32 would be ~inf), and small
    assert all(c.max_abs > 1e-5 for c in fp16_checks)  # it could not pass the FP32 tolerance


def test_a_drifting_fp16_graph_is_never_written(bundles, tmp_path, monkeypatch):
    plain, _, _ = bundles
    copy = shutil.copytree(plain.path, tmp_path / "b")
    before = (copy / "manifest.json").read_text()
    monkeypatch.setattr(fp16, "FP16_PSNR_DB", 200.0)  # a bound no FP16 graph meets
    with pytest.raises(GenError, match=r"FP16 synthesis graph drifts too far from FP32 \(PSNR"):
        add_fp16_graph(load_bundle(copy))
    assert (copy / "manifest.json").read_text() == before
    assert not (copy / "synthesis_fp16.onnx").exists()


def test_psnr_tolerance_decides_a_check():
    base = dict(graph="synthesis_fp16", output="img", note="", engine="cpu", max_abs=0.1, rel_l2=0.1,
                tol_max_abs=None, tol_rel_l2=None)
    assert Check(**base, psnr_db=60.0, tol_psnr_db=50.0).ok
    assert not Check(**base, psnr_db=40.0, tol_psnr_db=50.0).ok
    assert not Check(**base, psnr_db=float("-inf"), tol_psnr_db=50.0).ok  # a wrong shape


def test_bundle_without_fp16_graph_keeps_its_manifest_shape(bundles):
    plain, _, _ = bundles
    raw = json.loads((plain.path / "manifest.json").read_text())
    assert "engines" not in raw and "synthesis_fp16" not in raw["golden"]["tolerances"]
    assert np.isfinite(list(raw["golden"]["tolerances"]["synthesis"].values())).all()


@pytest.mark.skipif(find_spec("tensorrt") is not None, reason="TensorRT is installed: export would build engines")
def test_export_target_trt_without_tensorrt_writes_onnx_and_fp16_and_says_so(sg2_16_export, tmp_path):
    from gen.export.targets import export_stylegan_bundle

    checkpoint = sg2_16_export[0]
    with pytest.warns(GenWarning, match="TensorRT is not installed here.*builds and caches its engines on first use"):
        done = export_stylegan_bundle(checkpoint, tmp_path / "b", target="trt", fp16_graph=True,
                                      ranges={"batch": (1, 2, 4)})
    b = load_bundle(tmp_path / "b")
    assert "synthesis_fp16" in b.manifest.graphs and b.manifest.engines is None and done.engines == []
    assert done.fp16_psnr_db is not None and done.fp16_psnr_db > 50
    p = subprocess.run([sys.executable, "-m", "gen.cli", "export", str(checkpoint), "-o", str(tmp_path / "c"),
                        "--target", "trt", "--trt-size", "512,64,1024"], capture_output=True, text=True)
    assert p.returncode == 2 and "--trt-size must be MIN,OPT,MAX" in p.stderr  # refused before any export work
    assert not (tmp_path / "c").exists()
