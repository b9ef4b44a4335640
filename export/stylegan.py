"""StyleGAN checkpoint -> bundle: mapping.onnx, synthesis.onnx and golden data from the PyTorch reference
(StyleGAN2 and 1 with their noise inputs; StyleGAN3 with its camera transform)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from gen.runtime.bundle import GoldenCase, GoldenSpec, PictureCase, Preprocessing, StyleGANMeta, Tolerance
from gen.runtime.images import nchw_to_images
from gen.runtime.latents import DEFAULT_PSI, class_vector, seeds_to_z
from gen.runtime.stylegan.camera import camera_transform
from gen.train.sample import load_generator, random_noise
from gen.train.stylegan import Generator, truncate
from gen.train.stylegan3 import Generator3

from .golden import save_golden
from .onnx_graph import export_graph, graph_spec
from .writer import write_bundle

# Measured on onnxruntime-cpu vs eager fp32: mapping ~1e-6 max abs; synthesis 1-2e-6 max abs for StyleGAN2,
# up to 2e-5 for an untrained StyleGAN1 whose outputs reach +-20 (relative L2 < 1e-6 in both). The
# max abs bound of 1e-4 is 1/80 of one 8-bit level on the [-1, 1] scale; a real error (a wrong op, the
# wrong noise) is off by 1e-2 or more.
TOLERANCES = {"mapping": Tolerance(max_abs=1e-5, rel_l2=1e-5), "synthesis": Tolerance(max_abs=1e-4, rel_l2=1e-5)}
GOLDEN_SEEDS = [0, 1, 2]  # each at batch 1
GOLDEN_BATCH_SEEDS = [10, 11, 12, 13]  # and together at batch 4
GOLDEN_BATCH8_SEEDS = list(range(20, 28))  # StyleGAN3: also at batch 8
LICENSE = "the licence of the training data and of this checkpoint's owner (set by whoever trains it)"
GOLDEN_CAMERA = dict(pan=(0.3, -0.2), rotate=25.0)  # StyleGAN3: a moved camera, so the transform input is checked


class MappingGraph(nn.Module):
    """z (and the one-hot class label c of a class-conditional model) -> w."""

    def __init__(self, G: Generator) -> None:
        super().__init__()
        self.mapping = G.mapping

    def forward(self, z: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        return self.mapping.w(z, c)


class SynthesisGraph(nn.Module):
    """Layer noise = noise_i + const_noise * (baked const noise): one graph serves all noise modes."""

    def __init__(self, G: Generator) -> None:
        super().__init__()
        self.synthesis = G.synthesis

    def forward(self, ws: torch.Tensor, const_noise: torch.Tensor, noises: tuple[torch.Tensor, ...]) -> torch.Tensor:
        layers = self.synthesis.layers
        mixed = [n + const_noise * layer.noise.noise_const for n, layer in zip(noises, layers)]
        return self.synthesis(ws, noises=mixed)


class CameraSynthesisGraph(nn.Module):
    """StyleGAN3: ws and the camera transform [batch, 3, 3] -> picture (no noise)."""

    def __init__(self, G: Generator3) -> None:
        super().__init__()
        self.synthesis = G.synthesis

    def forward(self, ws: torch.Tensor, transform: torch.Tensor) -> torch.Tensor:
        return self.synthesis(ws, transform)


def export_stylegan(checkpoint: str | Path, out: str | Path, simplify: bool = True, overwrite: bool = False,
                    psi: float = DEFAULT_PSI, license: str = LICENSE):
    """Write a stylegan bundle for a checkpoint's EMA generator; returns (bundle, per-graph reports)."""
    G = load_generator(checkpoint, "cpu")
    reports = {}

    def fill(folder: Path) -> dict:
        reports.update(export_graphs(G, folder, simplify))
        sg3 = isinstance(G, Generator3)
        cases, pictures = (golden_cases3 if sg3 else golden_cases)(G, folder, psi)
        cfg = G.cfg
        noise_inputs = [] if sg3 else [f"noise_{i}" for i in range(len(G.synthesis.layers))]
        return dict(
            license=license, kind="stylegan",
            graphs={name: graph_spec(folder / f"{name}.onnx") for name in ("mapping", "synthesis")},
            preprocessing=Preprocessing(value_range=(-1.0, 1.0)),
            stylegan=StyleGANMeta(variant=cfg.variant, resolution=cfg.resolution, z_dim=cfg.z_dim, w_dim=cfg.w_dim,
                                  num_ws=G.num_ws, w_avg=G.mapping.w_avg.tolist(), default_psi=psi,
                                  noise_inputs=noise_inputs, c_dim=cfg.c_dim),
            golden=GoldenSpec(cases=cases, pictures=pictures, tolerances=TOLERANCES),
        )

    return write_bundle(out, fill, overwrite=overwrite), reports


