"""fid / kid and fid_lite0 / kid_lite0, recorded: the same measurement as `gen metrics`, appended with the machine.

    python benchmarks/metrics.py --data ../shared/data/emoji-google-64 --num 1000 --real-floor   # the floor alone
    python benchmarks/metrics.py models/BUNDLE --data ../shared/data/emoji-google-64 --num 1000 --real-floor
    python benchmarks/metrics.py models/BUNDLE --data ... --metric fid_lite0,kid_lite0   # without Inception (fast)

Prints the figures and appends them, with the equivalent `gen metrics` command and the machine's
description, to benchmarks/results/metrics.jsonl.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the gen command sets it (see runtime/cli.py)

from machine import describe, record  # noqa: E402

from gen.train.metrics import compute_metrics, format_metrics  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("source", nargs="?", help="run, checkpoint or stylegan bundle (omit for the floor alone)")
    ap.add_argument("--data", required=True)
    ap.add_argument("--num", type=int, default=1000)
    ap.add_argument("--psi", type=float, default=1.0)
    ap.add_argument("--real-floor", action="store_true")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--metric", default="all", help="fid,kid,fid_lite0,kid_lite0 (comma-separated) or all")
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args()
    result = compute_metrics(Path(args.source) if args.source else None, Path(args.data), args.num, args.psi,
                             args.real_floor, device=args.device, metrics=args.metric)
    for line in format_metrics(result):
        print(line)
    command = " ".join(["gen metrics", *([args.source] if args.source else []), "--data", args.data, "--num",
                        str(args.num), *(["--psi", str(args.psi)] if args.source else []),
                        *(["--real-floor"] if args.real_floor else []),
                        *(["--metric", args.metric] if args.metric != "all" else [])])
    if not args.no_record:
        path = record("metrics", {"command": command, **result}, describe("cuda" if args.device == "cuda" else "cpu"))
        print(f"appended to {path}")


if __name__ == "__main__":
    main()
