"""Sampling speed, side by side in one run: PyTorch eager vs the torch-free runtime (onnxruntime).

    python benchmarks/sample_speed.py CHECKPOINT [--engine cpu] [--batches 1,8]

Exports the checkpoint to a temporary bundle, then times seeds -> images (mapping, truncation,
synthesis) at each batch size with both, interleaved so that both see the same machine state.
Appends the results with the machine's description to benchmarks/results/sample_speed.jsonl.
"""

from __future__ import annotations

import argparse
import tempfile
from contextlib import ExitStack
from pathlib import Path

import torch
from machine import best_rate, describe, record

from gen.export.stylegan import export_stylegan
from gen.runtime.latents import DEFAULT_PSI
from gen.runtime.stylegan.generator import BundleGenerator
from gen.train.sample import generate, load_generator


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint")
    ap.add_argument("--engine", default="cpu")
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args()
    device = "cuda" if args.engine == "cuda" else "cpu"
    machine = describe(device)
    print(f"machine: {machine}")
    G = load_generator(args.checkpoint, device)
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        bundle, _ = export_stylegan(args.checkpoint, Path(tmp) / "bundle")
        rt = stack.enter_context(BundleGenerator(bundle, args.engine))
        res = G.cfg.resolution
        print(f"{'batch':>5} {'torch img/s':>12} {'runtime img/s':>14} {'runtime/torch':>14}   "
              f"({res}x{res}, psi {DEFAULT_PSI:g})")
        for batch in [int(b) for b in args.batches.split(",")]:
            seeds = list(range(batch))
            with torch.inference_mode():
                pt = best_rate(lambda s=seeds, b=batch: generate(G, s, psi=DEFAULT_PSI, batch=b), batch, args.repeats)
            ort = best_rate(lambda s=seeds, b=batch: rt.images(s, psi=DEFAULT_PSI, batch=b), batch, args.repeats)
            print(f"{batch:>5} {pt:>12.1f} {ort:>14.1f} {ort / pt:>13.2f}x")
            if not args.no_record:
                record("sample_speed", {"checkpoint": Path(args.checkpoint).name, "resolution": res,
                                        "engine": rt.engine, "batch": batch, "torch_img_per_s": round(pt, 2),
                                        "runtime_img_per_s": round(ort, 2), "ratio": round(ort / pt, 3)}, machine)


if __name__ == "__main__":
    main()
