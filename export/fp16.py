"""An FP16 variant of a bundle's graph for GPUs (half the size; tensor cores), held to a PSNR tolerance.

The converter is onnxruntime's own (`onnxruntime.transformers.float16`, maintained with onnxruntime,
which every gen install already has). Inputs and outputs stay FP32, so callers and golden data are
unchanged. The normalising statistics stay FP32 too: StyleGAN2's demodulation sums (w * s)^2 over
in_channels * k * k terms and StyleGAN1's instance norm a variance, sums that overflow FP16's 65504 on a
GPU that accumulates in FP16, turning a picture black; they are a tiny share of the work.

Measured on onnxruntime-cpu (which upcasts FP16 arithmetic it has no kernel for, so this measures FP16
weights and intermediate rounding): PSNR 76-83 dB on the golden cases of small StyleGAN1/2 models, 70-80
dB with styles scaled x8; the graph is 51-62% of the FP32 file. The tolerance (50 dB, an RMS error under
one 8-bit level) leaves room for FP16 accumulation on GPUs; a wrong op measures below 30 dB.
"""

from __future__ import annotations

from pathlib import Path

import onnx

from gen.runtime.bundle import Bundle, GoldenCase, GraphSpec, Tolerance, to_data
from gen.runtime.engines.ort import OrtRunner
from gen.runtime.errors import GenError
from gen.runtime.verify import FP16_PSNR_DB, psnr

from .onnx_graph import graph_spec, save_graph
from .writer import extend_bundle

KEEP_FP32_OPS = ["Pow", "ReduceSum", "ReduceSumSquare", "ReduceMean", "Sqrt", "Reciprocal", "InstanceNormalization"]
FP16_TOLERANCE = Tolerance(psnr_db=FP16_PSNR_DB)


def convert_fp16(src: Path, dst: Path) -> None:
    """FP32 ONNX file -> FP16 inside, FP32 inputs and outputs, the ops above kept FP32."""
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

    model = convert_float_to_float16(onnx.load(str(src)), keep_io_types=True,
                                     op_block_list=DEFAULT_OP_BLOCK_LIST + KEEP_FP32_OPS)
    sort_nodes(model.graph)
    onnx.checker.check_model(model, full_check=True)
    save_graph(model, dst)


def sort_nodes(graph: onnx.GraphProto) -> None:
    """The converter appends the input casts after their users; ONNX wants producers first."""
    ready = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        later = []
        for n in pending:
            if set(n.input) <= ready:
                ordered.append(n)
                ready.update(n.output)
            else:
                later.append(n)
        if len(later) == len(pending):
            raise GenError(f"the FP16 graph has nodes whose inputs nothing produces: {later[0].name}")
        pending = later
    del graph.node[:]
    graph.node.extend(ordered)


def add_fp16_graph(bundle: Bundle, graph: str = "synthesis") -> tuple[Bundle, float]:
    """Add `<graph>_fp16` with golden cases reusing the graph's own; returns the bundle and the worst PSNR
    measured on onnxruntime-cpu. A graph below its tolerance is never written."""
    name = f"{graph}_fp16"
    if graph not in bundle.manifest.graphs:
        raise GenError(f"bundle '{bundle.path}' has no graph '{graph}' to convert to FP16")

    worst = []

    def add(folder: Path, fields: dict) -> dict:
        file = f"{name}.onnx"
        convert_fp16(folder / bundle.manifest.graphs[graph].file, folder / file)
        spec = graph_spec(folder / file)
        worst.append(worst_psnr(bundle, graph, folder / file, spec))
        if worst[0][0] < FP16_PSNR_DB:  # raised inside the build: the bundle stays as it was
            raise GenError(f"the FP16 {graph} graph drifts too far from FP32 (PSNR {worst[0][0]:.1f} dB < "
                           f"{FP16_PSNR_DB:g} dB, {worst[0][1]}); export without --fp16-graph")
        fields["graphs"][name] = to_data(spec)
        golden = fields["golden"]
        golden["cases"] = [c for c in golden["cases"] if c["graph"] != name] + [
            to_data(GoldenCase(graph=name, inputs=c.inputs, outputs=c.outputs, note=f"{c.note} (fp16)"))
            for c in bundle.manifest.golden.cases if c.graph == graph]
        golden["tolerances"][name] = to_data(FP16_TOLERANCE)
        return fields

    return extend_bundle(bundle, add), worst[0][0]


def worst_psnr(bundle: Bundle, graph: str, path: Path, spec: GraphSpec) -> tuple[float, str]:
    """The lowest PSNR of the FP16 graph against the PyTorch outputs over the graph's golden cases."""
    golden, results = bundle.golden(), []
    with OrtRunner(path, spec, "cpu") as runner:
        for case in (c for c in bundle.manifest.golden.cases if c.graph == graph):
            outs = runner.run({k: golden[v] for k, v in case.inputs.items()})
            results += [(psnr(outs[k], golden[v]), case.note) for k, v in case.outputs.items()]
    return min(results)
