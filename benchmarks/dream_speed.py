"""Dreaming speed, side by side in one run: PyTorch autograd vs the ONNX gradient graph (onnxruntime).

    python benchmarks/dream_speed.py [--layers block9] [--engine cpu] [--sizes 224,512] [--threads 0]

Exports EfficientNet-Lite0 (ImageNet weights) with the objective to a temporary dream bundle, then times
one gradient step (image -> gradient and objective, as the dreaming loop calls it) at each size with
both, interleaved so that both see the same machine state. Appends the results with the machine's
description to benchmarks/results/dream_speed.jsonl.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads OpenMP (see gen dream)

import numpy as np  # noqa: E402
import torch  # noqa: E402
from machine import best_rate, describe, record  # noqa: E402

from gen.export.dream import export_dream  # noqa: E402
from gen.runtime.dream.engine import bundle_gradient  # noqa: E402
from gen.train.devices import resolve_device  # noqa: E402
from gen.train.dream_torch import build_objective, torch_gradient  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backbone", default="efficientnet_lite0")
    ap.add_argument("--layers", default="block9")
    ap.add_argument("--engine", default="cpu")
    ap.add_argument("--sizes", default="224,512")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device("cuda" if args.engine == "cuda" else "cpu")
    machine = describe(str(device))
    print(f"machine: {machine}")
    objective = build_objective(args.backbone, args.layers)
    reference = torch_gradient(objective, device)
    with tempfile.TemporaryDirectory() as tmp:
        bundle, _ = export_dream(Path(tmp) / "bundle", objective=objective)
        runtime, runner = bundle_gradient(bundle, args.engine)
        with runner:
            print(f"{'size':>9} {'torch steps/s':>14} {'onnx steps/s':>13} {'onnx/torch':>11}   "
                  f"({args.backbone} {args.layers}, {runner.name})")
            for size in [int(s) for s in args.sizes.split(",")]:
                image = np.random.default_rng(0).random((1, 3, size, size), dtype=np.float32)
                pt = best_rate(lambda x=image: reference(x), repeats=args.repeats)
                ort = best_rate(lambda x=image: runtime(x), repeats=args.repeats)
                print(f"{size:>4}x{size:<4} {pt:>14.2f} {ort:>13.2f} {ort / pt:>10.2f}x")
                if not args.no_record:
                    record("dream_speed", {"backbone": args.backbone, "layers": args.layers, "size": size,
                                           "engine": runner.name, "torch_device": str(device),
                                           "torch_steps_per_s": round(pt, 3), "onnx_steps_per_s": round(ort, 3),
                                           "ratio": round(ort / pt, 3)}, machine)


if __name__ == "__main__":
    main()
