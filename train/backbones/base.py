"""What every dreaming backbone offers: named layers in forward order, its own input normalisation.

A backbone takes images as float [N, 3, H, W] in [0, 1] (RGB) and returns the activations of the
layers asked for, running only as far as the deepest of them. The forward pass branches only on
layer names and shapes, never on tensor values, so it traces (make_fx, ONNX export) as it runs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from gen.runtime.errors import GenError

Stage = Callable[[torch.Tensor], torch.Tensor]


class Backbone(nn.Module):
    name: str = ""
    default_layer: str = ""
    min_size: int = 32  # the smallest image side the network accepts
    num_classes: int = 0  # size of the classifier's output ('logits'); set by backbones that have one
    # Key prefixes found in the public weight files that dreaming does not use (auxiliary heads).
    ignored_keys: tuple[str, ...] = ()

    def __init__(self) -> None:
        super().__init__()
        self._stages: list[tuple[str, Stage]] = []

    def add_stages(self, stages: Iterable[tuple[str, Stage]]) -> None:
        self._stages.extend(stages)

    @property
    def layer_names(self) -> list[str]:
        return [name for name, _ in self._stages]

    @property
    def has_classifier(self) -> bool:
        return "logits" in self.layer_names

    def normalize(self, image: torch.Tensor) -> torch.Tensor:
        """[0, 1] RGB -> what the network's weights were trained on."""
        raise NotImplementedError

    @classmethod
    def for_weights(cls, state: dict[str, torch.Tensor]) -> tuple[Backbone, dict[str, torch.Tensor]]:
        """The network a weight file's tensors belong to, and the tensors under its parameter names. Most
        backbones have one layout; Inception v3 has two (FID's and torchvision's)."""
        return cls(), state

    def check_layers(self, layers: Iterable[str]) -> None:
        valid = self.layer_names
        for layer in layers:
            if layer not in valid:
                raise GenError(f"unknown layer '{layer}' for {self.name}; valid layers: {', '.join(valid)}")

    def forward(self, image: torch.Tensor, layers: Sequence[str]) -> dict[str, torch.Tensor]:
        """Activations {layer: [N, C, h, w]} (or [N, classes] for 'logits') of the wanted layers."""
        self.check_layers(layers)
        wanted = set(layers)
        last = max(self.layer_names.index(layer) for layer in wanted)
        x = self.normalize(image)
        out: dict[str, torch.Tensor] = {}
        for name, stage in self._stages[: last + 1]:
            x = stage(x)
            if name in wanted:
                out[name] = x
        return out


class ConvBN(nn.Module):
    """Convolution without bias, batch norm, ReLU: torchvision's BasicConv2d (keys conv.*, bn.*)."""

    def __init__(self, cin: int, cout: int, kernel_size, stride=1, padding=0) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel_size, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


def imagenet_normalize(image: torch.Tensor) -> torch.Tensor:
    """torchvision's ImageNet mean/std on [0, 1] RGB (VGG)."""
    mean = image.new_tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = image.new_tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    return (image - mean) / std


def symmetric_normalize(image: torch.Tensor) -> torch.Tensor:
    """[0, 1] -> [-1, 1]: what GoogLeNet and Inception v3 weights expect (torchvision's transform_input)."""
    return image * 2.0 - 1.0


def global_pool_fc(fc: nn.Linear) -> Stage:
    """Average over all positions, then the classifier: works on any image size."""

    def logits(x: torch.Tensor) -> torch.Tensor:
        return fc(x.mean(dim=(2, 3)))

    return logits
