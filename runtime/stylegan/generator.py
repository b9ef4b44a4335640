"""StyleGAN from a bundle, without torch: seeds (and a class) -> z -> w -> truncated styles -> pictures (through
StyleGAN3's camera)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from gen.runtime.bundle import STYLEGAN3, Bundle, BundleError
from gen.runtime.engines import check_finite, open_runner
from gen.runtime.errors import GenError
from gen.runtime.images import nchw_to_images
from gen.runtime.latents import check_noise_mode, class_vector, seed_noise, seeds_to_z


class BundleGenerator:
    """The mapping and synthesis graphs of a stylegan bundle, with truncation done here in NumPy."""

    def __init__(self, bundle: Bundle, engine: str = "auto") -> None:
        if bundle.manifest.kind != "stylegan":
            raise BundleError(f"'{bundle.path}' is a {bundle.manifest.kind} bundle; this needs a stylegan bundle")
        self.bundle, self.meta = bundle, bundle.manifest.stylegan
        self.mapping = open_runner(bundle, "mapping", engine)
        try:
            self.synthesis = open_runner(bundle, "synthesis", engine)
        except BaseException:
            self.mapping.close()
            raise
        self.w_avg = np.asarray(self.meta.w_avg, dtype=np.float32)
        self.value_range = bundle.manifest.preprocessing.value_range  # of img: [-1, 1] for our exports
        shapes = {t.name: t.shape for t in bundle.manifest.graphs["synthesis"].inputs}
        self.noise_shapes = [tuple(shapes[name][1:]) for name in self.meta.noise_inputs]

    @property
    def alias_free(self) -> bool:  # StyleGAN3: a camera, no noise
        return self.meta.alias_free

    @property
    def engine(self) -> str:
        return self.synthesis.name

    def psi(self, psi: float | None) -> float:
        """The truncation psi to use: the one asked for, else the bundle's default."""
        return self.meta.default_psi if psi is None else psi

    def close(self) -> None:
        self.mapping.close()
        self.synthesis.close()

    def __enter__(self) -> BundleGenerator:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def styles(self, z: np.ndarray, psi: float = 1.0, cutoff: int | None = None, class_idx: int | None = None
               ) -> np.ndarray:
        """z [N, z_dim] -> ws [N, num_ws, w_dim], truncated towards w_avg for the first `cutoff` styles; a
        class-conditional bundle draws them of class `class_idx` (missing, out of range or unexpected: one line)."""
        feeds = {"z": z}
        if (c := class_vector(class_idx, self.meta.c_dim, len(z))) is not None:
            feeds["c"] = c
        w = self.mapping.run(feeds)["w"]
        if w.shape != (len(z), self.meta.w_dim):  # the graph itself, whatever its manifest says
            raise BundleError(f"'{self.bundle.path}': the mapping gave w of shape {list(w.shape)} for "
                              f"{len(z)} latents, not [{len(z)}, {self.meta.w_dim}]; re-export the bundle")
        check_finite(self.mapping.spec, "w", w)
        ws = np.repeat(w[:, None, :], self.meta.num_ws, axis=1)
        return truncate(ws, self.w_avg, psi, cutoff)

    def synthesize(self, ws: np.ndarray, noise_mode: str = "const", rng: np.random.RandomState | None = None,
                   noises: Sequence[np.ndarray] | None = None, camera: np.ndarray | None = None) -> np.ndarray:
        """ws -> images [N, 3, R, R] in about [-1, 1]. `noises` (explicit per-layer noise) wins over the mode.
        StyleGAN3 draws through `camera` (camera_transform [3, 3], or [N, 3, 3] one a picture; None: the identity)
        and has no noise."""
        n, explicit = ws.shape[0], noises is not None
        if self.alias_free:
            check_noise_mode(noise_mode)
            cam = np.eye(3, dtype=np.float32) if camera is None else np.asarray(camera, np.float32)
            cams = np.repeat(cam[None], n, axis=0) if cam.ndim == 2 else cam  # one for all, or one a picture
            return self._run(ws, {"ws": ws, "transform": np.ascontiguousarray(cams)})
        check_camera(camera is not None, self.meta.variant)
        if not explicit:
            check_noise_mode(noise_mode)
            if noise_mode == "random":
                rng = rng or np.random.RandomState()
                noises = [rng.randn(n, *s).astype(np.float32) for s in self.noise_shapes]
            else:
                noises = [np.zeros((n, *s), np.float32) for s in self.noise_shapes]
        const = np.array([1.0 if noise_mode == "const" and not explicit else 0.0], np.float32)
        return self._run(ws, {"ws": ws, "const_noise": const, **dict(zip(self.meta.noise_inputs, noises))})

    def _run(self, ws: np.ndarray, feeds: dict[str, np.ndarray]) -> np.ndarray:
        n = ws.shape[0]
        img = self.synthesis.run(feeds)["img"]
        r = self.meta.resolution
        if img.shape != (n, 3, r, r):
            raise BundleError(f"'{self.bundle.path}': the synthesis gave img of shape {list(img.shape)}, not "
                              f"[{n}, 3, {r}, {r}]; re-export the bundle")
        return check_finite(self.synthesis.spec, "img", img)

    def pictures(self, ws: np.ndarray, noise_mode: str = "const", noises: Sequence[np.ndarray] | None = None,
                 camera: np.ndarray | None = None) -> np.ndarray:
        """ws -> uint8 pictures [N, R, R, 3], the synthesis's value range mapped to 0..255."""
        return nchw_to_images(self.synthesize(ws, noise_mode, noises=noises, camera=camera), *self.value_range)

    def draw(self, seeds: Sequence[int], psi: float = 1.0, cutoff: int | None = None, noise_mode: str = "const",
             class_idx: int | None = None, camera: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """One batch of seeds -> (their styles, uint8 pictures [N, R, R, 3]): `gen sample`'s path, which `gen verify`
        holds to PyTorch's. Random noise is each seed's own (latents.seed_noise), fed in the order of noise_inputs."""
        ws = self.styles(seeds_to_z(seeds, self.meta.z_dim), psi, cutoff, class_idx)
        noises = seed_noise(seeds, self.meta.z_dim, self.noise_shapes) if noise_mode == "random" else None
        return ws, self.pictures(ws, noise_mode, noises, camera)

    def images(self, seeds: Sequence[int], psi: float = 1.0, cutoff: int | None = None, noise_mode: str = "const",
               batch: int = 8, class_idx: int | None = None, camera: np.ndarray | None = None) -> np.ndarray:
        """Seeds -> uint8 pictures [N, R, R, 3]; the same seed (and class, and camera) gives the PyTorch sampler's
        picture."""
        return np.concatenate([self.draw(list(seeds[i : i + batch]), psi, cutoff, noise_mode, class_idx, camera)[1]
                               for i in range(0, len(seeds), batch)])


def check_camera(moves: bool, variant: str) -> None:
    """--pan and --rotate (a camera that moves) are for StyleGAN3; one line for any other model."""
    if moves and variant not in STYLEGAN3:
        raise GenError(f"--pan and --rotate move StyleGAN3's camera; this is a {variant} model")


def truncate(ws: np.ndarray, w_avg: np.ndarray, psi: float, cutoff: int | None = None) -> np.ndarray:
    """The same arithmetic as the PyTorch reference's `truncate` (lerp from w_avg by psi)."""
    if psi == 1.0:
        return ws
    out = ws.copy()
    layers = slice(None) if cutoff is None else slice(0, cutoff)
    out[:, layers] = w_avg + np.float32(psi) * (ws[:, layers] - w_avg)
    return out
