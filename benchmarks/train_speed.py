"""Training speed per preset, in images per second, on the machine it runs on.

    python benchmarks/train_speed.py                     # tiny and small on the CPU
    python benchmarks/train_speed.py --device cuda --presets tiny,small,paper256

Runs whole training steps (D main, G main, and R1 / path length at their lazy intervals, so the
number is the long-run average) on real images from the built-in sample, with ADA at p = 0.2.
Appends one JSON line per preset to benchmarks/results/train_speed.jsonl with the machine's
description. Not a test: timings belong here, not in the suite.
"""

from __future__ import annotations

import argparse
import time

import torch
from machine import describe, record

from gen.train.config import get_preset
from gen.train.data import SAMPLE_DATA, ImageFolder
from gen.train.trainer import Dist, StyleGANTraining


def measure(preset: str, device: str, steps: int) -> dict:
    p = get_preset(preset)
    procs = Dist(device)
    state = StyleGANTraining(p.model, p.train, procs)
    with torch.no_grad():
        state.augment.p.fill_(0.2)
    data = ImageFolder(SAMPLE_DATA, p.model.resolution, check=False)
    reals = torch.stack([data[i % len(data)] for i in range(state.batch_per_rank)]).to(procs.device)
    # A whole lazy-regularisation cycle (lcm of 16 and 4) per measurement keeps the average honest.
    cycle = max(p.train.r1_interval, p.train.pl_interval)
    state.train_step(reals)  # warm-up
    sync = torch.cuda.synchronize if procs.device.type == "cuda" else (lambda: None)
    sync()
    n = max(steps // cycle, 1) * cycle
    t0 = time.perf_counter()
    for _ in range(n):
        state.train_step(reals)
    sync()
    seconds = time.perf_counter() - t0
    return {"preset": preset, "device": str(procs.device), "batch": p.train.batch, "steps": n,
            "img_per_s": round(n * p.train.batch / seconds, 2), "sec_per_step": round(seconds / n, 4),
            "params_G": sum(x.numel() for x in state.G.parameters())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", default="tiny,small")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--steps", type=int, default=32, help="steps to time (rounded to a regulariser cycle)")
    ap.add_argument("--no-record", action="store_true", help="print only; do not append to the results file")
    args = ap.parse_args()
    machine = describe(args.device)
    print(f"machine: {machine}")
    print(f"{'preset':<10} {'device':<8} {'batch':>5} {'img/s':>9} {'s/step':>8}")
    for preset in args.presets.split(","):
        r = measure(preset, args.device, args.steps)
        print(f"{r['preset']:<10} {r['device']:<8} {r['batch']:>5} {r['img_per_s']:>9.2f} {r['sec_per_step']:>8.3f}")
        if not args.no_record:
            record("train_speed", r, machine)


if __name__ == "__main__":
    main()
