"""Dreaming speed, side by side in one run: PyTorch autograd vs the ONNX gradient graph (onnxruntime).

    python benchmarks/dream_speed.py [--layers block9] [--engine cpu] [--sizes 224,512] [--threads 0]
    python benchmarks/dream_speed.py --whole [--bundle models/dream-lite0] [--size 512] [--repeats 3]

Exports EfficientNet-Lite0 (ImageNet weights) with the objective to a temporary dream bundle, then times
one gradient step (image -> gradient and objective, as the dreaming loop calls it) at each size with
both, interleaved so that both see the same machine state. Appends the results with the machine's
description to benchmarks/results/dream_speed.jsonl.

--whole times the whole `gen dream` of a SIZExSIZE picture (the cat photo, centre-cropped; 4 octaves of 10
steps, the defaults) as a user runs it: the command itself, in a child process, torch-free with --bundle and
with PyTorch (the bundle's backbone and layers), alternately. Each row has the dream's own time (the loop, as
the command's 'wrote' line says it), the whole process's wall time (imports, loading, writing the picture too)
and the child's peak resident memory (ru_maxrss from wait4); the best of --repeats runs of each, appended to
benchmarks/results/dream_whole.jsonl with the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads OpenMP (see gen dream)

import numpy as np  # noqa: E402
import torch  # noqa: E402
from machine import best_rate, describe, gen_malloc, record  # noqa: E402

from gen.export.dream import export_dream  # noqa: E402
from gen.runtime.dream.engine import bundle_gradient  # noqa: E402
from gen.train.devices import resolve_device  # noqa: E402
from gen.train.dream_torch import build_objective, torch_gradient  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
PHOTO = ROOT / "models" / "photos" / "chelsea.jpg"
GEN = [sys.executable, "-c", "import sys; from gen.cli import main; sys.argv[0] = 'gen'; sys.exit(main())"]


def run_child(args: list[str]) -> dict:
    """Run `gen ARGS` as a child process: its dream seconds (from the 'wrote' line), wall time and peak RSS."""
    with tempfile.TemporaryFile("w+") as log:  # a file, not a pipe: Popen.communicate would reap the child
        t0 = time.perf_counter()
        child = subprocess.Popen(GEN + args, stdout=log, stderr=subprocess.STDOUT, text=True)
        _, status, usage = os.wait4(child.pid, 0)  # the child's own rusage, not all children's maximum
        wall = time.perf_counter() - t0
        child.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait for it again
        log.seek(0)
        err = out = log.read()  # stdout and stderr, interleaved
    if child.returncode != 0:
        raise SystemExit(f"gen {' '.join(args)} failed:\n{err[-2000:]}")
    found = re.search(r"wrote .*\(\d+x\d+, ([0-9.]+) s\)", err + out)
    if not found:
        raise SystemExit(f"gen {' '.join(args)} printed no 'wrote' line:\n{err[-2000:]}")
    return {"dream_s": float(found.group(1)), "process_s": round(wall, 3),
            "peak_rss_mib": round(usage.ru_maxrss / 1024, 1)}  # ru_maxrss is in KiB on Linux


def whole(args: argparse.Namespace) -> None:
    """Torch-free `gen dream --bundle` vs PyTorch `gen dream`, alternately, in child processes."""
    from gen.runtime.images import load_image, resize_center_crop, save_image

    manifest = json.loads((Path(args.bundle) / "manifest.json").read_text())
    dream = manifest["dream"]
    layers = ",".join(f"{k}={v:g}" if v != 1 else k for k, v in dream["layers"].items())
    machine = describe("cpu")
    print(f"machine: {machine}")
    with tempfile.TemporaryDirectory() as tmp:
        image = save_image(Path(tmp) / f"photo{args.size}.png", resize_center_crop(load_image(PHOTO), args.size))
        common = [str(image), "--threads", str(args.threads), "--overwrite"]
        kinds = {"bundle": ["--bundle", str(args.bundle), "--engine", args.engine],
                 "torch": ["--backbone", dream["backbone"], "--layers", layers, "--device", "cpu"]}
        best: dict[str, dict] = {}
        for r in range(args.repeats):
            for kind, extra in kinds.items():
                got = run_child(["dream", *common, "-o", str(Path(tmp) / f"{kind}.png"), *extra])
                print(f"run {r + 1} {kind:>6}: dream {got['dream_s']:.1f} s, process {got['process_s']:.2f} s, "
                      f"peak RSS {got['peak_rss_mib']:.0f} MiB (load {os.getloadavg()[0]:.2f})", flush=True)
                if kind not in best or got["process_s"] < best[kind]["process_s"]:
                    best[kind] = got
    print(f"{'':>8} {'dream s':>8} {'process s':>10} {'peak RSS MiB':>13}   ({args.size}x{args.size}, "
          f"{dream['backbone']} {layers}, 4 octaves x 10 steps, best of {args.repeats})")
    for kind, got in best.items():
        print(f"{kind:>8} {got['dream_s']:>8.1f} {got['process_s']:>10.2f} {got['peak_rss_mib']:>13.0f}")
    if not args.no_record:
        record("dream_whole", {"label": args.label, "size": args.size, "bundle": str(args.bundle),
                               "backbone": dream["backbone"], "layers": layers, "engine": args.engine,
                               "threads": args.threads, "repeats": args.repeats, "loadavg": os.getloadavg(),
                               **{f"{kind}_{k}": v for kind, got in best.items() for k, v in got.items()}}, machine)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backbone", default="efficientnet_lite0")
    ap.add_argument("--layers", default="block9")
    ap.add_argument("--engine", default="cpu")
    ap.add_argument("--sizes", default="224,512")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    ap.add_argument("--no-record", action="store_true")
    ap.add_argument("--label", default="", help="what this run measures (before/after ...), kept in the row")
    ap.add_argument("--whole", action="store_true", help="time the whole gen dream, torch-free vs PyTorch")
    ap.add_argument("--bundle", default=str(ROOT / "models" / "dream-lite0"), help="--whole: the dream bundle")
    ap.add_argument("--size", type=int, default=512, help="--whole: the picture's side")
    args = ap.parse_args()
    if args.whole:
        whole(args)  # its children are gen commands: the CLI makes the malloc settings itself
        return
    malloc = gen_malloc()  # as gen's CLI does for every command, both sides here
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
                    record("dream_speed", {"label": args.label, "loadavg": os.getloadavg(),
                                           "backbone": args.backbone, "layers": args.layers, "size": size,
                                           "engine": runner.name, "torch_device": str(device),
                                           "torch_steps_per_s": round(pt, 3), "onnx_steps_per_s": round(ort, 3),
                                           "ratio": round(ort / pt, 3), "malloc": malloc}, machine)


if __name__ == "__main__":
    main()
