"""Training speed per preset, in images per second, on the machine it runs on.

    python benchmarks/train_speed.py                     # tiny and small on the CPU
    python benchmarks/train_speed.py --device cuda --presets tiny,small,paper256
    python benchmarks/train_speed.py --presets small --nvlabs /tmp/nv --data ../shared/data/emoji-google-64

Runs whole training steps (D main, G main, and R1 / path length at their lazy intervals) on a fixed batch of
real images (from the built-in sample, or --data), with ADA at p = 0.2. Each window is one whole regulariser
cycle (lcm of the R1 and path length intervals: 16 steps by default), so a window's rate is the long-run
average; the rate reported is the median over --windows windows, after --warmup steps not timed.

--nvlabs PATH (side by side): also runs NVlabs' stylegan2-ada-pytorch from a checkout at PATH (their networks,
StyleGAN2Loss and AugmentPipe 'bgc', imported from there; nothing of theirs is in this repository) at the same
architecture (the preset's resolution, z/w dims, mapping layers, channel base/max, no fp16 layers, no clamp),
batch, lazy intervals (their Gmain/Greg/Dmain/Dreg phases, G_reg every pl_interval, D_reg every r1_interval, with
their lazy Adam correction), ADA p = 0.2 adjusted every ada_interval, G_ema, the same reals and the same torch
thread count, in this process; the two alternate window by window so a slower spell of the machine hits both.
Their custom CUDA ops fall back to their reference PyTorch code on a CPU. Data loading is not timed in either.

Appends one JSON line per preset (and per side) to benchmarks/results/train_speed.jsonl with the machine's
description, the load average and --label. Not a test: timings belong here, not in the suite.
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import statistics
import sys
import time
from pathlib import Path

import torch
from machine import describe, record

from gen.train.config import get_preset
from gen.train.data import SAMPLE_DATA, ImageFolder
from gen.train.trainer import Dist, StyleGANTraining

ADA_P = 0.2


class GenRun:
    """gen's own training step (StyleGANTraining.train_step)."""

    name = "gen"

    def __init__(self, preset: str, device: str) -> None:
        p = get_preset(preset)
        self.procs = Dist(device)
        self.state = StyleGANTraining(p.model, p.train, self.procs)
        with torch.no_grad():
            self.state.augment.p.fill_(ADA_P)

    def params(self) -> tuple[int, int]:
        return (sum(x.numel() for x in self.state.G.parameters()), sum(x.numel() for x in self.state.D.parameters()))

    def step(self, reals: torch.Tensor) -> None:
        self.state.train_step(reals)


