"""GoogLeNet / Inception v1 (Szegedy et al. 2014): the network of the classic DeepDream pictures.

Parameter names follow torchvision's `googlenet` weight file (`conv1.conv.weight`,
`inception4c.branch2.1.bn.running_var`, ...). As in that file, the "5x5" branch uses a 3x3
convolution, and convolutions are followed by batch norm. The auxiliary classifiers (`aux1.*`,
`aux2.*`) are not used for dreaming; their keys are accepted and ignored.
"""

from __future__ import annotations

import torch
from torch import nn

from .base import Backbone, ConvBN, global_pool_fc, symmetric_normalize

# name: (1x1, 3x3 reduce, 3x3, "5x5" reduce, "5x5", pool projection)
INCEPTIONS = {
    "inception3a": (64, 96, 128, 16, 32, 32),
    "inception3b": (128, 128, 192, 32, 96, 64),
    "inception4a": (192, 96, 208, 16, 48, 64),
    "inception4b": (160, 112, 224, 24, 64, 64),
    "inception4c": (128, 128, 256, 24, 64, 64),
    "inception4d": (112, 144, 288, 32, 64, 64),
    "inception4e": (256, 160, 320, 32, 128, 128),
    "inception5a": (256, 160, 320, 32, 128, 128),
    "inception5b": (384, 192, 384, 48, 128, 128),
}
POOL_BEFORE = {"inception4a": 3, "inception5a": 4}  # max-pools between the inception groups


class Inception(nn.Module):
    def __init__(self, cin: int, c1: int, c3r: int, c3: int, c5r: int, c5: int, cpool: int) -> None:
        super().__init__()
        self.branch1 = ConvBN(cin, c1, 1)
        self.branch2 = nn.Sequential(ConvBN(cin, c3r, 1), ConvBN(c3r, c3, 3, padding=1))
        self.branch3 = nn.Sequential(ConvBN(cin, c5r, 1), ConvBN(c5r, c5, 3, padding=1))
        self.branch4 = nn.Sequential(nn.MaxPool2d(3, stride=1, padding=1, ceil_mode=True), ConvBN(cin, cpool, 1))
        self.out_channels = c1 + c3 + c5 + cpool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], 1)


class GoogLeNet(Backbone):
    name = "googlenet"
    default_layer = "inception4c"
    ignored_keys = ("aux1.", "aux2.")

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self.conv1 = ConvBN(3, 64, 7, stride=2, padding=3)
        self.maxpool1 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.conv2 = ConvBN(64, 64, 1)
        self.conv3 = ConvBN(64, 192, 3, padding=1)
        self.maxpool2 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        cin = 192
        for name, channels in INCEPTIONS.items():
            if name in POOL_BEFORE:
                kernel = 3 if name == "inception4a" else 2
                setattr(self, f"maxpool{POOL_BEFORE[name]}", nn.MaxPool2d(kernel, stride=2, ceil_mode=True))
            block = Inception(cin, *channels)
            setattr(self, name, block)
            cin = block.out_channels
        # Every child module except the classifier is a layer one can dream on, in forward order.
        self.add_stages((name, module) for name, module in self.named_children())
        self.num_classes = num_classes
        self.fc = nn.Linear(cin, num_classes)
        self.add_stages([("logits", global_pool_fc(self.fc))])

    def normalize(self, image: torch.Tensor) -> torch.Tensor:
        return symmetric_normalize(image)
