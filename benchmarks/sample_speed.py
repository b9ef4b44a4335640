"""Sampling speed, side by side in one run: PyTorch eager vs the torch-free runtime (onnxruntime).

    python benchmarks/sample_speed.py CHECKPOINT [--engine cpu] [--batches 1,8]
    python benchmarks/sample_speed.py --random stylegan3-t [--resolution 64]   # random weights, see random_model
    python benchmarks/sample_speed.py --random stylegan2 --preset paper256 --resolution 256 --batches 8,1

Exports the checkpoint to a temporary bundle, then times seeds -> images (mapping, truncation,
synthesis) at each batch size with both, interleaved so that both see the same machine state.

Both are also put against what this CPU can do, measured in the same run: before each batch size, the rate of a
float32 matrix product (NumPy's BLAS, SGEMM_SIZE x SGEMM_SIZE matrices, with as many threads as onnxruntime runs
a session with: the physical cores), and the model's work per image, counted from the exported graphs (mapping and
synthesis: the multiply-adds of their Conv, ConvTranspose, MatMul and Gemm nodes at their shapes, 1 MAC = 2 FLOP;
see machine.graph_macs). Achieved GFLOP/s = images/s x FLOP per image; "of sgemm" is its fraction of the
matrix product's rate.
Appends the results with the machine's description and load average to benchmarks/results/sample_speed.jsonl.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path

import torch
from machine import SGEMM_SIZE, best_rate, describe, gen_malloc, graph_macs, physical_cores, record, sgemm_gflops

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
    ap.add_argument("--preset", default="small", help="StyleGAN2/1 --random: the preset whose channels it takes "
                    "(small: channel_base 4096, channel_max 128; paper256: 16384, 512)")
    ap.add_argument("--label", default=None, help="a word recorded with the results (before, after, ...)")
    ap.add_argument("--engine", default="cpu")
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args()
    malloc = gen_malloc()  # as gen's CLI does for every command, both sides here
    device = "cuda" if args.engine == "cuda" else "cpu"
    machine = describe(device)
    print(f"machine: {machine}")
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        checkpoint = args.checkpoint or random_model(args.random, args.resolution, Path(tmp) / "random.safetensors",
                                                     args.preset)
        G = load_generator(checkpoint, device)
        bundle, _ = export_stylegan(checkpoint, Path(tmp) / "bundle")
        rt = stack.enter_context(BundleGenerator(bundle, args.engine))
        res = G.cfg.resolution
        threads = physical_cores()  # onnxruntime's intra-op threads (its sessions are made with 0: its default)
        print(f"threads: onnxruntime {threads} (physical cores), torch {torch.get_num_threads()}; sgemm: "
              f"{SGEMM_SIZE}x{SGEMM_SIZE} float32 matmul, {threads} threads; 1 MAC = 2 FLOP")
        print(f"{res}x{res}, psi {DEFAULT_PSI:g}; GFLOP/s: achieved (its fraction of sgemm's)")
        print(f"{'batch':>5} {'torch img/s':>12} {'runtime img/s':>14} {'runtime/torch':>14} {'GFLOP/img':>10} "
              f"{'sgemm GFLOP/s':>14} {'torch GFLOP/s':>14} {'runtime GFLOP/s':>16}")
        for batch in [int(b) for b in args.batches.split(",")]:
            seeds = list(range(batch))
            macs = {g: graph_macs(bundle.graph_path(g), batch) for g in ("mapping", "synthesis")}
            flop_per_image = 2 * sum(sum(m.values()) for m in macs.values()) / batch
            load_before = os.getloadavg()
            sgemm = sgemm_gflops(threads)
            with torch.inference_mode():
                pt = best_rate(lambda s=seeds, b=batch: generate(G, s, psi=DEFAULT_PSI, batch=b), batch, args.repeats)
            ort = best_rate(lambda s=seeds, b=batch: rt.images(s, psi=DEFAULT_PSI, batch=b), batch, args.repeats)
            sgemm = max(sgemm, sgemm_gflops(threads))  # before and after: the less disturbed of the two
            load_after = os.getloadavg()
            pt_gflops, ort_gflops = pt * flop_per_image / 1e9, ort * flop_per_image / 1e9
            print(f"{batch:>5} {pt:>12.2f} {ort:>14.2f} {ort / pt:>13.2f}x {flop_per_image / 1e9:>10.2f} "
                  f"{sgemm:>14.1f} {pt_gflops:>7.1f} ({pt_gflops / sgemm:>4.0%}) "
                  f"{ort_gflops:>8.1f} ({ort_gflops / sgemm:>4.0%})")
            if not args.no_record:
                record("sample_speed", {"label": args.label, "malloc": malloc, "checkpoint": Path(checkpoint).name,
                                        "preset": None if args.checkpoint else args.preset,
                                        "model": to_json(G.cfg), "resolution": res,
                                        "engine": rt.engine, "batch": batch, "repeats": args.repeats,
                                        "torch_img_per_s": round(pt, 3),
                                        "runtime_img_per_s": round(ort, 3), "ratio": round(ort / pt, 3),
                                        "macs_per_batch": macs, "gflop_per_image": round(flop_per_image / 1e9, 4),
                                        "sgemm": {"gflop_per_s": round(sgemm, 1), "size": SGEMM_SIZE,
                                                  "threads": threads, "dtype": "float32"},
                                        "onnxruntime_threads": threads, "torch_threads": torch.get_num_threads(),
                                        "torch_gflop_per_s": round(pt_gflops, 2),
                                        "runtime_gflop_per_s": round(ort_gflops, 2),
                                        "torch_of_sgemm": round(pt_gflops / sgemm, 3),
                                        "runtime_of_sgemm": round(ort_gflops / sgemm, 3),
                                        "load_average": [round(x, 2) for x in (*load_before, *load_after)]},
                       machine)


def random_model(variant: str, resolution: int, path: Path, preset: str = "small") -> Path:
    """A checkpoint of random weights (speed does not depend on them). StyleGAN3: NVlabs' layout (14 layers, 10
    pixel margins, 2 mapping layers) at a quarter of its channels (channel_base 8192, channel_max 128; R doubles
    both), so that a 2-core CPU draws a batch in seconds; StyleGAN2 and 1: `preset`'s channels, z_dim, w_dim and mapping
    (small by default; paper256, NVlabs' 256 px config, is what a user would ship at 256 px)."""
    from gen.train import checkpoint as ckpt
    from gen.train.config import Stylegan3Config, get_preset
    from gen.train.sample import new_generator

    if variant and variant.startswith("stylegan3"):
        r = variant == "stylegan3-r"
        cfg = Stylegan3Config(resolution=resolution, variant=variant, channel_base=8192 * (1 + r),
                              channel_max=128 * (1 + r))
    else:
        cfg = replace(get_preset(preset).model, resolution=resolution, variant=variant or "stylegan2")
    torch.manual_seed(0)
    G = new_generator(cfg)
    ckpt.save_checkpoint(path, ckpt.prefixed(G.state_dict(), "G_ema"), {"model": to_json(cfg)})
    return path


if __name__ == "__main__":
    main()
