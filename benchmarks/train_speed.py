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
thread count. Each side runs in a process of its own, as a user runs it: gen's with the malloc settings and
OMP_WAIT_POLICY gen's CLI makes (gen.runtime.memory.keep_freed_memory), NVlabs' with glibc's and OpenMP's
defaults, as their train.py runs (--nvlabs-allocator gen gives theirs gen's malloc settings, to compare the code
alone). The two alternate window by window so a slower spell of the machine hits both; each window also reports
the system (kernel) time it took.
Their custom CUDA ops fall back to their reference PyTorch code on a CPU. Data loading is not timed in either.

Appends one JSON line per preset (and per side) to benchmarks/results/train_speed.jsonl with the machine's
description, the load average and --label. Not a test: timings belong here, not in the suite.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from machine import describe, gen_malloc, record

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


class Worker:
    """One side of the comparison in a process of its own, as a user runs it (`gen train`, or NVlabs' train.py):
    sharing a process, the two sides share one malloc heap, and whichever ran before leaves it in a state that
    changes the other's page faults (gen measured 5.3 img/s beside NVlabs in one process, ~7 alone). It builds
    its side, runs the warm-up steps, then times one window per line it reads."""

    def __init__(self, name: str, args: argparse.Namespace, preset: str) -> None:
        cmd = [sys.executable, __file__, "--worker", name, "--presets", preset, "--device", args.device,
               "--data", str(args.data), "--warmup", str(args.warmup)]
        for flag, value in (("--threads", args.threads), ("--nvlabs", args.nvlabs)):
            if value:
                cmd += [flag, str(value)]
        if name == "nvlabs":
            cmd += ["--nvlabs-allocator", args.nvlabs_allocator]
        env = dict(os.environ)
        if name.startswith("gen"):  # what gen's CLI sets before torch loads (see gen/cli/__init__.py)
            env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        self.name = name
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        self.ready = self._read()

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            sys.exit(f"error: the {self.name} worker stopped (exit status {self.proc.wait()}); see its output above")
        return json.loads(line)

    def window(self) -> dict:
        self.proc.stdin.write("window\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait()


def serve(name: str, args: argparse.Namespace) -> None:
    """The worker's side: build `name`'s run, warm up, then one timed window (a whole regulariser cycle) per
    line on stdin, each answered with one JSON line on stdout (its seconds and the system time it spent)."""
    preset = args.presets
    p = get_preset(preset)
    # gen's CLI sets malloc up at the start of every command; gen-glibc (--malloc-ab's other side) and NVlabs
    # keep glibc's defaults, unless --nvlabs-allocator gen.
    malloc = gen_malloc(name == "gen" or (name == "nvlabs" and args.nvlabs_allocator == "gen"))
    run = GenRun(preset, args.device) if name.startswith("gen") else NVlabsRun(args.nvlabs, preset, args.device)
    device = torch.device(args.device)
    reals = real_batch(args.data, p.model.resolution, p.train.batch, device)
    cycle = math.lcm(p.train.r1_interval, p.train.pl_interval)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(args.warmup):
        run.step(reals)
    sync()
    out = sys.stdout
    sys.stdout = sys.stderr  # anything else printed goes to the terminal, not into the answers
    print(json.dumps({"params": run.params(), "cycle": cycle, "batch": p.train.batch,
                      "threads": torch.get_num_threads(), "malloc": malloc}), file=out, flush=True)
    for _ in sys.stdin:
        sys_before, t0 = resource.getrusage(resource.RUSAGE_SELF).ru_stime, time.perf_counter()
        for _ in range(cycle):
            run.step(reals)
        sync()
        seconds = time.perf_counter() - t0
        sys_s = resource.getrusage(resource.RUSAGE_SELF).ru_stime - sys_before
        print(json.dumps({"seconds": seconds, "sys_seconds": sys_s}), file=out, flush=True)


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
    ap.add_argument("--nvlabs-allocator", choices=("default", "gen"), default="default",
                    help="NVlabs' process: glibc's default malloc settings, as their train.py runs (default), or "
                         "the ones gen's CLI makes, to compare the code alone")
    ap.add_argument("--label", default="", help="a note stored with the rows (before/after a change)")
    ap.add_argument("--no-record", action="store_true", help="print only; do not append to the results file")
    ap.add_argument("--malloc-ab", action="store_true", help="instead of NVlabs, time gen beside gen with glibc's "
                    "default malloc settings (gen-glibc): what gen train's keep_freed_memory is worth here")
    ap.add_argument("--worker", choices=("gen", "gen-glibc", "nvlabs"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.windows < 1 or args.warmup < 0:
        sys.exit("error: --windows must be at least 1 and --warmup at least 0")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.worker:
        return serve(args.worker, args)
    machine = describe(args.device)
    command = "python benchmarks/train_speed.py " + " ".join(sys.argv[1:])
    print(f"machine: {machine}")
    for preset in args.presets.split(","):
        t0 = time.perf_counter()
        other = "gen-glibc" if args.malloc_ab else "nvlabs" if args.nvlabs else None
        workers = [Worker("gen", args, preset)] + ([Worker(other, args, preset)] if other else [])
        ready = workers[0].ready
        cycle, batch = ready["cycle"], ready["batch"]
        print(f"{preset}: parameters (G, D): " + ", ".join(f"{w.name} {w.ready['params']}" for w in workers))
        windows: dict[str, list] = {w.name: [] for w in workers}
        for k in range(args.windows):
            for w in workers if k % 2 == 0 else workers[::-1]:  # neither always goes first
                got = w.window()
                windows[w.name].append(got)
                print(f"  window {k + 1}/{args.windows} {w.name:<7} {cycle * batch / got['seconds']:7.2f} img/s, "
                      f"{got['sys_seconds']:.1f} s in the kernel", flush=True)
        for w in workers:
            w.close()
        seconds = {name: [x["seconds"] for x in ws] for name, ws in windows.items()}
        pairs = [b / a for a, b in zip(seconds["gen"], seconds.get(other, []))]  # each pair ran back to back
        rates = {}
        for w in workers:
            secs = seconds[w.name]
            rate = cycle * batch / statistics.median(secs)
            rates[w.name] = rate
            allocator = w.ready["malloc"]
            row = {"preset": preset, "impl": w.name, "device": args.device, "batch": batch,
                   "steps_per_window": cycle, "windows": len(secs), "warmup_steps": args.warmup,
                   "img_per_s": round(rate, 2), "window_img_per_s": [round(cycle * batch / s, 2) for s in secs],
                   "sec_per_step": round(statistics.median(secs) / cycle, 4),
                   "sys_s_per_window": [round(x["sys_seconds"], 2) for x in windows[w.name]],
                   "params_G": w.ready["params"][0], "params_D": w.ready["params"][1],
                   "threads": w.ready["threads"], "process": "own", "malloc": allocator,
                   "data": str(args.data), "loadavg": [round(x, 2) for x in os.getloadavg()],
                   "total_s": round(time.perf_counter() - t0, 1), "label": args.label, "command": command,
                   **({f"gen_over_{other.replace('-', '_')}_window_pairs": [round(r, 3) for r in pairs]}
                      if pairs else {})}
            print(f"{preset:<10} {w.name:<7} batch {batch:>3} {rate:8.2f} img/s (median of "
                  f"{row['window_img_per_s']}; malloc {allocator})")
            if not args.no_record:
                record("train_speed", row, machine)
        if other:
            print(f"{preset}: gen / {other} = {rates['gen'] / rates[other]:.2f}x (medians); window pairs "
                  f"{[round(r, 2) for r in pairs]}, median {statistics.median(pairs):.2f}x")


if __name__ == "__main__":
    main()
