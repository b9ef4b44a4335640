"""The dream gradient's rewrites of backward ops (export/dream.py, `backward_as_forward`) against autograd.

A stride-2 convolution's input gradient is written as a stride-1 conv giving the gradient's four
phases, a pixel shuffle (a fold: ONNX Col2Im) and a crop (`_stride2_input_grad`), instead of a transposed
convolution. It must be the same numbers for every kernel, grouping, padding and input size, odd or even:
checked in float64, where the only difference is the order of a few additions (tolerance 1e-12, relative
L2), and through the ONNX export on onnxruntime in float32 (1e-5; measured ~1e-7).
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.fx.experimental.proxy_tensor import make_fx

from gen.export.dream import (
    _conv_input_grad,
    backward_as_forward,
    conv_same_padding,
    fold_scales_into_convs,
    merge_crops,
    same_padding,
)
from gen.export.onnx_graph import export_graph
from gen.runtime.verify import relative_l2

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.one_thread: torch on one thread

F64_REL_L2 = 1e-12  # float64: the sums' order differs, nothing else
ORT_REL_L2 = 1e-5  # float32 through onnxruntime


def _autograd_input_grad(x, weight, g, padding, groups):
    x = x.detach().requires_grad_(True)
    y = F.conv2d(x, weight, None, 2, padding, 1, groups)
    (want,) = torch.autograd.grad(y, x, g)
    return want


@pytest.mark.parametrize("kernel,groups,cin,cout,padding", [
    (3, 8, 8, 8, (0, 0)),  # EfficientNet's depthwise, padded outside the conv (TF "same")
    (5, 8, 8, 8, (2, 2)),  # depthwise, padded by the conv
    (3, 1, 3, 32, (0, 0)),  # a stem: dense, 3 channels in (Inception's: unpadded)
    (1, 1, 4, 6, (0, 0)),  # 1x1 stride 2: one phase only
    (4, 2, 4, 6, (1, 2)),  # even kernel, grouped, uneven padding
    (3, 4, 8, 12, (1, 0)),  # grouped with more outputs than inputs per group
])
@pytest.mark.parametrize("size", [(10, 13), (17, 16), (9, 9), (24, 31)])
def test_stride2_input_grad_equals_autograd(kernel, groups, cin, cout, padding, size):
    gen = torch.Generator().manual_seed(kernel * 100 + groups * 10 + size[0])
    x = torch.randn(1, cin, *size, generator=gen, dtype=torch.float64)
    weight = torch.randn(cout, cin // groups, kernel, kernel, generator=gen, dtype=torch.float64)
    out = F.conv2d(x, weight, None, 2, padding, 1, groups)
    g = torch.randn(out.shape, generator=gen, dtype=torch.float64)
    want = _autograd_input_grad(x, weight, g, padding, groups)
    got, none1, none2 = _conv_input_grad(g, x, weight, None, [2, 2], list(padding), [1, 1], False, [0, 0], groups,
                                         [True, False, False])
    assert got.shape == want.shape and none1 is None and none2 is None
    assert relative_l2(got.numpy(), want.numpy()) <= F64_REL_L2


def test_stride2_input_grad_is_not_a_transposed_conv():
    """The rewrite is taken for stride 2 (a transposed conv would do the same sums, slower), not for others."""
    x, weight = torch.randn(1, 4, 11, 12), torch.randn(4, 1, 3, 3)

    def input_grad(stride):
        return lambda g, x: _conv_input_grad(g, x, weight, None, stride, [0, 0], [1, 1], False, [0, 0], 4,
                                             [True, False, False])[0]

    for stride, transposed in (([2, 2], False), ([3, 3], True)):
        g = torch.randn(F.conv2d(x, weight, None, stride, 0, 1, 4).shape)
        traced = make_fx(input_grad(stride))(g, x)
        ops = {str(n.target) for n in traced.graph.nodes if n.op == "call_function"}
        assert any("convolution" in op for op in ops)
        assert ("aten.col2im.default" not in ops) == transposed, ops


def _same_conv(x, weight, stride, groups):
    """A conv padded by TF "same" amounts computed from the input's size, as EfficientNet's strided convs are."""
    k, (h, w) = weight.shape[-1], x.shape[-2:]
    pad_h = ((h + stride - 1) // stride - 1) * stride + k - h
    pad_w = ((w + stride - 1) // stride - 1) * stride + k - w
    x = F.pad(x, [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2])
    return F.conv2d(x, weight, None, stride, 0, 1, groups)


def _trace_gradient(net: nn.Module) -> torch.fx.GraphModule:
    """net's (gradient, value) traced with the rewrite table and symbolic sizes, at a size no check uses."""
    return make_fx(lambda image: torch.func.grad_and_value(net)(image), decomposition_table=backward_as_forward(),
                   tracing_mode="symbolic", _allow_non_fake_inputs=True)(torch.rand(1, 3, 37, 43))


