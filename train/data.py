"""Training data for StyleGAN: a folder of images -> an endless, reproducible stream of batches.

Reproducibility is the point of most of this file. The order of samples is a pure function of
(seed, rank, world_size, position), so a resumed run replays a straight run bit for bit and each
torchrun rank reads its own shard; the DataLoader gets its own torch.Generator so loading data never
moves torch's global RNG, which the training step owns.
"""

from __future__ import annotations

import os
import signal
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from gen.runtime.errors import GenError, GenWarning
from gen.runtime.images import STILL_SUFFIXES, WHITE, load_image, parse_color, resize_center_crop

SAMPLE_DATA = Path(__file__).parent / "sample_data"  # the built-in 253 emoji, shipped with the package


def find_images(root: str | Path) -> list[Path]:
    """Every image under `root` (recursive, symlinked folders followed), sorted by relative path.

    Hidden files and folders are left out: '._x.png' (macOS metadata) and '.ipynb_checkpoints/' copies
    are not training images.
    """
    root = Path(root).expanduser()
    if not root.exists():
        raise GenError(f"data folder '{root}' does not exist")
    if not root.is_dir():
        raise GenError(f"'{root}' is a file; give a folder of images ({', '.join(STILL_SUFFIXES)})")
    found, seen = [], set()
    for folder, subfolders, names in os.walk(root, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen:  # a symlink loop, or the same folder linked twice
            subfolders[:] = []
            continue
        seen.add(real)
        subfolders[:] = [d for d in subfolders if not d.startswith(".")]
        found += [Path(folder, n) for n in names if n.lower().endswith(STILL_SUFFIXES) and not n.startswith(".")]
    if not found:
        raise GenError(f"no images ({', '.join(STILL_SUFFIXES)}) found in '{root}' or its subfolders")
    # Sort by relative parts, not by the walk's order, which depends on the file system.
    return sorted(found, key=lambda p: p.relative_to(root).parts)


class ImageFolder(torch.utils.data.Dataset):
    """Images as float32 [3, R, R] in [-1, 1]; with `xflip` the second half is the mirrored first half."""

    def __init__(
        self,
        root: str | Path,
        resolution: int,
        background: tuple[int, int, int] | str = WHITE,
        xflip: bool = False,
        check: bool = True,
    ):
        if not isinstance(resolution, int) or resolution < 1:
            raise GenError(f"resolution must be a positive whole number of pixels, not {resolution!r}")
        self.root = Path(root)
        self.resolution = resolution
        self.background = parse_color(background) if isinstance(background, str) else tuple(background)
        if len(self.background) != 3 or not all(0 <= int(v) <= 255 for v in self.background):
            raise GenError(f"background must be an RGB triple of 0..255, not {background!r}")
        self.xflip = xflip
        self.files = find_images(self.root)
        self.skipped: list[Path] = []
        if check:
            self._check()
        self._warned: set[Path] = set()  # files that broke after the check; per process, so per worker

    def _check(self) -> None:
        """Decode every file once, now, so a bad file costs one warning here, not a crash mid-run."""

        def error(path: Path) -> str | None:
            try:
                load_image(path, self.background)
            except GenError as e:
                return str(e)
            except Exception as e:  # e.g. Pillow's DecompressionBombError: still just one bad file
                return f"'{path}' cannot be read ({type(e).__name__}: {e})"
            return None

        with ThreadPoolExecutor() as pool:  # Pillow decodes outside the GIL, so threads do help
            errors = list(pool.map(error, self.files))
        good = []
        for path, err in zip(self.files, errors, strict=True):
            if err is None:
                good.append(path)
            else:  # warned here, in file order, not from the threads
                self.skipped.append(path)
                warnings.warn(f"skipping {err}", GenWarning, stacklevel=3)
        if not good:
            raise GenError(f"none of the {len(self.files)} image files in '{self.root}' can be read")
        self.files = good

    def __len__(self) -> int:
        return len(self.files) * (2 if self.xflip else 1)

    def __getitem__(self, index: int) -> Tensor:
        n = len(self.files)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} images")
        flip, i = divmod(index, n)
        # A file that breaks mid-run (network drive, concurrent edit) must not kill a long run: use the
        # next readable one; this stays deterministic for a given state of the folder.
        for k in range(n):
            path = self.files[(i + k) % n]
            try:
                with warnings.catch_warnings():  # mode conversions were reported by the check
                    warnings.simplefilter("ignore", GenWarning)
                    rgb = load_image(path, self.background)
                break
            except Exception as e:
                if path not in self._warned:
                    self._warned.add(path)
                    warnings.warn(f"'{path}' can no longer be read ({e}); using a neighbouring image",
                                  GenWarning, stacklevel=2)
        else:
            raise GenError(f"none of the {n} images in '{self.root}' can be read any more")
        if rgb.shape[:2] != (self.resolution, self.resolution):
            rgb = resize_center_crop(rgb, self.resolution)
        if flip:
            rgb = rgb[:, ::-1]
        x = torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1)))
        return x.float().div_(127.5).sub_(1.0)


