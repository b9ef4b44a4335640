"""The FLOP count benchmarks/sample_speed.py divides by: benchmarks/machine.py's graph_macs, read from an exported
graph's shapes, against a count worked out by hand from the model's config."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from gen.export.stylegan import export_graphs
from gen.train.config import ModelConfig
from gen.train.stylegan import Generator

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from machine import graph_macs  # noqa: E402


def stylegan2_macs(cfg: ModelConfig, batch: int) -> dict[str, dict[str, int]]:
    """Multiply-adds of the exported StyleGAN2 graphs (non-fused modulation, NVlabs' up-sampling), by graph and op,
    worked out from the architecture (train/stylegan.py):
    - mapping: Linear z_dim -> w_dim, then w_dim -> w_dim (Gemm);
    - each modulated layer: its affine w_dim -> I (Gemm); demodulation styles^2 [N, I] @ [I, O] (MatMul); the 3x3
      conv at R x R (Conv), or, up-sampling from R/2, a stride-2 transposed 3x3 conv of the R/2 x R/2 input
      (ConvTranspose) and the 4x4 depthwise low-pass on its [2R/2 + 1]^2 output to R x R (Conv);
    - each ToRGB: affine w_dim -> I (Gemm), 1x1 conv to 3 channels (Conv); the picture so far up-sampled by a
      depthwise 4x4 transposed conv (ConvTranspose) of its 3 x R/2 x R/2 pixels."""
    n, w = batch, cfg.w_dim
    mapping = {"Gemm": n * (cfg.z_dim * w + (cfg.mapping_layers - 1) * w * w)}
    syn = dict.fromkeys(("Conv", "ConvTranspose", "MatMul", "Gemm"), 0)

    def layer(i: int, o: int, r: int, up: bool) -> None:
        syn["Gemm"] += n * w * i
        syn["MatMul"] += n * i * o
        if up:
            syn["ConvTranspose"] += n * i * (r // 2) ** 2 * o * 9
            syn["Conv"] += n * o * r * r * 16
        else:
            syn["Conv"] += n * o * r * r * i * 9

    def torgb(i: int, r: int) -> None:
        syn["Gemm"] += n * w * i
        syn["Conv"] += n * 3 * r * r * i
        if r > 4:
            syn["ConvTranspose"] += n * 3 * (r // 2) ** 2 * 16

    layer(cfg.channels(4), cfg.channels(4), 4, False)
    torgb(cfg.channels(4), 4)
    for log2 in range(3, cfg.log2_res + 1):
        r = 2**log2
        c_in, c_out = cfg.channels(r // 2), cfg.channels(r)
        layer(c_in, c_out, r, True)
        layer(c_out, c_out, r, False)
        torgb(c_out, r)
    return {"mapping": mapping, "synthesis": syn}


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> tuple[ModelConfig, Path]:
    # Channels that change with resolution (64 at 4 and 8, 32 at 16), so that a count reading a weight's in and out
    # channels the wrong way round is wrong; z_dim != w_dim for the same reason.
    cfg = ModelConfig(resolution=16, z_dim=48, w_dim=40, mapping_layers=3, channel_base=512, channel_max=64)
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("graphs")
    export_graphs(Generator(cfg).eval().requires_grad_(False), folder, simplify=True)
    return cfg, folder


@pytest.mark.parametrize("batch", [1, 3])
def test_graph_count_matches_the_architecture(exported, batch):
    cfg, folder = exported
    want = stylegan2_macs(cfg, batch)
    for graph in ("mapping", "synthesis"):
        got = {op: n for op, n in graph_macs(folder / f"{graph}.onnx", batch).items() if n}
        assert got == want[graph], graph


def test_count_of_grouped_and_transposed_ops(tmp_path):
    """One node of each kind with every factor distinct: a grouped strided conv, a grouped transposed conv, a
    batched MatMul and a Gemm with transA."""
    f = TensorProto.FLOAT
    weights = [helper.make_tensor("wc", f, [6, 2, 3, 5], np.zeros(180, np.float32)),
               helper.make_tensor("wt", f, [4, 3, 2, 2], np.zeros(48, np.float32))]
    nodes = [helper.make_node("Conv", ["x", "wc"], ["c"], group=2, strides=[2, 1], pads=[1, 2, 1, 2]),  # [2,6,4,9]
             helper.make_node("ConvTranspose", ["y", "wt"], ["t"], group=2, strides=[2, 2]),  # [2, 6, 10, 14]
             helper.make_node("MatMul", ["a", "b"], ["m"]),  # [5, 2, 3] @ [3, 7]
             helper.make_node("Gemm", ["p", "q"], ["g"], transA=1)]  # [11, 4]^T @ [11, 13]
    graph = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info("x", f, ["n", 4, 7, 9]), helper.make_tensor_value_info("y", f, ["n", 4, 5, 7]),
         helper.make_tensor_value_info("a", f, [5, "n", 3]), helper.make_tensor_value_info("b", f, [3, 7]),
         helper.make_tensor_value_info("p", f, [11, 4]), helper.make_tensor_value_info("q", f, [11, 13])],
        [helper.make_tensor_value_info(o, f, None) for o in ("c", "t", "m", "g")], weights)
    path = tmp_path / "ops.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), path)
    assert graph_macs(path, batch=2) == {"Conv": 2 * 6 * 4 * 9 * (2 * 3 * 5),
                                         "ConvTranspose": 2 * 4 * 5 * 7 * (3 * 2 * 2),
                                         "MatMul": 5 * 2 * 7 * 3, "Gemm": 4 * 13 * 11}


def test_unknown_shape_is_refused(tmp_path):
    """A count that cannot see a shape says which node, rather than count it as nothing."""
    f = TensorProto.FLOAT
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["x", "s"], ["r"]), helper.make_node("MatMul", ["r", "b"], ["m"])], "g",
        [helper.make_tensor_value_info("x", f, [4, 4]), helper.make_tensor_value_info("s", TensorProto.INT64, [2]),
         helper.make_tensor_value_info("b", f, [4, 4])],
        [helper.make_tensor_value_info("m", f, None)])
    path = tmp_path / "unknown.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), path)
    with pytest.raises(ValueError, match="no static shape for MatMul"):
        graph_macs(path)
