"""What every benchmark shares: the machine it ran on, how a rate is timed, and how a result is recorded."""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path


def describe(device: str = "cpu") -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    info = {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "os": platform.platform()}
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
        if device.startswith("cuda") and torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name()
    except ImportError:
        pass
    return info


def best_rate(fn: Callable[[], object], work: float = 1.0, repeats: int = 3) -> float:
    """`work` units (images, steps) per second of the fastest of `repeats` calls of `fn`, after one warm-up:
    the fastest run is the one least disturbed by whatever else the machine was doing."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return work / best


RESULTS = Path(__file__).parent / "results"


def record(name: str, row: dict, machine: dict) -> Path:
    """Append `row`, dated and with the machine, as one JSON line to benchmarks/results/NAME.jsonl."""
    path = RESULTS / f"{name}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps({"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), **row,
                            "machine": machine}) + "\n")
    return path