class InfiniteSampler(torch.utils.data.Sampler[int]):
    """Endless indices: epoch e is a fixed permutation of range(size) drawn from (seed, e).

    The epochs are laid end to end as one global stream; rank r yields its items r, r + W, r + 2W, ...
    So the ranks never overlap, together they read the global stream in order, and `start` (the items
    this rank already consumed) resumes exactly. Nothing here touches a global RNG.
    """

    def __init__(self, size: int, seed: int = 0, rank: int = 0, world_size: int = 1, start: int = 0):
        if size < 1:
            raise GenError("the data set is empty")
        if world_size < 1 or not 0 <= rank < world_size:
            raise GenError(f"rank {rank} is not in a world of {world_size} processes")
        if not 0 <= seed < 2**32:
            raise GenError(f"seed must be in 0..2**32-1, not {seed}")
        if start < 0:
            raise GenError(f"start must be >= 0, not {start}")
        self.size, self.seed, self.rank, self.world_size, self.start = size, seed, rank, world_size, start

    def permutation(self, epoch: int) -> np.ndarray:
        # RandomState's stream is frozen across NumPy versions (Generator's is not), and seeding with
        # the pair, not seed + epoch, keeps (seed=1, epoch=0) apart from (seed=0, epoch=1).
        return np.random.RandomState([self.seed, epoch]).permutation(self.size)

    def __iter__(self) -> Iterator[int]:
        position, epoch, perm = self.start, -1, None
        while True:
            e, offset = divmod(position * self.world_size + self.rank, self.size)
            if e != epoch:
                epoch, perm = e, self.permutation(e)
            yield int(perm[offset])
            position += 1


def _leave_stopping_to_the_main_process(worker_id: int) -> None:
    """DataLoader workers ignore SIGINT and SIGTERM. Ctrl-C, `kill -TERM -- -PGID`, `timeout` and systemd's stop
    reach every process of the group or unit; a worker that died of them would make PyTorch abort the main
    process mid-step ("DataLoader worker is killed by signal") before it could save. The main process decides
    (trainer.StopFlag) and shuts its workers down as it exits; if it dies, they notice and exit too."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def close_loader(batches: Iterator[Tensor] | None) -> None:
    """End make_loader's worker processes now. They ignore SIGTERM, so multiprocessing's terminate() at exit
    would not end them and its join would wait forever; PyTorch's own shutdown (tell, then join) runs when the
    iterator is collected, which a traceback holding it puts off until exit. A no-op without workers."""
    shutdown = getattr(batches, "_shutdown_workers", None)  # (what the iterator's __del__ calls; idempotent)
    if shutdown is not None:
        shutdown()


def make_loader(
    dataset: torch.utils.data.Dataset,
    batch_per_rank: int,
    seed: int = 0,
    rank: int = 0,
    world_size: int = 1,
    start: int = 0,
    workers: int = 2,
    pin_memory: bool = False,
) -> Iterator[Tensor]:
    """Endless batches [B, 3, R, R] for this rank, starting after `start` items it already consumed.

    To resume after `step` batches, pass start = step * batch_per_rank with the same seed, world size
    and batch size; the batches then continue exactly where the straight run would be.
    """
    if batch_per_rank < 1:
        raise GenError(f"batch size per process must be >= 1, not {batch_per_rank}")
    sampler = InfiniteSampler(len(dataset), seed, rank, world_size, start)
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_per_rank,
        sampler=sampler,
        drop_last=True,
        num_workers=workers,
        pin_memory=pin_memory,
        persistent_workers=workers > 0,
        worker_init_fn=_leave_stopping_to_the_main_process,
        # Without its own generator the loader draws its worker base seed from torch's global RNG,
        # which would make the training step's noise depend on how the data was loaded.
        generator=torch.Generator().manual_seed(seed),
    )
    return iter(loader)
