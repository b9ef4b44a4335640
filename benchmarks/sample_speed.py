"""Sampling speed, side by side in one run: PyTorch eager vs the torch-free runtime (onnxruntime).

    python benchmarks/sample_speed.py CHECKPOINT [--engine cpu] [--batches 1,8]
    python benchmarks/sample_speed.py --random stylegan3-t [--resolution 64]   # random weights, see random_model

Exports the checkpoint to a temporary bundle, then times seeds -> images (mapping, truncation,
synthesis) at each batch size with both, interleaved so that both see the same machine state.
Appends the results with the machine's description to benchmarks/results/sample_speed.jsonl.
"""

from __future__ import annotations

import argparse
import tempfile
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path

import torch
from machine import best_rate, describe, record

from gen.export.stylegan import export_stylegan
from gen.runtime.latents import DEFAULT_PSI
from gen.runtime.stylegan.generator import BundleGenerator
from gen.train.config import to_json
from gen.train.sample import generate, load_generator


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint", nargs="?")
    ap.add_argument("--random", metavar="VARIANT", help="time a random-weights model of this variant instead")
    ap.add_argument("--resolution", type=int, default=64)
    ap.add_argument("--engine", default="cpu")
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args()
    device = "cuda" if args.engine == "cuda" else "cpu"
    machine = describe(device)
    print(f"machine: {machine}")
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        checkpoint = args.checkpoint or random_model(args.random, args.resolution, Path(tmp) / "random.safetensors")
        G = load_generator(checkpoint, device)
        bundle, _ = export_stylegan(checkpoint, Path(tmp) / "bundle")
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
                record("sample_speed", {"checkpoint": Path(checkpoint).name, "model": to_json(G.cfg), "resolution": res,
                                        "engine": rt.engine, "batch": batch, "torch_img_per_s": round(pt, 2),
                                        "runtime_img_per_s": round(ort, 2), "ratio": round(ort / pt, 3)}, machine)


def random_model(variant: str, resolution: int, path: Path) -> Path:
    """A checkpoint of random weights (speed does not depend on them). StyleGAN3: NVlabs' layout (14 layers, 10
    pixel margins, 2 mapping layers) at a quarter of its channels (channel_base 8192, channel_max 128; R doubles
    both), so that a 2-core CPU draws a batch in seconds; StyleGAN2: the 'small' preset."""
    from gen.train import checkpoint as ckpt
    from gen.train.config import Stylegan3Config, get_preset
    from gen.train.sample import new_generator

    if variant and variant.startswith("stylegan3"):
        r = variant == "stylegan3-r"
        cfg = Stylegan3Config(resolution=resolution, variant=variant, channel_base=8192 * (1 + r),
                              channel_max=128 * (1 + r))
    else:
        cfg = replace(get_preset("small").model, resolution=resolution, variant=variant or "stylegan2")
    torch.manual_seed(0)
    G = new_generator(cfg)
    ckpt.save_checkpoint(path, ckpt.prefixed(G.state_dict(), "G_ema"), {"model": to_json(cfg)})
    return path


if __name__ == "__main__":
    main()
