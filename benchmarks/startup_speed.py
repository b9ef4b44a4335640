"""Start-up speed of the `gen` command, side by side in one run: what a user waits for before anything happens.

    python benchmarks/startup_speed.py [BUNDLE] [--repeats 10] [--label before|after|...] [--no-record]

Times, as separate processes (wall clock, from the start of the process to its exit):
- `python -c "import gen.cli"`: the import alone;
- `gen --help`: the import, plus Typer building every command's help;
- `gen sample BUNDLE --seeds 0 -o TMP.png`: one image from a bundle (default: the shipped models/emoji),
  written into a temporary folder (a new name each time, so no --overwrite).
The three are interleaved, one of each per round, after one warm-up round (cold file caches measure the
disk, not gen), so that all see the same machine state; reports the best (the run least disturbed by
whatever else the machine was doing) and the median of --repeats rounds. The commands run from the
temporary folder, as a user's would from anywhere. Appends the results, with --label, the load average
(before and after the rounds), whether Python writes bytecode caches, and the machine's description, to
benchmarks/results/startup.jsonl.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from machine import describe, record

DEFAULT_BUNDLE = Path(__file__).resolve().parents[1] / "models" / "emoji"


def gen_command() -> str:
    """The `gen` script of the Python running this benchmark (its venv's), else the first on PATH."""
    here = Path(sys.executable).parent / "gen"
    found = str(here) if here.exists() else shutil.which("gen")
    if not found:
        sys.exit("no `gen` command: pip install -e . first")
    return found


def wall(argv: list[str], cwd: str) -> float:
    t0 = time.perf_counter()
    done = subprocess.run(argv, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        sys.exit(f"{' '.join(argv)} failed ({done.returncode}):\n{done.stderr}")
    return seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bundle", nargs="?", default=str(DEFAULT_BUNDLE))
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--label", default=None, help="a word recorded with the results (before, after, ...)")
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args()
    machine = describe()
    print(f"machine: {machine}")
    gen = gen_command()
    bundle = str(Path(args.bundle).resolve())
    times: dict[str, list[float]] = {"import": [], "help": [], "sample": []}
    with tempfile.TemporaryDirectory() as tmp:
        def one_round(i: int) -> dict[str, float]:
            return {"import": wall([sys.executable, "-c", "import gen.cli"], tmp),
                    "help": wall([gen, "--help"], tmp),
                    "sample": wall([gen, "sample", bundle, "--seeds", "0", "-o", f"{tmp}/x{i}.png"], tmp)}

        one_round(-1)  # warm-up: file caches
        load_before = os.getloadavg()
        for i in range(args.repeats):
            for name, seconds in one_round(i).items():
                times[name].append(seconds)
        load_after = os.getloadavg()
    commands = {"import": f'{Path(sys.executable).name} -c "import gen.cli"', "help": "gen --help",
                "sample": f"gen sample {args.bundle} --seeds 0 -o TMP.png"}
    rows = {}
    print(f"{'command':<50} {'best s':>7} {'median s':>9}   ({args.repeats} runs each)")
    for name, ts in times.items():
        rows[name] = {"command": commands[name], "best_s": round(min(ts), 3),
                      "median_s": round(statistics.median(ts), 3), "runs": [round(t, 3) for t in ts]}
        print(f"{commands[name]:<50} {min(ts):>7.3f} {statistics.median(ts):>9.3f}")
    if not args.no_record:
        # Without bytecode caches (PYTHONDONTWRITEBYTECODE in a checkout), every gen module is compiled at each run.
        path = record("startup", {"label": args.label, "repeats": args.repeats, **rows,
                                  "load_average": [round(x, 2) for x in (*load_before, *load_after)],
                                  "PYTHONDONTWRITEBYTECODE": os.environ.get("PYTHONDONTWRITEBYTECODE")}, machine)
        print(f"recorded in {path}")


if __name__ == "__main__":
    main()
