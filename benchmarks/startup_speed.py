"""Start-up speed of the `gen` command, side by side in one run: what a user waits for before anything happens.

    python benchmarks/startup_speed.py [BUNDLE] [--repeats 10] [--label before|after|...] [--pycache] [--no-record]

Times, as separate processes (wall clock, from the start of the process to its exit):
- `python -c "import numpy, onnxruntime, PIL"`: the floor, what any torch-free sampler in Python pays before it
  draws (the interpreter and the three libraries gen sample cannot do without), so that gen's own overhead
  (gen sample - floor, printed) reads the same on a fast machine and a slow or busy one;
- `python -c "import gen.cli"`: the import alone;
- `gen --help`: the import, plus Typer building every command's help;
- `gen sample BUNDLE --seeds 0 -o TMP.png`: one image from a bundle (default: the shipped models/emoji),
  written into a temporary folder (a new name each time, so no --overwrite).
The four are interleaved, one of each per round, after one warm-up round (cold file caches measure the
disk, not gen), so that all see the same machine state; reports the best (the run least disturbed by
whatever else the machine was doing) and the median of --repeats rounds, of the wall time and of the CPU time
(user + system: it moves far less when other programs share the cores); gen sample's overhead over the floor
both as best - best and as the median of each round's difference (the two ran seconds apart). The commands run
from the temporary folder, as a user's would from anywhere. Appends the results, with --label, the load average
(before and after the rounds), whether Python writes bytecode caches, and the machine's description, to
benchmarks/results/startup.jsonl.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from machine import describe, record

DEFAULT_BUNDLE = Path(__file__).resolve().parents[1] / "models" / "emoji"
FLOOR = "import numpy, onnxruntime, PIL"


def gen_command() -> str:
    """The `gen` script of the Python running this benchmark (its venv's), else the first on PATH."""
    here = Path(sys.executable).parent / "gen"
    found = str(here) if here.exists() else shutil.which("gen")
    if not found:
        sys.exit("no `gen` command: pip install -e . first")
    return found


def wall(argv: list[str], cwd: str) -> float:
    return timed(argv, cwd)[0]


def timed(argv: list[str], cwd: str, env: dict | None = None) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one run of `argv`: the CPU time (user + system, of the process and its
    threads) moves far less than the wall time when other programs share the cores."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    done = subprocess.run(argv, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seconds = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        sys.exit(f"{' '.join(argv)} failed ({done.returncode}):\n{done.stderr}")
    return seconds, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bundle", nargs="?", default=str(DEFAULT_BUNDLE))
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--label", default=None, help="a word recorded with the results (before, after, ...)")
    ap.add_argument("--pycache", action="store_true",
                    help="let the commands keep bytecode caches (in a temporary PYTHONPYCACHEPREFIX, written in the "
                         "warm-up round), as an installed gen has, where PYTHONDONTWRITEBYTECODE (set in a checkout) "
                         "has every gen module compiled at each run (~25 ms on 2 cores)")
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args()
    machine = describe()
    print(f"machine: {machine}")
    gen = gen_command()
    bundle = str(Path(args.bundle).resolve())
    times: dict[str, list[float]] = {"floor": [], "import": [], "help": [], "sample": []}
    cpu: dict[str, list[float]] = {name: [] for name in times}
    with tempfile.TemporaryDirectory() as tmp:
        env = None
        if args.pycache:
            env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
            env["PYTHONPYCACHEPREFIX"] = f"{tmp}/pycache"
        def one_round(i: int) -> dict[str, tuple[float, float]]:
            return {"floor": timed([sys.executable, "-c", FLOOR], tmp, env),
                    "import": timed([sys.executable, "-c", "import gen.cli"], tmp, env),
                    "help": timed([gen, "--help"], tmp, env),
                    "sample": timed([gen, "sample", bundle, "--seeds", "0", "-o", f"{tmp}/x{i}.png"], tmp, env)}

        one_round(-1)  # warm-up: file caches
        load_before = os.getloadavg()
        for i in range(args.repeats):
            for name, (seconds, cpu_seconds) in one_round(i).items():
                times[name].append(seconds)
                cpu[name].append(cpu_seconds)
        load_after = os.getloadavg()
    python = Path(sys.executable).name
    commands = {"floor": f'{python} -c "{FLOOR}"', "import": f'{python} -c "import gen.cli"', "help": "gen --help",
                "sample": f"gen sample {args.bundle} --seeds 0 -o TMP.png"}
    rows = {}
    print(f"{'command':<50} {'best s':>7} {'median s':>9} {'CPU best s':>11} {'CPU median s':>13}   "
          f"({args.repeats} runs each)")
    for name, ts in times.items():
        rows[name] = {"command": commands[name], "best_s": round(min(ts), 3),
                      "median_s": round(statistics.median(ts), 3), "runs": [round(t, 3) for t in ts],
                      "cpu_best_s": round(min(cpu[name]), 3), "cpu_median_s": round(statistics.median(cpu[name]), 3)}
        print(f"{commands[name]:<50} {min(ts):>7.3f} {statistics.median(ts):>9.3f} {min(cpu[name]):>11.3f} "
              f"{statistics.median(cpu[name]):>13.3f}")

    def over_floor(t: dict[str, list[float]]) -> dict[str, float]:
        return {"best_s": round(min(t["sample"]) - min(t["floor"]), 3),
                "median_s": round(statistics.median(s - f for s, f in zip(t["sample"], t["floor"])), 3)}

    overhead, cpu_overhead = over_floor(times), over_floor(cpu)
    print(f"{'gen sample over the floor':<50} {overhead['best_s']:>7.3f} {overhead['median_s']:>9.3f} "
          f"{cpu_overhead['best_s']:>11.3f} {cpu_overhead['median_s']:>13.3f}   "
          "(best - best; median of the rounds' differences)")
    if not args.no_record:
        # Without bytecode caches (PYTHONDONTWRITEBYTECODE in a checkout, unless --pycache), every gen module is
        # compiled at each run.
        path = record("startup", {"label": args.label, "repeats": args.repeats, **rows, "sample_over_floor": overhead,
                                  "sample_over_floor_cpu": cpu_overhead,
                                  "load_average": [round(x, 2) for x in (*load_before, *load_after)],
                                  "PYTHONDONTWRITEBYTECODE": None if args.pycache else os.environ.get(
                                      "PYTHONDONTWRITEBYTECODE"), "pycache": args.pycache}, machine)
        print(f"recorded in {path}")


if __name__ == "__main__":
    main()
