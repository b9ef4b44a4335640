"""The bundle engine of DeepDream: a dream bundle's gradient graph as the loop's `gradient(image)`.

Torch-free (NumPy and a runner). The loop works on [0, 1] RGB; the bundle's preprocessing says what
the graph's image tensor holds instead (a value range, then an optional per-channel mean/std), so
pixels are mapped on the way in and the gradient is scaled back by the chain rule on the way out.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gen.runtime.bundle import Bundle, BundleError, clip, load_bundle
from gen.runtime.engines import Runner, check_finite, open_runner
from gen.runtime.errors import GenError

from .loop import DreamEngine, GradientFn

GRAPH = "dream_grad"


def bundle_gradient(bundle: Bundle, engine: str = "auto", threads: int = 0) -> tuple[GradientFn, Runner]:
    """The gradient function of a dream bundle on an engine (with `threads` CPU threads; 0: all cores), and the
    runner it calls (close it when done)."""
    if bundle.manifest.kind != "dream":
        raise GenError(f"'{bundle.path}' is a {bundle.manifest.kind} bundle; dreaming needs one made by "
                       "`gen export-dream`")
    runner = open_runner(bundle, GRAPH, engine, threads)
    try:
        _check_signature(bundle, runner)
    except BaseException:
        runner.close()
        raise
    scale, offset = bundle.manifest.preprocessing.affine()

    def gradient(image: np.ndarray) -> tuple[np.ndarray, float]:
        x = np.asarray(image, np.float32)
        if x.ndim != 4 or x.shape[:2] != (1, 3):
            raise GenError(f"the dream gradient takes one RGB image [1, 3, H, W], got {list(x.shape)}")
        out = runner.run({"image": x * scale + offset})
        grad, objective = np.asarray(out["grad"]), np.asarray(out["objective"])
        if grad.shape != x.shape or objective.size != 1:  # the graph itself, whatever its manifest says
            raise BundleError(f"'{bundle.path}': {GRAPH} gave a gradient of shape {list(grad.shape)} for an image "
                              f"of shape {list(x.shape)} and an objective of shape {list(objective.shape)}, not a "
                              "scalar; re-export the bundle")
        check_finite(runner.spec, "grad", grad)
        check_finite(runner.spec, "objective", objective)
        return grad * scale, float(objective.reshape(()))  # d/dx = d/d(graph value) * scale

    return gradient, runner


def _check_signature(bundle: Bundle, runner: Runner) -> None:
    """image [1, 3, h, w] -> grad of the image's shape and a scalar objective, as the manifest states it."""
    ins, outs = {t.name: t.shape for t in runner.spec.inputs}, {t.name: t.shape for t in runner.spec.outputs}
    if not {"grad", "objective"} <= set(outs) or list(ins) != ["image"]:
        raise BundleError(f"'{bundle.path}': {GRAPH} must map 'image' to 'grad' and 'objective' "
                          f"(it has {clip(sorted(outs))}); re-export the bundle")
    image = ins["image"]
    if len(image) != 4 or image[:2] != [1, 3] or outs["grad"] != image or outs["objective"] not in ([], [1]):
        raise BundleError(f"'{bundle.path}': {GRAPH} must map image [1, 3, height, width] to grad of the same shape "
                          f"and a scalar objective, not {image} to {outs['grad']} and {outs['objective']}; "
                          "re-export the bundle")


def describe(bundle: Bundle) -> str:
    d = bundle.manifest.dream
    o = d.objective
    what = ", ".join(str(t) for t in o.get("terms", [])) or f"class {o.get('class')}"
    return f"{d.backbone} ({what}{', guided' if o.get('guide') else ''})"


def bundle_engine(bundle: Bundle | str | Path, engine: str = "auto", threads: int = 0) -> DreamEngine:
    """A dream bundle (loaded, or its folder) on `engine`, ready for the loop; close it when done."""
    bundle = bundle if isinstance(bundle, Bundle) else load_bundle(bundle)
    gradient, runner = bundle_gradient(bundle, engine, threads)
    return DreamEngine(gradient, bundle.manifest.dream.min_size, f"{describe(bundle)} from {bundle.path} on "
                       f"{runner.name}", runner.close)