class NVlabsRun:
    """NVlabs' stylegan2-ada-pytorch training phases, imported from their checkout at `path`, driven as their
    training_loop drives them (one round per phase, batch_gpu = batch)."""

    name = "nvlabs"

    def __init__(self, path: str, preset: str, device: str, seed: int = 0) -> None:
        root = Path(path).resolve()
        if not (root / "training" / "networks.py").is_file():
            sys.exit(f"error: {path} is not a stylegan2-ada-pytorch checkout (no training/networks.py)")
        sys.path.insert(0, str(root))
        from torch_utils import misc, training_stats  # noqa: PLC0415 (theirs, from PATH)
        from training.augment import AugmentPipe  # noqa: PLC0415
        from training.loss import StyleGAN2Loss  # noqa: PLC0415
        from training.networks import Discriminator, Generator  # noqa: PLC0415

        p = get_preset(preset)
        m, t = p.model, p.train
        if m.variant != "stylegan2" or m.c_dim:
            sys.exit("error: --nvlabs compares unconditional StyleGAN2 presets only")
        self.misc, self.stats = misc, training_stats
        self.cfg, self.device = t, torch.device(device)
        torch.manual_seed(seed)
        arch = dict(channel_base=m.channel_base, channel_max=m.channel_max, num_fp16_res=0, conv_clamp=m.conv_clamp)
        self.G = Generator(z_dim=m.z_dim, c_dim=0, w_dim=m.w_dim, img_resolution=m.resolution, img_channels=3,
                           mapping_kwargs=dict(num_layers=m.mapping_layers, lr_multiplier=m.mapping_lr_mul),
                           synthesis_kwargs=arch).train().requires_grad_(False).to(self.device)
        self.D = Discriminator(c_dim=0, img_resolution=m.resolution, img_channels=3, **arch,
                               epilogue_kwargs=dict(mbstd_group_size=m.mbstd_group)
                               ).train().requires_grad_(False).to(self.device)
        self.G_ema = copy.deepcopy(self.G).eval()
        self.augment = AugmentPipe(xflip=1, rotate90=1, xint=1, scale=1, rotate=1, aniso=1, xfrac=1, brightness=1,
                                   contrast=1, lumaflip=1, hue=1, saturation=1).train().requires_grad_(False)
        self.augment.to(self.device).p.fill_(ADA_P)
        self.loss = StyleGAN2Loss(self.device, G_mapping=self.G.mapping, G_synthesis=self.G.synthesis, D=self.D,
                                  augment_pipe=self.augment, style_mixing_prob=t.style_mixing, r1_gamma=t.r1_gamma,
                                  pl_batch_shrink=t.pl_batch_shrink, pl_decay=t.pl_decay, pl_weight=t.pl_weight)
        self.phases = []  # (name, module, optimiser, interval), their order: G then D
        for name, module, lr, interval in (("G", self.G, t.g_lr, t.pl_interval), ("D", self.D, t.d_lr, t.r1_interval)):
            ratio = interval / (interval + 1)
            opt = torch.optim.Adam(module.parameters(), lr=lr * ratio, betas=tuple(b**ratio for b in t.betas), eps=1e-8)
            self.phases += [(name + "main", module, opt, 1), (name + "reg", module, opt, interval)]
        self.ada_stats = training_stats.Collector(regex="Loss/signs/real")
        self.batch_idx, self.nimg = 0, 0

    def params(self) -> tuple[int, int]:
        return (sum(x.numel() for x in self.G.parameters()), sum(x.numel() for x in self.D.parameters()))

    def step(self, reals: torch.Tensor) -> None:
        t, n = self.cfg, reals.shape[0]
        c = torch.zeros([n, 0], device=self.device)
        all_z = torch.randn([len(self.phases), n, self.G.z_dim], device=self.device)
        for (name, module, opt, interval), z in zip(self.phases, all_z):
            if self.batch_idx % interval:
                continue
            opt.zero_grad(set_to_none=True)
            module.requires_grad_(True)
            self.loss.accumulate_gradients(phase=name, real_img=reals, real_c=c, gen_z=z, gen_c=c, sync=True,
                                           gain=interval)
            module.requires_grad_(False)
            for param in module.parameters():
                if param.grad is not None:
                    self.misc.nan_to_num(param.grad, nan=0, posinf=1e5, neginf=-1e5, out=param.grad)
            opt.step()
        with torch.no_grad():  # G_ema, as their loop: half-life ema_kimg, ramped up
            ema_nimg = t.ema_kimg * 1000
            if t.ema_rampup is not None:
                ema_nimg = min(ema_nimg, self.nimg * t.ema_rampup)
            beta = 0.5 ** (n / max(ema_nimg, 1e-8))
            for p_ema, p in zip(self.G_ema.parameters(), self.G.parameters()):
                p_ema.copy_(p.lerp(p_ema, beta))
            for b_ema, b in zip(self.G_ema.buffers(), self.G.buffers()):
                b_ema.copy_(b)
        self.nimg += n
        self.batch_idx += 1
        if t.augment and self.batch_idx % t.ada_interval == 0:
            self.ada_stats.update()
            adjust = math.copysign(1.0, self.ada_stats["Loss/signs/real"] - t.ada_target) * (n * t.ada_interval) / (
                t.ada_kimg * 1000)
            self.augment.p.copy_((self.augment.p + adjust).clamp(min=0))


def real_batch(data: Path, resolution: int, n: int, device: torch.device) -> torch.Tensor:
    images = ImageFolder(data, resolution, check=False)
    return torch.stack([images[i % len(images)] for i in range(n)]).to(device)


