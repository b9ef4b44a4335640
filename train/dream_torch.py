"""The PyTorch engine of DeepDream: objectives on backbone features and their gradient by autograd.

An objective is a small module `objective(image) -> scalar`, image float [N, 3, H, W] in [0, 1]:
backbone features, then one of
- layers with weights: mean of squared activations (optionally of some channels only);
- a guide image: each location's features matched to the best-matching guide feature, as in the
  original DeepDream notebook (the gradient at a location is that guide feature);
- a class logit.
`gradient_and_value(objective, image)` is the one gradient call, a plain function of the image tensor
that the export can trace; the eager engine computes the same by plain autograd, with less memory.
`torch_gradient(objective)` wraps that for the NumPy driver in `gen.runtime.dream.loop`, which does
octaves, jitter and tiles for every engine; `torch_engine(...)` builds the whole engine from names.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from gen.runtime.dream.loop import DreamEngine, GradientFn
from gen.runtime.dream.objective import LayerTerm, parse_layers
from gen.runtime.errors import GenError
from gen.runtime.images import load_image

from .backbones import PUBLIC_FILES, Backbone, build_backbone, layer_table
from .devices import resolve_device

GUIDE_MAX_SIDE = 512  # guide images are shrunk to fit this before their features are taken


def guide_match(features: torch.Tensor, guide: torch.Tensor) -> torch.Tensor:
    """Mean over locations of the best dot product with any guide feature.

    features [N, C, h, w], guide [C, M] -> scalar. Its gradient at each location is the guide
    feature that matches it best (the original notebook's `objective_guide`).
    """
    x = features.flatten(2)  # [N, C, hw]
    scores = torch.einsum("ncl,cm->nlm", x, guide)
    return scores.amax(dim=2).mean()


class DreamObjective(nn.Module):
    """image [N, 3, H, W] in [0, 1] -> the scalar that dreaming increases."""

    def __init__(self, backbone: Backbone, terms: Sequence[LayerTerm] = (), class_index: int | None = None,
                 guide: torch.Tensor | None = None) -> None:
        super().__init__()
        if not terms and class_index is None:
            raise GenError("nothing to dream on: give layers or a class")
        backbone.check_layers(t.layer for t in terms)
        if class_index is not None:
            if not backbone.has_classifier:
                hint = (f" (torchvision's {PUBLIC_FILES[backbone.name]} has one: pass it as --weights)"
                        if backbone.name in PUBLIC_FILES else "")
                raise GenError(f"{backbone.name} with these weights has no classifier, so it cannot dream on a "
                               f"class{hint}")
            classes = backbone.num_classes
            if not 0 <= class_index < classes:
                raise GenError(f"class {class_index} is out of range: {backbone.name} has classes 0-{classes - 1}")
        shapes = dict(layer_table(backbone.name))
        for term in terms:
            if term.channels and max(term.channels) >= shapes[term.layer][0]:
                raise GenError(f"layer {term.layer} has channels 0-{shapes[term.layer][0] - 1}; "
                               f"{max(term.channels)} is out of range")
        self.backbone = backbone
        self.terms = list(terms)
        self.class_index = class_index
        self.layers = sorted({t.layer for t in self.terms} | ({"logits"} if class_index is not None else set()),
                             key=backbone.layer_names.index)
        self.guided = guide is not None
        if guide is not None:
            with torch.no_grad():
                feats = backbone(guide, self.layers)
            for i, term in enumerate(self.terms):
                self.register_buffer(f"guide{i}", self._select(feats[term.layer], term)[0].flatten(1))

    @staticmethod
    def _select(activation: torch.Tensor, term: LayerTerm) -> torch.Tensor:
        return activation[:, list(term.channels)] if term.channels else activation

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        feats = self.backbone(image, self.layers)
        total = image.new_zeros(())
        for i, term in enumerate(self.terms):
            a = self._select(feats[term.layer], term)
            if self.guided:
                total = total + term.weight * guide_match(a, getattr(self, f"guide{i}"))
            else:
                total = total + term.weight * a.square().mean()
        if self.class_index is not None:
            total = total + feats["logits"][:, self.class_index].mean()
        return total


def gradient_and_value(objective: nn.Module, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(d objective / d image, objective) with torch.func: the form the export traces (make_fx)."""
    return torch.func.grad_and_value(objective)(image)


def autograd_gradient_and_value(objective: nn.Module, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The same numbers by plain autograd, which keeps less alive: 361 instead of 562 MiB for a
    500x436 tile of EfficientNet-Lite0 up to block9. The eager engine uses this one."""
    x = image.detach().requires_grad_(True)
    value = objective(x)
    (grad,) = torch.autograd.grad(value, x)
    return grad, value.detach()


def torch_gradient(objective: nn.Module, device: str | torch.device = "cpu") -> GradientFn:
    """Wrap an objective as the NumPy `gradient(image) -> (grad, objective)` the dreaming loop calls."""
    objective = objective.to(device).eval()

    def gradient(image: np.ndarray) -> tuple[np.ndarray, float]:
        x = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)).to(device)
        g, value = autograd_gradient_and_value(objective, x)
        return g.cpu().numpy(), float(value)

    return gradient


def image_tensor(rgb: np.ndarray) -> torch.Tensor:
    """uint8 [H, W, 3] -> float [1, 3, H, W] in [0, 1]."""
    return torch.from_numpy(rgb.transpose(2, 0, 1).astype(np.float32) / 255.0)[None]


def load_guide(path: str | Path, min_size: int) -> torch.Tensor:
    """A guide image as a tensor, shrunk to fit GUIDE_MAX_SIDE."""
    rgb = load_image(path, min_size=min_size)
    h, w = rgb.shape[:2]
    scale = min(1.0, GUIDE_MAX_SIDE / max(h, w))
    if scale < 1.0:
        from gen.runtime.images import resize

        rgb = resize(rgb, max(min_size, round(w * scale)), max(min_size, round(h * scale)))
    return image_tensor(rgb)


def build_objective(
    backbone: str | Backbone = "efficientnet_lite0",
    layers: str | Sequence[LayerTerm] | None = None,
    class_index: int | None = None,
    guide: str | Path | None = None,
    weights: str | Path | None = None,
) -> DreamObjective:
    """The library entry point: a ready objective from names, e.g. build_objective(layers="block6=1,block9=0.5").

    Without `layers` and `class_index`, the backbone's default layer is used.
    """
    net = build_backbone(backbone, weights) if isinstance(backbone, str) else backbone
    if isinstance(layers, str):
        layers = parse_layers(layers)
    if layers is None:
        layers = [] if class_index is not None else [LayerTerm(net.default_layer)]
    if guide is not None and not layers:
        raise GenError("a guide image needs layers whose features it matches")
    guide_tensor = load_guide(guide, net.min_size) if guide is not None else None
    return DreamObjective(net, layers, class_index, guide_tensor)


def torch_engine(
    backbone: str | Backbone = "efficientnet_lite0",
    layers: str | Sequence[LayerTerm] | None = None,
    class_index: int | None = None,
    guide: str | Path | None = None,
    weights: str | Path | None = None,
    device: str = "auto",
    threads: int = 0,
) -> DreamEngine:
    """The PyTorch engine for `gen.runtime.dream.run.dream_to_file`: an objective (see build_objective) on a
    device; `threads` > 0 sets torch's CPU threads (0 keeps torch's default, all cores)."""
    if threads:
        torch.set_num_threads(threads)
    objective = build_objective(backbone, layers, class_index, guide, weights)
    dev = resolve_device(device)
    what = ", ".join(map(str, objective.terms)) or f"class {class_index}"
    return DreamEngine(torch_gradient(objective, dev), objective.backbone.min_size,
                       f"{objective.backbone.name} ({what}{', guided' if guide else ''}) on {dev}")
