"""The StyleGAN training loop: one process or several under torchrun, resumable exactly.

Each step runs the four phases of the paper's lazy-regularised schedule: D main, D R1 (every
`r1_interval` steps), G main, G path length (every `pl_interval` steps), then the EMA and ADA
updates. Every step reseeds torch's RNG from (seed, rank, step) and the data order is a pure
function of (seed, rank, position), so a resumed run repeats a straight run.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import time
import warnings
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from gen.runtime.errors import GenError, GenWarning, OutputError
from gen.runtime.files import NO_ROOM_CODES, append_text, atomic_path
from gen.runtime.images import WHITE, make_grid, nchw_to_images, save_image
from gen.runtime.progress import progress_bar

from . import checkpoint as ckpt
from .augment import AdaptiveAugment
from .config import (
    VARIANTS3,
    ModelConfig,
    Stylegan3Config,
    TrainConfig,
    check_variant,
    discriminator_config,
    get_preset,
    model_from_json,
    model_with,
    stylegan3_train,
    to_json,
    train_from_json,
)
from .data import SAMPLE_DATA, ImageFolder, close_loader, make_loader
from .devices import resolve_device
from .discriminator import Discriminator
from .losses import blur_images, blur_sigma_at, d_logistic_loss, d_r1_penalty, g_nonsaturating_loss, g_path_lengths
from .stylegan import Generator
from .stylegan3 import Generator3

GRID_SEEDS = 32
LOG_EVERY = 10  # steps per line of log.jsonl
MAIN_WAIT = timedelta(days=1)  # how long the other ranks wait for rank 0's metrics (a large --metrics-num, CPU)


# ---------------------------------------------------------------------------------------------
# Processes and devices


class Dist:
    """Rank, world size and device of this process; collectives are no-ops for one process."""

    def __init__(self, device_arg: str) -> None:
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.device = resolve_device(device_arg, local_rank)
        if self.world > 1 and not dist.is_initialized():
            if self.device.type == "cuda":
                torch.cuda.set_device(self.device)
            dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo")
        # A group of its own for waiting on rank 0, so that the training collectives keep their usual timeout.
        self.wait_group = dist.new_group(backend="gloo", timeout=MAIN_WAIT) if self.world > 1 else None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def wait_for_main(self) -> None:
        """Every rank waits here until rank 0 arrives, however long its work alone (the metrics) took."""
        if self.wait_group is not None:
            dist.barrier(group=self.wait_group)

    def sum_(self, t: torch.Tensor) -> torch.Tensor:
        if self.world > 1:
            dist.all_reduce(t)
        return t

    def mean(self, t: torch.Tensor) -> torch.Tensor:
        return self.sum_(t.clone()) / self.world

    def average_grads(self, module: torch.nn.Module) -> None:
        """Average gradients over processes (one flat all-reduce), and clear NaN/inf as NVlabs does."""
        params = [p for p in module.parameters() if p.grad is not None]
        if not params:
            return
        if self.world > 1:
            flat = torch.cat([p.grad.flatten() for p in params])
            self.sum_(flat)
            flat /= self.world
            torch.nan_to_num(flat, nan=0, posinf=1e5, neginf=-1e5, out=flat)
            offset = 0
            for p in params:
                p.grad.copy_(flat[offset : offset + p.numel()].view_as(p.grad))
                offset += p.numel()
        else:
            for p in params:
                torch.nan_to_num(p.grad, nan=0, posinf=1e5, neginf=-1e5, out=p.grad)

    def close(self) -> None:
        if self.world > 1 and dist.is_initialized():
            dist.destroy_process_group()


# ---------------------------------------------------------------------------------------------
# The training state


class StyleGANTraining:
    """G, D, G_ema, optimisers, augmentation and counters, with the step and (de)serialisation.

    StyleGAN3 (a Stylegan3Config) trains as NVlabs' does: its G against StyleGAN2's D (discriminator_config), the
    layers' input magnitudes tracked on the D step's generator pass with a half-life of 20 kimg; path length
    regularisation, style mixing and R's blur of D's inputs as the TrainConfig says (stylegan3_train)."""

    def __init__(self, model: ModelConfig | Stylegan3Config, train: TrainConfig, procs: Dist, seed: int = 0) -> None:
        self.model_cfg, self.cfg, self.procs, self.seed = model, train, procs, seed
        self.sg3 = isinstance(model, Stylegan3Config)
        dev = procs.device
        torch.manual_seed(seed)  # identical initial weights on every rank
        make_G = Generator3 if self.sg3 else Generator
        self.G = make_G(model).to(dev)
        self.D = Discriminator(discriminator_config(model)).to(dev)
        self.G_ema = make_G(model).to(dev).eval().requires_grad_(False)
        self.G_ema.load_state_dict(self.G.state_dict())
        if self.sg3:  # (an attribute, not state: it follows from the batch, which the checkpoint holds)
            for layer in self.G.synthesis.layers:
                layer.magnitude_ema_beta = 0.5 ** (train.batch / 20_000)
        self.augment = AdaptiveAugment(target=train.ada_target, speed_kimg=train.ada_kimg).to(dev)
        # NVlabs runs StyleGAN3's G without a lazy regulariser, so its Adam without the lazy correction
        g_lazy = train.pl_interval if train.pl_weight > 0 or not self.sg3 else None
        self.opt_G = lazy_adam(self.G, train.g_lr, train.betas, g_lazy)
        self.opt_D = lazy_adam(self.D, train.d_lr, train.betas, train.r1_interval)
        self.pl_mean = torch.zeros([], device=dev)
        self.step = 0
        self.nimg = 0
        self.batch_per_rank = train.batch // procs.world

    # -- one training step ------------------------------------------------------------------

    def autocast(self):
        if self.procs.device.type == "cuda" and self.cfg.mixed_precision:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def generate(self, n: int, update_emas: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Fake images with style mixing: after a random layer, styles come from a second z. StyleGAN3 draws
        without noise (it has none), and with `update_emas` moves its layers' input magnitude averages."""
        z = torch.randn(n, self.model_cfg.z_dim, device=self.procs.device)
        z2 = torch.randn(n, self.model_cfg.z_dim, device=self.procs.device)
        num_ws = self.G.num_ws
        cutoff = torch.randint(1, num_ws, ()) if num_ws > 1 else torch.tensor(num_ws)
        mix = torch.rand(()) < self.cfg.style_mixing
        cutoff = int(cutoff) if mix else num_ws
        with self.autocast():
            ws = self.G.mapping(z)
            if cutoff < num_ws:
                use_second = (torch.arange(num_ws, device=ws.device) >= cutoff)[None, :, None]
                ws = torch.where(use_second, self.G.mapping(z2), ws)
            if self.sg3:
                return self.G.synthesis(ws, update_emas=update_emas), ws
            return self.G.synthesis(ws, noise_mode="random"), ws

    def blur_sigma(self) -> float:
        """The sigma of the blur D's inputs get now (StyleGAN3-R: fading out early in training; else 0)."""
        return blur_sigma_at(self.nimg, self.cfg.blur_sigma, self.cfg.blur_kimg)

    def discriminate(self, img: torch.Tensor) -> torch.Tensor:
        with self.autocast():
            if (sigma := self.blur_sigma()) > 0:
                img = blur_images(img, sigma)
            return self.D(self.augment(img)).float()

    @torch.no_grad()
    def average_magnitudes(self) -> None:
        """One value of StyleGAN3's magnitude averages on every rank: each moved towards its own batch's
        magnitude, and the mean of those moves is the move towards the mean magnitude (one all-reduce)."""
        if self.procs.world > 1:
            emas = [layer.magnitude_ema for layer in self.G.synthesis.layers]
            flat = self.procs.mean(torch.stack(emas))
            for ema, value in zip(emas, flat):
                ema.copy_(value)

    def train_step(self, reals: torch.Tensor) -> dict[str, float]:
        cfg, n = self.cfg, self.batch_per_rank
        # Each step's random numbers are a pure function of (seed, rank, step): ranks draw different
        # latents, and a resumed run repeats a straight one without carrying RNG state per rank.
        torch.manual_seed(step_seed(self.seed, self.procs.rank, self.step))
        stats: dict[str, float] = {}
        # D main: reals up, fakes down.
        self.D.requires_grad_(True)
        with torch.no_grad():  # (NVlabs' StyleGAN3 tracks its input magnitudes on this pass)
            fakes, _ = self.generate(n, update_emas=self.sg3)
        if self.sg3:
            self.average_magnitudes()
        real_logits = self.discriminate(reals)
        fake_logits = self.discriminate(fakes)
        self.augment.record(real_logits)
        loss_D = d_logistic_loss(real_logits, fake_logits)
        self.optimise(self.opt_D, self.D, loss_D)
        stats.update(loss_D=loss_D.item(), real_score=real_logits.mean().item(),
                     fake_score=fake_logits.mean().item())
        # D R1: lazily, scaled by the interval.
        if self.step % cfg.r1_interval == 0 and cfg.r1_gamma > 0:
            reals_g = reals.detach().requires_grad_(True)
            r1 = d_r1_penalty(self.discriminate(reals_g), reals_g)
            self.optimise(self.opt_D, self.D, r1 * (cfg.r1_gamma / 2) * cfg.r1_interval)
            stats["r1"] = r1.item()
        # G main.
        self.D.requires_grad_(False)
        fakes, ws = self.generate(n)
        loss_G = g_nonsaturating_loss(self.discriminate(fakes))
        self.optimise(self.opt_G, self.G, loss_G)
        self.G.mapping.track_w_avg(self.procs.mean(ws[:, 0].detach().float().mean(0)))
        stats["loss_G"] = loss_G.item()
        # G path length: lazily, on a smaller batch.
        if self.step % cfg.pl_interval == 0 and cfg.pl_weight > 0:
            fakes, ws = self.generate(max(n // cfg.pl_batch_shrink, 1))
            lengths = g_path_lengths(fakes.float(), ws)
            self.pl_mean.lerp_(self.procs.mean(lengths.detach().mean()), cfg.pl_decay)
            penalty = (lengths - self.pl_mean).square().mean()
            self.optimise(self.opt_G, self.G, penalty * cfg.pl_weight * cfg.pl_interval)
            stats.update(pl=penalty.item(), pl_mean=self.pl_mean.item())
        self.nimg += cfg.batch
        self.step += 1
        self.update_ema()
        if cfg.augment and self.step % cfg.ada_interval == 0:
            stats["ada_rt"] = self.augment.adjust(cfg.batch * cfg.ada_interval, reduce=self.procs.sum_)
        stats["ada_p"] = float(self.augment.p)
        if self.cfg.blur_sigma > 0:
            stats["blur_sigma"] = self.blur_sigma()
        return stats

    def optimise(self, opt: torch.optim.Optimizer, net: torch.nn.Module, loss: torch.Tensor) -> None:
        opt.zero_grad(set_to_none=True)
        loss.backward()
        self.procs.average_grads(net)
        opt.step()

    @torch.no_grad()
    def update_ema(self) -> None:
        """G_ema follows G with a half-life of ema_kimg thousand images (shorter early in training)."""
        ema_nimg = self.cfg.ema_kimg * 1000
        if self.cfg.ema_rampup is not None:
            ema_nimg = min(ema_nimg, self.nimg * self.cfg.ema_rampup)
        beta = 0.5 ** (self.cfg.batch / max(ema_nimg, 1e-8))
        for p_ema, p in zip(self.G_ema.parameters(), self.G.parameters()):
            p_ema.copy_(p.detach().lerp(p_ema, beta))
        for b_ema, b in zip(self.G_ema.buffers(), self.G.buffers()):
            b_ema.copy_(b)

    # -- checkpoints ------------------------------------------------------------------------

    def state(self, extra: dict) -> tuple[dict[str, torch.Tensor], dict]:
        tensors = {}
        for name, module in (("G", self.G), ("D", self.D), ("G_ema", self.G_ema), ("augment", self.augment)):
            tensors.update(ckpt.prefixed(module.state_dict(), name))
        opt_g, meta_g = ckpt.optimizer_tensors(self.opt_G, "opt_G")
        opt_d, meta_d = ckpt.optimizer_tensors(self.opt_D, "opt_D")
        tensors.update(opt_g, **opt_d)
        tensors["pl_mean"] = self.pl_mean
        meta = {
            "model": to_json(self.model_cfg), "train": to_json(self.cfg), "seed": self.seed,
            "counters": {"step": self.step, "nimg": self.nimg, "world": self.procs.world},
            "opt_G": meta_g, "opt_D": meta_d, **extra,
        }
        return tensors, meta

    def load(self, tensors: dict[str, torch.Tensor], meta: dict) -> None:
        for name, module in (("G", self.G), ("D", self.D), ("G_ema", self.G_ema), ("augment", self.augment)):
            ckpt.load_module(module, ckpt.subdict(tensors, name), f"the checkpoint's {name}")
        ckpt.load_optimizer(self.opt_G, tensors, "opt_G", meta["opt_G"])
        ckpt.load_optimizer(self.opt_D, tensors, "opt_D", meta["opt_D"])
        pl_mean = tensors.get("pl_mean")
        if pl_mean is None or pl_mean.shape != self.pl_mean.shape:
            raise GenError("the checkpoint's pl_mean is missing or not one number; the checkpoint is damaged "
                           "(resume from an earlier copy, or train again)")
        self.pl_mean.copy_(pl_mean)
        self.step, self.nimg = meta["counters"]["step"], meta["counters"]["nimg"]
        if self.procs.rank != 0:  # the saved ADA statistics are all processes' sums, held by rank 0
            self.augment.sign_sum.zero_()
            self.augment.sign_count.zero_()
        saved_world = meta["counters"].get("world", 1)
        if saved_world != self.procs.world:
            warnings.warn(f"the run was saved with {saved_world} process(es) and resumes with {self.procs.world}: "
                          "data shards and random streams differ, so training continues but not bit for bit",
                          GenWarning, stacklevel=2)

    def load_weights(self, tensors: dict[str, torch.Tensor]) -> None:
        """Start from another model's weights (fine-tuning an import): G_ema, G (G_ema's when the file had no G)
        and D when given; optimisers, augmentation and counters start afresh."""
        g_ema = ckpt.subdict(tensors, "G_ema")
        ckpt.load_module(self.G, ckpt.subdict(tensors, "G") or g_ema, "the imported G")
        ckpt.load_module(self.G_ema, g_ema, "the imported G_ema")
        if d := ckpt.subdict(tensors, "D"):
            ckpt.load_module(self.D, d, "the imported D")

    def gather_ada_stats(self) -> None:
        """Sum the ADA statistics since the last adjustment onto rank 0, so a checkpoint holds all of them."""
        if self.procs.world > 1:
            for t in (self.augment.sign_sum, self.augment.sign_count):
                self.procs.sum_(t)
                if self.procs.rank != 0:
                    t.zero_()


def step_seed(seed: int, rank: int, step: int) -> int:
    return int(np.random.SeedSequence([seed, rank, step]).generate_state(1, np.uint64)[0] >> 1)


def lazy_adam(net: torch.nn.Module, lr: float, betas: tuple[float, float], reg_interval: int | None
              ) -> torch.optim.Adam:
    """Adam with the lazy-regularisation correction: the regulariser runs every `reg_interval` steps (None: no
    lazy regulariser, no correction)."""
    c = 1.0 if reg_interval is None else reg_interval / (reg_interval + 1)
    return torch.optim.Adam(net.parameters(), lr=lr * c, betas=(betas[0] ** c, betas[1] ** c), eps=1e-8)


# ---------------------------------------------------------------------------------------------
# Pictures and logs


def grid_seeds(resolution: int) -> list[int]:
    return list(range(GRID_SEEDS if resolution <= 128 else 16))


def render_grid(G: Generator | Generator3, seeds: list[int]) -> np.ndarray:
    """The snapshot grid: fixed seeds, no truncation, const noise."""
    from .sample import generate

    return make_grid(generate(G, seeds), cols=8 if len(seeds) >= 8 else None)


class RunFolder:
    """What a run writes: checkpoint, snapshot grids, a JSON-lines log. Only rank 0 writes."""

    PICTURES = ("reals.png", "metrics.png", "grid-*.png")
    IMPORTED_COPY = "imported.safetensors"  # the weights gen import wrote, kept when fine-tuning replaces them

    def __init__(self, path: Path, enabled: bool) -> None:
        self.path, self.enabled = Path(path), enabled

    @property
    def checkpoint(self) -> Path:
        return self.path / ckpt.CHECKPOINT_NAME

    def earlier_files(self) -> list[Path]:
        """What an earlier run left here (other files in the folder are not the run's, and are left alone)."""
        names = [self.checkpoint, self.path / "log.jsonl", self.path / self.IMPORTED_COPY]
        found = [p for p in names if p.exists()]
        return found + sorted(p for pattern in self.PICTURES for p in self.path.glob(pattern))

    def refuse_earlier(self) -> None:
        """A fresh run never mixes with an earlier one's log, grids or checkpoint (without --overwrite)."""
        if not (earlier := self.earlier_files()):
            return
        if self.checkpoint.exists():
            raise GenError(f"'{self.path}' already holds a training run; continue it with --resume {self.path}, "
                           "start afresh with --overwrite, or choose another --out")
        shown = ", ".join(p.name for p in earlier[:3]) + (", ..." if len(earlier) > 3 else "")
        raise GenError(f"'{self.path}' holds an earlier run that saved no checkpoint ({shown}); start afresh with "
                       "--overwrite (which deletes them) or choose another --out")

    def clear_earlier(self, keep: tuple[Path, ...] = ()) -> None:
        """--overwrite: the earlier run's files go (only those), so a stale grid or log line cannot pass for ours."""
        for p in self.earlier_files():
            if p not in keep:
                p.unlink(missing_ok=True)

    def keep_import(self) -> None:
        """Fine-tuning starts: keep the imported weights beside the checkpoint the first save replaces, and drop
        what a fine-tune stopped before its first save left (it would pass for this one's log and grids)."""
        copy = self.path / self.IMPORTED_COPY
        if self.enabled:
            with atomic_path(copy) as tmp:
                shutil.copyfile(self.checkpoint, tmp)
            self.clear_earlier(keep=(self.checkpoint, copy))

    def log(self, record: dict) -> None:
        if self.enabled:  # (a line whole or not at all: a full disk never leaves half a record)
            append_text(self.path / "log.jsonl", json.dumps(record) + "\n")

    def grid(self, name: str, grid: np.ndarray) -> None:
        if self.enabled:
            save_image(self.path / name, grid)


# ---------------------------------------------------------------------------------------------
# The run


class StopFlag:
    """SIGINT/SIGTERM ask for a clean stop: the current step ends, a checkpoint is written."""

    def __init__(self) -> None:
        self.requested = False
        self._old = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        self.requested = True
        # Data workers ignore these signals (data.py), but one the same signal reached before it could would
        # make PyTorch's SIGCHLD handler raise here mid-step; from now on the step in hand is finished and saved.
        sigchld = getattr(signal, "SIGCHLD", None)
        if sigchld is not None and sigchld not in self._old:
            self._old[sigchld] = signal.signal(sigchld, signal.SIG_DFL)

    def __exit__(self, *exc) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, handler)


def train(data: Path | None, out: Path, model: ModelConfig | Stylegan3Config, cfg: TrainConfig, *, device: str = "auto",
          workers: int = 2, seed: int = 0, background=WHITE, resume: bool = False, overwrite: bool = False,
          metrics_kimg: float | None = None, metrics_num: int = 1000,
          metrics: str | tuple[str, ...] | None = None, start_from: dict | None = None,
          imported: dict | None = None) -> StyleGANTraining:
    """Train until cfg.kimg thousand images were shown (or a stop signal); returns the final state.

    `start_from` (fine-tuning): the tensors of an imported model in `out` to start from, instead of random weights;
    `imported`: where they came from (gen import's record), kept in every checkpoint.

    A fresh run (not `resume`) into a folder an earlier run wrote to is refused, or with `overwrite` the
    earlier run's files are deleted first. With `metrics_kimg`, rank 0 measures `metrics` (default: fid, kid,
    fid_lite0, kid_lite0) of G_ema every that many kimg (see metrics.py).
    """
    if not (resume or overwrite or start_from):  # every rank, before any of them writes
        RunFolder(out, True).refuse_earlier()
    if metrics_kimg:  # every rank, before any work: a missing extra or a misspelt metric
        from .metrics import families_for, parse_metrics

        metrics = parse_metrics(metrics)
        families_for(metrics)
    procs, loader = Dist(device), None
    try:
        if cfg.batch % procs.world:
            raise GenError(f"batch {cfg.batch} does not split over {procs.world} processes")
        run = RunFolder(out, procs.is_main)
        data = Path(data) if data is not None else SAMPLE_DATA
        dataset = ImageFolder(data, model.resolution, background=background, xflip=cfg.xflip)
        state = StyleGANTraining(model, cfg, procs, seed)
        if resume:
            tensors, meta = ckpt.load_checkpoint(run.checkpoint, procs.device, training=True)
            state.load(tensors, meta)
        elif start_from is not None:
            state.load_weights(start_from)
            run.keep_import()
        elif procs.is_main:
            if overwrite:  # (only now: data or config that fails above deletes nothing)
                run.clear_earlier()
            out.mkdir(parents=True, exist_ok=True)
        loader = make_loader(dataset, state.batch_per_rank, seed=seed, rank=procs.rank, world_size=procs.world,
                             start=state.nimg // procs.world, workers=workers,
                             pin_memory=procs.device.type == "cuda")
        extra = {"data": str(data), "background": list(background), **({"imported": imported} if imported else {})}
        measure = None
        if metrics_kimg:
            if procs.is_main:
                from .metrics import TrainingMetrics

                measure = TrainingMetrics(data, model.resolution, background, metrics_num, procs.device, metrics)
            procs.wait_for_main()  # the reals' features
        try:
            _loop(state, loader, dataset, run, extra, measure, metrics_kimg)
        except OutputError as e:  # a full disk: say how to go on, which the same command again would not
            fix = "free some space" if e.errno in NO_ROOM_CODES else "fix that"
            if run.checkpoint.exists():  # (whole: written atomically)
                how = f"continue from the last checkpoint with --resume {out}"
            elif run.earlier_files():
                how = "start again with --overwrite (no checkpoint was saved to continue from)"
            else:
                how = "run again"
            raise GenError(f"{e.reason}; {fix}, then {how}") from None
        return state
    finally:
        close_loader(loader)
        procs.close()


def _loop(state: StyleGANTraining, loader, dataset, run: RunFolder, extra: dict, measure=None,
          metrics_kimg: float | None = None) -> None:
    cfg, procs = state.cfg, state.procs
    total, snap_every = round(cfg.kimg * 1000), max(round(cfg.snapshot_kimg * 1000), 1)
    measure_every = max(round((metrics_kimg or 0) * 1000), 1)
    seeds = grid_seeds(state.model_cfg.resolution)
    if state.nimg == 0:
        spread = np.linspace(0, len(dataset) - 1, min(len(seeds), len(dataset))).round().astype(int)
        reals = torch.stack([dataset[int(i)] for i in spread])  # across the set, not only its first files
        run.grid("reals.png", make_grid(nchw_to_images(reals.numpy()), cols=8))
    steps_here, acc = 0, {}
    t0 = time.perf_counter()
    with StopFlag() as stop, progress_bar(disable=not procs.is_main) as bar:
        task = bar.add_task("train", total=total, completed=min(state.nimg, total), rate="", info="")
        while state.nimg < total:
            try:
                reals = next(loader).to(procs.device, non_blocking=True)
            except RuntimeError:
                if not (stop.requested and procs.world == 1):
                    raise
                # A data worker died of the stop signal itself (see StopFlag): between steps the state is
                # whole, so it is saved as a stop after a step would be.
                _snapshot(state, run, seeds, extra)
                break
            before = state.nimg
            stats = state.train_step(reals)
            stopping = _agree(procs, stop.requested)
            steps_here += 1
            for k, v in stats.items():
                acc.setdefault(k, []).append(v)
            rate = steps_here * cfg.batch / (time.perf_counter() - t0)
            bar.update(task, completed=min(state.nimg, total), rate=f"{rate:.1f} img/s",
                       info=f"G {stats['loss_G']:.2f} D {stats['loss_D']:.2f} p {stats['ada_p']:.2f}")
            finished = state.nimg >= total
            if state.step % LOG_EVERY == 0 or finished or stopping:
                run.log({"step": state.step, "kimg": state.nimg / 1000, "img_per_s": round(rate, 2),
                         **{k: float(np.mean(v)) for k, v in acc.items()}})
                acc = {}
            crossed = state.nimg // snap_every != before // snap_every
            if crossed or stopping or finished:
                _snapshot(state, run, seeds, extra)
            if metrics_kimg and (state.nimg // measure_every != before // measure_every or finished):
                if measure is not None:
                    _measure(state, run, measure)
                procs.wait_for_main()  # not in the next step's collective, which would time out
            if stopping:
                break


def _agree(procs: Dist, flag: bool) -> bool:
    """Stop on every rank at the same step if any rank got a signal."""
    if procs.world == 1:
        return flag
    return bool(procs.sum_(torch.tensor([float(flag)], device=procs.device)).item() > 0)


def _snapshot(state: StyleGANTraining, run: RunFolder, seeds: list[int], extra: dict) -> None:
    state.gather_ada_stats()  # every rank: a collective
    if run.enabled:
        tensors, meta = state.state(extra)
        ckpt.save_checkpoint(run.checkpoint, tensors, meta)  # first: when the disk fills, it matters more
        run.grid(f"grid-{state.nimg / 1000:08.3f}kimg.png", render_grid(state.G_ema, seeds))


def _measure(state: StyleGANTraining, run: RunFolder, measure) -> None:
    """Log the metrics of G_ema into log.jsonl and redraw their curves so far as metrics.png, one chart per
    metric, stacked (a resumed run's earlier points too, also of metrics no longer measured)."""
    from .charts import draw_curve
    from .metrics import METRICS

    run.log({"step": state.step, "kimg": state.nimg / 1000, **measure(state.G_ema)})
    records = [json.loads(line) for line in (run.path / "log.jsonl").read_text(encoding="utf-8").splitlines()]
    charts = [draw_curve([(r["kimg"], r[name]) for r in records if name in r], f"{name} ({measure.num} images)")
              for name in METRICS if any(name in r for r in records)]
    run.grid("metrics.png", np.concatenate(charts))


# ---------------------------------------------------------------------------------------------
# A run from a preset, or resumed


def start_or_resume(data: Path | None, out: Path, *, preset: str | None = None, resume: Path | None = None,
                    model_overrides: dict | None = None, train_overrides: dict | None = None, background=WHITE,
                    device: str = "auto", workers: int = 2, seed: int = 0, metrics_kimg: float | None = None,
                    metrics_num: int = 1000, metrics: str | None = None, overwrite: bool = False,
                    fresh_d: bool = False) -> StyleGANTraining:
    """`gen train`: a new run from a preset (default: small) with some fields overridden, or the run in
    `resume` continued with its own config, data, seed and background (only train fields may change), or an
    imported model in `resume` fine-tuned on `data` (fine_tune)."""
    if resume is not None and overwrite:
        raise GenError("--overwrite starts a run afresh and --resume continues one; give only one of them")
    overrides_model = {k: v for k, v in (model_overrides or {}).items() if v is not None}
    overrides_train = {k: v for k, v in (train_overrides or {}).items() if v is not None}
    if resume is not None and ckpt.is_imported(ckpt.read_meta(resume)):
        return fine_tune(data, Path(resume), preset=preset, model_overrides=overrides_model,
                         train_overrides=overrides_train, fresh_d=fresh_d, background=background, device=device,
                         workers=workers, seed=seed, metrics_kimg=metrics_kimg, metrics_num=metrics_num,
                         metrics=metrics)
    if fresh_d:
        raise GenError("--fresh-d is for fine-tuning a model imported with gen import (gen train DATA --resume RUN)")
    if resume is not None:
        out = Path(resume)
        meta = ckpt.read_meta(out, training=True)
        model = model_from_json(meta["model"])
        if preset is not None or overrides_model:
            variant = overrides_model.get("variant", model.variant)
            check_variant(variant)
            if (variant in VARIANTS3) != isinstance(model, Stylegan3Config):
                raise other_config_error([f"variant: checkpoint {model.variant!r}, asked {variant!r}"])
            if preset is not None and isinstance(model, Stylegan3Config):  # the preset's StyleGAN3 of this variant
                overrides_model = {"variant": variant, **overrides_model}
            refuse_other_config(model, model_with(get_preset(preset).model if preset else model, overrides_model))
        cfg = replace(train_from_json(meta["train"]), **overrides_train)
        data = data or Path(meta["data"])
        seed = meta.get("seed", seed)
        background = tuple(meta.get("background", WHITE))
    else:
        p = get_preset(preset or "small")
        model = model_with(p.model, overrides_model)
        cfg = replace(p.train, **overrides_train)
        if isinstance(model, Stylegan3Config):  # NVlabs' settings for it, after --batch (R's blur fade follows it)
            cfg = stylegan3_train(cfg, model.variant)
    return train(data, Path(out), model, cfg, device=device, workers=workers, seed=seed, background=background,
                 resume=resume is not None, overwrite=overwrite, metrics_kimg=metrics_kimg, metrics_num=metrics_num,
                 metrics=metrics, imported=meta.get("imported") if resume is not None else None)


def fine_tune(data: Path | None, run: Path, *, preset: str | None, model_overrides: dict, train_overrides: dict,
              fresh_d: bool, **kwargs) -> StyleGANTraining:
    """Train an imported model further on `data` (transfer learning), in its own run folder: the preset's
    training settings (default: small), the import's architecture, fresh optimisers and counters. Its first
    checkpoint replaces the imported one, which is kept beside it (RunFolder.keep_import); from then on it is an
    ordinary run (--resume continues it)."""
    meta = ckpt.read_meta(run)
    model = model_from_json(meta["model"])
    if isinstance(model, Stylegan3Config):
        raise GenError(f"'{run}' holds an imported StyleGAN3 model, which gen does not fine-tune (its D was not "
                       "imported); gen trains StyleGAN3 from scratch with --variant stylegan3-t or stylegan3-r")
    if data is None:
        raise GenError(f"'{run}' holds an imported model; fine-tuning it needs a folder of images: gen train DATA "
                       f"--resume {run}")
    if model_overrides:
        raise GenError(f"'{run}' holds an imported model: its architecture is fixed; fine-tune it without "
                       "--resolution/--variant")
    if model.c_dim:
        raise GenError(f"'{run}' holds a class-conditional model ({model.c_dim} classes); gen trains unconditional "
                       "models, so it cannot be fine-tuned")
    tensors, _ = ckpt.load_checkpoint(run)
    if fresh_d:
        tensors = {k: v for k, v in tensors.items() if not k.startswith("D.")}
    elif not any(k.startswith("D.") for k in tensors):
        raise GenError(f"'{run}' has no discriminator (the imported file had none gen can use, as gen import said); "
                       "fine-tuning needs one: give --fresh-d to start it from random weights")
    cfg = replace(get_preset(preset or "small").train, **train_overrides)
    return train(data, run, model, cfg, start_from=tensors, imported=meta["imported"], **kwargs)


def run_summary(state: StyleGANTraining, run: Path) -> str:
    """One line on where a run stands: how far, its latest grid, its checkpoint and how to continue."""
    grids = sorted(Path(run).glob("grid-*.png"))
    return (f"{state.nimg / 1000:.3f} kimg in {state.step} steps; latest grid: {grids[-1] if grids else '-'}; "
            f"checkpoint: {Path(run) / ckpt.CHECKPOINT_NAME} (continue with --resume {run})")


def refuse_other_config(have: ModelConfig | Stylegan3Config, asked: ModelConfig | Stylegan3Config) -> None:
    if type(have) is not type(asked):
        raise other_config_error([f"variant: checkpoint {have.variant!r}, asked {asked.variant!r}"])
    diff = [f"{k}: checkpoint {getattr(have, k)!r}, asked {getattr(asked, k)!r}"
            for k in to_json(have) if getattr(have, k) != getattr(asked, k)]
    if diff:
        raise other_config_error(diff)


def other_config_error(diff: list[str]) -> GenError:
    return GenError("the checkpoint was trained with another model config (" + "; ".join(diff) +
                    "); resume without --preset/--resolution/--variant, or start a new --out")