def export_graphs(G: Generator | Generator3, folder: Path, simplify: bool) -> dict:
    batch = torch.export.Dim("batch", min=1, max=1024)
    z = torch.randn(2, G.cfg.z_dim)
    c = torch.from_numpy(class_vector(0, G.cfg.c_dim, 2)) if G.cfg.c_dim else None
    inputs = (z,) if c is None else (z, c)  # an unconditional mapping takes z alone, as it always has
    mapping = export_graph(MappingGraph(G), inputs, folder / "mapping.onnx", ["z", "c"][: len(inputs)], ["w"],
                           dynamic_shapes=tuple({0: batch} for _ in inputs), simplify=simplify)
    ws = G.mapping(z, c=c)
    if isinstance(G, Generator3):
        transform = torch.from_numpy(np.stack([np.eye(3, dtype=np.float32), camera_transform(**GOLDEN_CAMERA)]))
        synthesis = export_graph(CameraSynthesisGraph(G), (ws, transform), folder / "synthesis.onnx",
                                 ["ws", "transform"], ["img"], dynamic_shapes=({0: batch}, {0: batch}),
                                 simplify=simplify)
        return {"mapping": mapping, "synthesis": synthesis}
    noises = tuple(torch.randn(2, *s[1:]) for s in G.synthesis.noise_shapes())
    names = ["ws", "const_noise"] + [f"noise_{i}" for i in range(len(noises))]
    synthesis = export_graph(SynthesisGraph(G), (ws, torch.ones(1), noises), folder / "synthesis.onnx", names,
                             ["img"], dynamic_shapes=({0: batch}, {0: torch.export.Dim.STATIC},
                                                     tuple({0: batch} for _ in noises)),
                             simplify=simplify)
    return {"mapping": mapping, "synthesis": synthesis}


def mapping_case(G: Generator | Generator3, gi: int, seeds: list[int], arrays: dict, cases: list[GoldenCase]
                 ) -> tuple[torch.Tensor, str, int | None]:
    """Group `gi`'s mapping case: its seeds' latents (in class gi modulo the classes, for a class-conditional model)
    and their w. Returns (w, the group's description, its class)."""
    c_dim = G.cfg.c_dim
    cls = gi % c_dim if c_dim else None
    about = f"seeds {seeds}" + ("" if cls is None else f", class {cls}")
    key = f"mapping/{gi}"
    feeds = {"z": seeds_to_z(seeds, G.cfg.z_dim)}
    if cls is not None:
        feeds["c"] = class_vector(cls, c_dim, len(seeds))
    w = G.mapping.w(*(torch.from_numpy(v) for v in feeds.values()))
    arrays |= {f"{key}/{k}": v for k, v in feeds.items()}
    arrays[f"{key}/w"] = w.numpy()
    cases.append(GoldenCase(graph="mapping", inputs={k: f"{key}/{k}" for k in feeds}, outputs={"w": f"{key}/w"},
                            note=about))
    return w, about, cls