def time_windows(runs: list, reals: torch.Tensor, cycle: int, windows: int, warmup: int, sync) -> dict[str, list]:
    """Seconds per window (each `cycle` steps) of every run, alternating run by run, after `warmup` steps each."""
    for run in runs:
        for _ in range(warmup):
            run.step(reals)
    sync()
    seconds: dict[str, list] = {run.name: [] for run in runs}
    for w in range(windows):
        order = runs if w % 2 == 0 else runs[::-1]  # neither always goes first
        for run in order:
            t0 = time.perf_counter()
            for _ in range(cycle):
                run.step(reals)
            sync()
            seconds[run.name].append(time.perf_counter() - t0)
            rate = cycle * reals.shape[0] / seconds[run.name][-1]
            print(f"  window {w + 1}/{windows} {run.name:<7} {rate:7.2f} img/s", flush=True)
    return seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", default="tiny,small")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--data", type=Path, default=SAMPLE_DATA, help="folder of images for the fixed real batch")
    ap.add_argument("--windows", type=int, default=2, help="timed windows of one regulariser cycle each (median)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps first (the first runs both regularisers)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")
    ap.add_argument("--nvlabs", metavar="PATH", help="also time NVlabs' stylegan2-ada-pytorch checked out at PATH, "
                    "side by side")
    ap.add_argument("--label", default="", help="a note stored with the rows (before/after a change)")
    ap.add_argument("--no-record", action="store_true", help="print only; do not append to the results file")
    args = ap.parse_args()
    if args.windows < 1 or args.warmup < 0:
        sys.exit("error: --windows must be at least 1 and --warmup at least 0")
    if args.threads:
        torch.set_num_threads(args.threads)
    machine = describe(args.device)
    command = "python benchmarks/train_speed.py " + " ".join(sys.argv[1:])
    print(f"machine: {machine}")
    for preset in args.presets.split(","):
        p = get_preset(preset)
        runs = [GenRun(preset, args.device)]
        if args.nvlabs:
            runs.append(NVlabsRun(args.nvlabs, preset, args.device))
        counts = {run.name: run.params() for run in runs}
        print(f"{preset}: parameters (G, D): " + ", ".join(f"{k} {v}" for k, v in counts.items()))
        reals = real_batch(args.data, p.model.resolution, p.train.batch, runs[0].procs.device)
        cycle = math.lcm(p.train.r1_interval, p.train.pl_interval)
        sync = torch.cuda.synchronize if reals.device.type == "cuda" else (lambda: None)
        t0 = time.perf_counter()
        seconds = time_windows(runs, reals, cycle, args.windows, args.warmup, sync)
        pairs = [b / a for a, b in zip(seconds["gen"], seconds.get("nvlabs", []))]  # each pair ran back to back
        rates = {}
        for run in runs:
            secs = seconds[run.name]
            rate = cycle * p.train.batch / statistics.median(secs)
            rates[run.name] = rate
            row = {"preset": preset, "impl": run.name, "device": str(reals.device), "batch": p.train.batch,
                   "steps_per_window": cycle, "windows": len(secs), "warmup_steps": args.warmup,
                   "img_per_s": round(rate, 2), "window_img_per_s": [round(cycle * p.train.batch / s, 2) for s in secs],
                   "sec_per_step": round(statistics.median(secs) / cycle, 4), "params_G": counts[run.name][0],
                   "params_D": counts[run.name][1], "threads": torch.get_num_threads(),
                   "data": str(args.data), "loadavg": [round(x, 2) for x in os.getloadavg()],
                   "total_s": round(time.perf_counter() - t0, 1), "label": args.label, "command": command,
                   **({"gen_over_nvlabs_window_pairs": [round(r, 3) for r in pairs]} if pairs else {})}
            print(f"{preset:<10} {run.name:<7} batch {p.train.batch:>3} {rate:8.2f} img/s (median of "
                  f"{row['window_img_per_s']})")
            if not args.no_record:
                record("train_speed", row, machine)
        if "nvlabs" in rates:
            print(f"{preset}: gen / NVlabs = {rates['gen'] / rates['nvlabs']:.2f}x (medians); window pairs "
                  f"{[round(r, 2) for r in pairs]}, median {statistics.median(pairs):.2f}x")


if __name__ == "__main__":
    main()
