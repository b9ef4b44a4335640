"""VGG16 (Simonyan & Zisserman 2014), with torchvision's parameter names (`features.N`, `classifier.N`).

Layers are named by block and position: `conv4_3` is the third convolution of block 4 after its
ReLU, `pool4` the max-pool that ends block 4.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .base import Backbone, imagenet_normalize

BLOCKS = [(64, 2), (128, 2), (256, 3), (512, 3), (512, 3)]  # (channels, convolutions) per block


class VGG16(Backbone):
    name = "vgg16"
    default_layer = "conv4_2"

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        names: list[tuple[str, int, int]] = []  # layer name, first and end index in `features`
        cin = 3
        for b, (cout, convs) in enumerate(BLOCKS, start=1):
            for c in range(1, convs + 1):
                names.append((f"conv{b}_{c}", len(layers), len(layers) + 2))
                layers += [nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU()]
                cin = cout
            names.append((f"pool{b}", len(layers), len(layers) + 1))
            layers.append(nn.MaxPool2d(2, 2))
        self.features = nn.Sequential(*layers)
        self.num_classes = num_classes
        self.classifier = nn.Sequential(
            nn.Linear(512 * 7 * 7, 4096), nn.ReLU(), nn.Dropout(),
            nn.Linear(4096, 4096), nn.ReLU(), nn.Dropout(),
            nn.Linear(4096, num_classes),
        )
        self.add_stages((name, self.features[a:b]) for name, a, b in names)
        self.add_stages([("logits", self._logits)])

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        # torchvision pools to 7x7 whatever the input size; the classifier then sees 25088 values.
        return self.classifier(torch.flatten(F.adaptive_avg_pool2d(x, (7, 7)), 1))

    def normalize(self, image: torch.Tensor) -> torch.Tensor:
        return imagenet_normalize(image)