@torch.no_grad()
def golden_cases(G: Generator, folder: Path, psi: float) -> tuple[list[GoldenCase], list[PictureCase]]:
    """Reference inputs/outputs: seeds at batch 1 and a batch of 4; psi 1 and `psi`; const and random noise; a
    class-conditional model draws each group of seeds in a class of its own (0, 1, 2, 3, modulo the classes).
    And the pictures of those seeds at `psi` (the bundle's default) with const noise, and of the batch with each
    seed's own random noise (as `gen sample --noise-mode random` draws it), for the runtime to redraw."""
    arrays: dict[str, np.ndarray] = {}
    cases: list[GoldenCase] = []
    pictures: list[PictureCase] = []
    shapes = G.synthesis.noise_shapes()
    rng = np.random.RandomState(1234)
    groups = [[s] for s in GOLDEN_SEEDS] + [GOLDEN_BATCH_SEEDS]
    for gi, seeds in enumerate(groups):
        w, about, cls = mapping_case(G, gi, seeds, arrays, cases)
        for mode in ("const", "random"):
            p = psi if mode == "const" else 1.0
            ws = truncate(w[:, None].repeat(1, G.num_ws, 1), G.mapping.w_avg, p)
            n = len(seeds)
            if mode == "const":
                noises = [torch.zeros(n, *s[1:]) for s in shapes]
                img = G.synthesis(ws, noise_mode="const")
            else:
                noises = [torch.from_numpy(rng.randn(n, *s[1:]).astype(np.float32)) for s in shapes]
                img = G.synthesis(ws, noises=noises)
            key = f"synthesis/{gi}/{mode}"
            feeds = {"ws": ws.numpy(), "const_noise": np.array([1.0 if mode == "const" else 0.0], np.float32)}
            feeds |= {f"noise_{i}": t.numpy() for i, t in enumerate(noises)}
            arrays |= {f"{key}/{k}": v for k, v in feeds.items()}
            arrays[f"{key}/img"] = img.numpy()
            cases.append(GoldenCase(graph="synthesis", inputs={k: f"{key}/{k}" for k in feeds},
                                    outputs={"img": f"{key}/img"}, note=f"{about}, psi {p}, noise {mode}"))
            if mode == "const":  # the reference's own [-1, 1] range, whatever the manifest says
                arrays[f"pictures/{gi}"] = nchw_to_images(img.numpy())
                pictures.append(PictureCase(seeds=seeds, ws=f"{key}/ws", image=f"pictures/{gi}", class_index=cls,
                                            note=f"{about}, psi {p}"))
    # Constant noise is the same in any order of the noise inputs; each seed's own random noise is not.
    seeds, last = groups[-1], pictures[-1]
    img = G.synthesis(torch.from_numpy(arrays[last.ws]), noises=random_noise(G, seeds))
    arrays["pictures/random"] = nchw_to_images(img.numpy())
    pictures.append(PictureCase(seeds=seeds, ws=last.ws, image="pictures/random", noise="random",
                                class_index=last.class_index, note=f"{about}, psi {psi}, random noise"))
    save_golden(folder, arrays)
    return cases, pictures


@torch.no_grad()
def golden_cases3(G: Generator3, folder: Path, psi: float) -> tuple[list[GoldenCase], list[PictureCase]]:
    """StyleGAN3's reference inputs/outputs: seeds at batch 1, 4 and 8, each through the identity camera at `psi`
    and a moved camera at psi 1 (camera_cases); and the batch of 4's pictures again through the moved camera, so
    that `gen verify` checks the runtime's transform input."""
    arrays: dict[str, np.ndarray] = {}
    cases: list[GoldenCase] = []
    pictures: list[PictureCase] = []
    groups = [[s] for s in GOLDEN_SEEDS] + [GOLDEN_BATCH8_SEEDS, GOLDEN_BATCH_SEEDS]
    for gi, seeds in enumerate(groups):
        w, about, cls = mapping_case(G, gi, seeds, arrays, cases)
        camera_cases(G, w, seeds, gi, about, psi, arrays, cases, pictures, cls)
    seeds, last = groups[-1], pictures[-1]
    camera = camera_transform(**GOLDEN_CAMERA)
    img = G.synthesis(torch.from_numpy(arrays[last.ws]), torch.from_numpy(camera))
    arrays["pictures/camera"] = nchw_to_images(img.numpy())
    pictures.append(PictureCase(seeds=seeds, ws=last.ws, image="pictures/camera", camera=camera.ravel().tolist(),
                                class_index=last.class_index, note=f"{about}, psi {psi}, camera moved"))
    save_golden(folder, arrays)
    return cases, pictures


def camera_cases(G: Generator3, w: torch.Tensor, seeds: list[int], gi: int, about: str, psi: float, arrays: dict,
                 cases: list[GoldenCase], pictures: list[PictureCase], cls: int | None) -> None:
    """StyleGAN3's synthesis cases for one group: at `psi` through the identity camera and at psi 1 through a
    moved one; the picture at `psi` (identity) for the runtime to redraw."""
    n = w.shape[0]
    for name, p, camera in (("identity", psi, np.eye(3, dtype=np.float32)),
                            ("camera", 1.0, camera_transform(**GOLDEN_CAMERA))):
        ws = truncate(w[:, None].repeat(1, G.num_ws, 1), G.mapping.w_avg, p)
        transform = np.repeat(camera[None], n, axis=0)
        img = G.synthesis(ws, torch.from_numpy(transform))
        key = f"synthesis/{gi}/{name}"
        arrays |= {f"{key}/ws": ws.numpy(), f"{key}/transform": transform, f"{key}/img": img.numpy()}
        cases.append(GoldenCase(graph="synthesis", inputs={"ws": f"{key}/ws", "transform": f"{key}/transform"},
                                outputs={"img": f"{key}/img"}, note=f"{about}, psi {p}, {name} camera"))
        if name == "identity":
            arrays[f"pictures/{gi}"] = nchw_to_images(img.numpy())
            pictures.append(PictureCase(seeds=seeds, ws=f"{key}/ws",
                                        image=f"pictures/{gi}", class_index=cls, note=f"{about}, psi {p}"))