def _export_gradient(graph: torch.fx.GraphModule, path) -> None:
    dims = {0: None, 2: torch.export.Dim("height", min=16, max=512), 3: torch.export.Dim("width", min=16, max=512)}
    export_graph(graph, (torch.rand(1, 3, 37, 43),), path, ["image"], ["grad", "objective"], dynamic_shapes=(dims,))


def _assert_matches_autograd(path, net: nn.Module, sizes) -> None:
    """The exported gradient graph on onnxruntime against autograd at each (height, width)."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for h, w in sizes:
        image = np.random.default_rng(h * w).random((1, 3, h, w), dtype=np.float32)
        x = torch.from_numpy(image).requires_grad_(True)
        objective = net(x)
        (want,) = torch.autograd.grad(objective, x)
        got, value = session.run(["grad", "objective"], {"image": image})
        assert got.shape == image.shape
        assert relative_l2(got, want.numpy()) <= ORT_REL_L2
        assert abs(float(value) - objective.item()) <= 1e-5 * abs(objective.item())


class _TwoStrides(nn.Module):
    """TF "same" padded stride-2 depthwise and dense convs between ReLU6s: the ops EfficientNet's dream layers use."""

    def __init__(self) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(0)
        self.stem = nn.Parameter(torch.randn(8, 3, 3, 3, generator=gen) * 0.3)
        self.dw = nn.Parameter(torch.randn(8, 1, 5, 5, generator=gen) * 0.3)
        self.pw = nn.Parameter(torch.randn(6, 8, 1, 1, generator=gen) * 0.3)

    def forward(self, image):
        x = F.relu6(_same_conv(image, self.stem, 2, 1) * 2)
        x = F.relu6(_same_conv(x, self.dw, 2, 8))
        return F.conv2d(x, self.pw).square().mean()


def test_exported_stride2_gradient_on_onnxruntime(tmp_path):
    """Traced with the rewrite table and exported with dynamic sizes, the gradient runs on onnxruntime with no
    ConvTranspose and matches autograd at even, odd and mixed sizes, none of them the traced one."""
    net = _TwoStrides().eval()
    graph = _trace_gradient(net)
    path = tmp_path / "grad.onnx"
    _export_gradient(graph, path)
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert "ConvTranspose" not in ops and "Col2Im" in ops, ops
    _assert_matches_autograd(path, net, ((32, 32), (33, 35), (40, 29)))


class _SameBlock(nn.Module):
    """A batch-normed MBConv-like chain: TF "same" padded stride-2 stem and stride-1 and stride-2 depthwise convs."""

    def __init__(self) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(1)
        self.stem = nn.Parameter(torch.randn(8, 3, 3, 3, generator=gen) * 0.3)
        self.dw1 = nn.Parameter(torch.randn(8, 1, 5, 5, generator=gen) * 0.3)
        self.dw2 = nn.Parameter(torch.randn(8, 1, 3, 3, generator=gen) * 0.3)
        self.bn = nn.BatchNorm2d(8).eval()
        with torch.no_grad():
            self.bn.weight.uniform_(0.5, 2.0, generator=gen)
            self.bn.running_var.uniform_(0.5, 2.0, generator=gen)
        self.pw = nn.Parameter(torch.randn(6, 8, 1, 1, generator=gen) * 0.3)

    def forward(self, image):
        x = F.relu6(_same_conv(image, self.stem, 2, 1) * 2)
        x = F.relu6(self.bn(_same_conv(x, self.dw1, 1, 8)))
        x = F.relu6(_same_conv(x, self.dw2, 2, 8))
        return F.conv2d(x, self.pw).square().mean()


def test_graph_passes_keep_the_gradient(tmp_path):
    """merge_crops, same_padding/conv_same_padding and fold_scales_into_convs: no Pad left before a strided conv
    (auto_pad), one crop per stride-2 gradient and none after stride-1 ones, no multiply by batch norm's scale, and
    the gradient of autograd at even, odd and mixed sizes."""
    net = _SameBlock().eval()
    graph = _trace_gradient(net)
    pads_before = sum(n.target == torch.ops.aten.constant_pad_nd.default for n in graph.graph.nodes)
    merge_crops(graph, 16)
    pads_after = sum(n.target == torch.ops.aten.constant_pad_nd.default for n in graph.graph.nodes)
    assert pads_after == pads_before - 3  # the stride-1 conv's crop and the stride-2 ones' second crops
    same = same_padding(graph, 16)
    assert len(same) == 2 and set(same.values()) == {(2, 2)}  # the stride-2 convs; the stride-1 pad is static
    path = tmp_path / "grad.onnx"
    _export_gradient(graph, path)
    muls = sum(n.op_type == "Mul" for n in onnx.load(str(path)).graph.node)
    conv_same_padding(path, same)
    assert fold_scales_into_convs(path) == 1
    model = onnx.load(str(path))
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("Pad") == 2 and ops.count("Mul") == muls - 1, ops  # the two stride-2 gradients' crops
    assert sum(any(a.name == "auto_pad" and a.s == b"SAME_UPPER" for a in n.attribute) for n in model.graph.node) == 2
    _assert_matches_autograd(path, net, ((32, 32), (33, 35), (40, 29), (17, 16)))
