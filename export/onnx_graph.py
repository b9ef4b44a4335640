"""PyTorch module -> checked, optionally simplified ONNX file: the one export path every graph takes."""

from __future__ import annotations

import logging
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import onnx
import torch

from gen.runtime.bundle import GraphSpec, TensorSpec
from gen.runtime.engines.onnx_file import external_tensor
from gen.runtime.errors import GenError

OPSET = 18
# The exporter logs that torchvision's ops are not registered; we never use them, and no CPU torchvision exists.
logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
_DTYPES = {onnx.TensorProto.FLOAT: "float32", onnx.TensorProto.FLOAT16: "float16",
           onnx.TensorProto.INT64: "int64", onnx.TensorProto.INT32: "int32"}


@dataclass
class GraphReport:
    nodes_exported: int
    nodes_final: int
    simplified: bool
    seconds: float


def export_graph(module: torch.nn.Module | torch.fx.GraphModule, args: tuple, path: Path, input_names: list[str],
                 output_names: list[str], dynamic_shapes, simplify: bool = True) -> GraphReport:
    """Export with the dynamo exporter, check it, and keep onnxslim's version when it has fewer nodes."""
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, args, str(path), dynamo=True, verbose=False, opset_version=OPSET,
                          input_names=input_names,
                          output_names=output_names, dynamic_shapes=dynamic_shapes, optimize=True,
                          external_data=False)
    model = onnx.load(str(path))
    exported = len(model.graph.node)
    simplified = False
    if simplify:
        model, simplified = _slim(model)
    # Exporter annotations of intermediate shapes are not needed at run time and have misled
    # onnxruntime's memory planner with broadcast inputs; the runtimes infer them again.
    del model.graph.value_info[:]
    # The exporter annotates the graph, its tensors and each node (with its Python stack trace and FX node):
    # nothing reads them, they hold the exporting machine's file paths (which would ship in a bundle) and make
    # each export byte-different.
    graph = model.graph
    for item in (graph, *graph.input, *graph.output, *graph.initializer, *graph.node):
        del item.metadata_props[:]
    onnx.checker.check_model(model, full_check=True)
    save_graph(model, path)
    return GraphReport(exported, len(model.graph.node), simplified, time.perf_counter() - t0)


def save_graph(model: onnx.ModelProto, path: Path) -> None:
    """Write `model` as one self-contained file. The runtime refuses a graph that keeps tensors in another file
    (ONNX's external data: no hash in the manifest covers that file), and onnx.save would write such files for
    tensors marked external. A graph over protobuf's 2 GB limit cannot be one file, so it is an error here; our
    models are far below it (a 1024 px StyleGAN2 synthesis graph is ~120 MB in FP32)."""
    try:
        data = model.SerializeToString()
    except ValueError:  # protobuf refuses to serialise a message over 2 GB
        raise GenError(f"the {path.stem} graph is over ONNX's 2 GB limit for one file; a gen bundle keeps each "
                       "graph in one file: export a smaller model") from None
    if found := external_tensor(data):  # (a model loaded without its external data; never one of ours)
        raise GenError(f"the {path.stem} graph keeps tensor '{found[0]}' in another file ({found[1]}); a gen "
                       "bundle's graphs hold their own weights")
    path.write_bytes(data)


def _slim(model: onnx.ModelProto) -> tuple[onnx.ModelProto, bool]:
    try:
        import onnxslim
    except ImportError:
        return model, False
    slim = onnxslim.slim(model)
    if slim is not None and len(slim.graph.node) < len(model.graph.node):
        return slim, True
    return model, False


def graph_spec(path: Path) -> GraphSpec:
    """The manifest entry for an ONNX file, read from the file itself."""
    model = onnx.load(str(path), load_external_data=False)

    def spec(v) -> TensorSpec:
        t = v.type.tensor_type
        dims = [d.dim_param if d.dim_param else d.dim_value for d in t.shape.dim]
        return TensorSpec(name=v.name, dtype=_DTYPES[t.elem_type], shape=dims)

    init = {i.name for i in model.graph.initializer}
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    return GraphSpec(file=path.name, opset=opset, inputs=[spec(v) for v in model.graph.input if v.name not in init],
                     outputs=[spec(v) for v in model.graph.output])
