"""Kiosk speed and memory: how fast frames are made, how steadily they are shown, whether memory stays flat.

    python benchmarks/kiosk_speed.py [BUNDLE] [--engine cpu] [--fps FPS] [--soak-minutes 2] [--size 1920x1080]
                                     [--photo models/photos/chelsea.jpg] [--dream-size 384] [--label after]

BUNDLE defaults to the shipped models/emoji (stylegan) bundle: an endless walk. A dream bundle (the
shipped models/dream-lite0) dreams slow zooms into --photo at gen kiosk's defaults (a keyframe every
--speed seconds, --dream-size px on the long side). Three measurements, in one process:
- render: the scene's frames rendered one batch at a time in this thread (no display): frames/s (for a
  dream, over several keyframes: their dreaming and the frames in between);
- display: gen kiosk's window (SDL's dummy video driver, so no screen is needed, but smoothscale to the
  window size is real work) at --fps for --soak-minutes: the fps held, frame-time percentiles (time between
  new frames on the screen), late frames (over 1.5 beats) and frames over 20 ms, the CPU the process used
  (in cores), and its RSS at the start, after the first minute and at the end of the soak; every
  --memory-every seconds a memory row beside it (printed, and stored as "memory"): RSS, the producer's
  queue (maxsize, frames in it, the bytes they hold and keep alive), frames made, and glibc malloc's
  own count (bytes in use, free but kept, mmapped), how often the producer gave malloc's free pages
  back, the scenes not yet freed and Python's full garbage collections so far, so that a reader sees what
  RSS follows; with
  --tracemalloc, the Python allocations grown between the first minute and the end (top lines);
- uncapped: the same window with no fps limit for 10 s: the most frames/s the producer and display give.
Appends the results with the machine's description to benchmarks/results/kiosk_speed.jsonl.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import os
import random
import sys
import time
import weakref
from dataclasses import replace
from pathlib import Path

import numpy as np
from machine import describe, gen_malloc, record

from gen.runtime.bundle import load_bundle
from gen.runtime.kiosk.display import Window, show
from gen.runtime.kiosk.player import Player
from gen.runtime.kiosk.run import make_producer, open_model
from gen.runtime.kiosk.scenes import DreamScene, WalkScene, fit_long_side
from gen.runtime.kiosk.settings import KioskSettings

MODELS = Path(__file__).resolve().parents[1] / "models"
DEFAULT_BUNDLE = MODELS / "emoji"
DEFAULT_PHOTO = MODELS / "photos" / "chelsea.jpg"


def rss_mib() -> float:
    with open("/proc/self/status", encoding="utf-8") as f:
        kib = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    return kib / 1024


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                      "fsmblks", "uordblks", "fordblks", "keepcost")]


def malloc_mib() -> dict:
    """glibc malloc's own view over all its arenas (mallinfo2, glibc >= 2.33): bytes in use, free but kept
    (fragmentation and not-yet-trimmed tops), and the large blocks it mmapped; {} where there is no mallinfo2."""
    try:
        fn = ctypes.CDLL(None).mallinfo2
    except (AttributeError, OSError):
        return {}
    fn.restype = _MallInfo2
    m = fn()
    mib = 1 / (1 << 20)
    return {"malloc_used_mib": round(m.uordblks * mib, 1), "malloc_free_mib": round(m.fordblks * mib, 1),
            "malloc_mmap_mib": round(m.hblkhd * mib, 1), "malloc_heap_mib": round(m.arena * mib, 1)}


def queue_state(producer) -> dict:
    """The producer's queue now: its bound, the frames in it, their bytes, and the bytes they keep alive (a
    frame that is a view of a batch keeps the whole batch: counted once per distinct buffer)."""
    q = producer.queue
    with q.mutex:
        frames = [f for _, f in q.queue]
        maxsize = q.maxsize
    buffers = {}
    for f in frames:
        base = f
        while isinstance(base.base, np.ndarray):
            base = base.base
        buffers[id(base)] = base.nbytes
    mib = 1 / (1 << 20)
    return {"queue_maxsize": maxsize, "queue_frames": len(frames),
            "queue_frames_mib": round(sum(f.nbytes for f in frames) * mib, 1),
            "queue_held_mib": round(sum(buffers.values()) * mib, 1),
            "frame_kib": round(frames[0].nbytes / 1024, 1) if frames else None}


def memory_row(t: float, producer, scenes: weakref.WeakSet) -> dict:
    """`scenes`: every scene the producer made; those not yet freed (the one playing, and any finished one that
    something, a reference cycle, still holds until Python's full garbage collection) count as alive."""
    row = {"t_s": round(t), "rss_mib": round(rss_mib(), 1), **queue_state(producer), "produced": producer.produced,
           "scenes_alive": len(scenes),
           "gc_full_collections": gc.get_stats()[2]["collections"], **malloc_mib()}
    import tracemalloc

    if tracemalloc.is_tracing():
        row["traced_mib"] = round(tracemalloc.get_traced_memory()[0] / (1 << 20), 1)
    return row


def memory_line(row: dict) -> str:
    line = (f"  t {row['t_s']:4d} s  RSS {row['rss_mib']:6.1f} MiB  queue {row['queue_frames']:3d}/"
            f"{row['queue_maxsize']:3d} frames {row['queue_held_mib']:5.1f} MiB held  made {row['produced']:6d}")
    if "malloc_used_mib" in row:
        line += (f"  malloc used {row['malloc_used_mib']:6.1f} free {row['malloc_free_mib']:6.1f} "
                 f"mmap {row['malloc_mmap_mib']:6.1f} MiB")
    line += f"  scenes alive {row['scenes_alive']}  full gc {row['gc_full_collections']}"
    if "traced_mib" in row:
        line += f"  traced {row['traced_mib']:.1f} MiB"
    return line


TRACE_FRAMES = 8  # the callers kept with each traced allocation: where it was made, and from where


def tracemalloc_growth(first, last, top: int = 10) -> list[dict]:
    """The call paths whose Python allocations (numpy's arrays included) grew most from snapshot `first` to
    `last`, innermost frame first."""
    stats = last.compare_to(first, "traceback")
    out = []
    for st in sorted(stats, key=lambda s: s.size_diff, reverse=True)[:top]:
        where = [f"{Path(f.filename).name}:{f.lineno}" for f in reversed(st.traceback)]  # (innermost first)
        out.append({"where": " < ".join(where), "grew_kib": round(st.size_diff / 1024, 1),
                    "now_kib": round(st.size / 1024, 1), "blocks_grew": st.count_diff})
    return out


def percentiles_ms(intervals: np.ndarray) -> dict:
    p50, p95, p99 = (float(v) for v in np.percentile(intervals, [50, 95, 99]) * 1000)
    return {"p50_ms": round(p50, 2), "p95_ms": round(p95, 2), "p99_ms": round(p99, 2),
            "max_ms": round(float(intervals.max()) * 1000, 2)}


def render_rate(bundle, settings: KioskSettings, engine: str, seconds: float = 5.0) -> dict:
    """Frames/s of the scene's rendering alone, batch by batch, in this thread."""
    with open_model(bundle, engine) as model:
        if bundle.manifest.kind == "dream":
            from gen.runtime.images import load_image

            min_side = bundle.manifest.dream.min_size
            photo = fit_long_side(load_image(settings.photos[0], min_size=min_side), settings.size, min_side)
            about = {"engine": engine, "resolution": list(photo.shape[:2])}
            scene = DreamScene(photo, replace(settings.dream, min_side=min_side),
                               replace(settings.paced_feedback(), frames=10**6),
                               tween=round(settings.speed * settings.fps))
            seconds = max(seconds, 3 * settings.speed)  # a few keyframes
        else:
            about = {"engine": model.engine, "resolution": model.meta.resolution}
            scene = WalkScene(list(range(100)), settings.paced_walk(), random.Random(0))
        scene.render(model)  # warm-up
        frames, batches, start = 0, [], time.perf_counter()
        while time.perf_counter() - start < seconds:
            t0 = time.perf_counter()
            frames += len(scene.render(model))
            batches.append(time.perf_counter() - t0)
        elapsed = time.perf_counter() - start
    return {"frames_per_s": round(frames / elapsed, 1), "batch_ms_p50": round(float(np.median(batches)) * 1000, 2),
            "batch_ms_max": round(max(batches) * 1000, 1), **about}


def display_run(bundle, settings: KioskSettings, engine: str, fps: float, seconds: float, size: tuple[int, int],
                rss_every: float = 5.0, memory_every: float = 0.0, trace: bool = False) -> dict:
    """Show the kiosk window for `seconds`; time every new frame (preallocated: the soak itself stays flat).

    Every `memory_every` seconds (0: never) a memory row (memory_row) is printed and kept; with `trace`,
    tracemalloc runs and the Python allocations grown from the first minute to the end are returned."""
    import tracemalloc

    os.environ["SDL_VIDEODRIVER"] = "dummy"
    if trace:
        tracemalloc.start(TRACE_FRAMES)
    producer = make_producer(bundle, settings, list(range(100)), engine)
    made = weakref.WeakSet()  # the scenes made: how many are not freed yet
    new_scene = producer.new_scene
    producer.new_scene = lambda: (made.add(scene := new_scene()), scene)[1]
    producer.start()
    player = Player(producer)
    stamps = np.zeros(int(seconds * min(fps, 2000) * 1.5) + 100)
    rss: list[float] = []  # one sample per rss_every seconds: a few dozen numbers
    memory: list[dict] = []  # one row per memory_every seconds
    snapshots: list = []  # tracemalloc: after the first minute, at the end
    state = {"n": 0, "start": None, "next_rss": 0.0, "next_memory": 0.0}

    def on_frame(frame, screen) -> None:
        now = time.perf_counter()
        if state["start"] is None:
            state["start"] = now
        if now - state["start"] >= seconds or state["n"] >= len(stamps):
            player.press("q")
            return
        stamps[state["n"]] = now
        state["n"] += 1
        if now - state["start"] >= state["next_rss"]:
            rss.append(rss_mib())
            state["next_rss"] += rss_every
        if memory_every and now - state["start"] >= state["next_memory"]:
            memory.append(memory_row(now - state["start"], producer, made))
            print(memory_line(memory[-1]), flush=True)
            state["next_memory"] += memory_every
        if trace and not snapshots and now - state["start"] >= 60:
            snapshots.append(tracemalloc.take_snapshot())

    cpu_start, wall_start = os.times(), time.perf_counter()
    try:
        show(player, fps, Window(windowed=True, size=size), on_frame=on_frame)
        if memory_every:  # the end of the soak, before the producer stops
            memory.append(memory_row(time.perf_counter() - state["start"], producer, made))
            print(memory_line(memory[-1]), flush=True)
        if trace and snapshots:
            snapshots.append(tracemalloc.take_snapshot())
    finally:
        producer.stop()
        if trace:
            tracemalloc.stop()
    cpu_end, wall = os.times(), time.perf_counter() - wall_start
    times = stamps[: state["n"]]
    warm = times[times >= times[0] + 1.0]  # the first second fills the queue and warms the engine
    intervals = np.diff(warm)
    out = {"target_fps": fps, "seconds": seconds, "frames": int(len(times)),
           "fps": round(float((len(warm) - 1) / (warm[-1] - warm[0])), 2), **percentiles_ms(intervals),
           "late_frames": int((intervals > 1.5 / fps).sum()) if fps < 1000 else None,
           "over_20ms": int((intervals > 0.020).sum()),
           "cpu_cores_used": round((cpu_end.user + cpu_end.system - cpu_start.user - cpu_start.system) / wall, 2),
           "producer_errors": producer.errors}
    if len(rss) > 1:
        out.update({"rss_start_mib": round(rss[1], 1), "rss_end_mib": round(rss[-1], 1),
                    "rss_max_mib": round(max(rss[1:]), 1), "rss_samples": len(rss) - 1})
        settled = int(60 / rss_every)  # after the first minute: the queue has grown to its size, the engine warmed up
        if len(rss) > settled + 1:
            out.update({"rss_1min_mib": round(rss[settled], 1),
                        "rss_growth_after_1min_mib": round(rss[-1] - rss[settled], 1)})
    if memory:
        out["memory"] = memory
    if len(snapshots) == 2:
        out["tracemalloc_growth_after_1min"] = tracemalloc_growth(*snapshots)
        for g in out["tracemalloc_growth_after_1min"]:
            print(f"  python allocations +{g['grew_kib']} KiB ({g['blocks_grew']:+d} blocks) at {g['where']}")
    return out


def summary(name: str, run: dict) -> str:
    """One line: the fps held, frame-time percentiles and memory."""
    line = (f"{name}: {run['fps']:.2f} fps (target {run['target_fps']:g}), frame time p50 {run['p50_ms']:.1f} "
            f"p95 {run['p95_ms']:.1f} p99 {run['p99_ms']:.1f} max {run['max_ms']:.1f} ms, "
            f"{run['over_20ms']} over 20 ms, {run['cpu_cores_used']:.2f} cores busy")
    if "rss_start_mib" in run:
        line += f"; RSS start {run['rss_start_mib']} end {run['rss_end_mib']} max {run['rss_max_mib']} MiB"
    return line


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bundle", nargs="?", default=str(DEFAULT_BUNDLE))
    ap.add_argument("--engine", default="cpu")
    ap.add_argument("--fps", type=float, default=KioskSettings.fps, help="the display's target (gen kiosk's default)")
    ap.add_argument("--speed", type=float, default=4.0, help="seconds per seed (walk) or per keyframe (dream)")
    ap.add_argument("--photo", default=str(DEFAULT_PHOTO), help="dream: the photo dreamed on")
    ap.add_argument("--dream-size", type=int, default=384, help="dream: long side of the dreamed picture")
    ap.add_argument("--soak-minutes", type=float, default=2.0)
    ap.add_argument("--glibc-malloc", action="store_true", help="keep glibc's default malloc settings (gen kiosk "
                    "makes gen.runtime.memory's), to compare")
    ap.add_argument("--size", default="1920x1080", help="window size (SDL dummy driver)")
    ap.add_argument("--memory-every", type=float, default=30.0,
                    help="seconds between memory rows in the soak (RSS, queue, malloc); 0: none")
    ap.add_argument("--tracemalloc", action="store_true",
                    help="trace Python allocations in the soak and print those grown after the first minute "
                         "(slows the frame thread: for finding a leak, not for timing)")
    ap.add_argument("--label", default="", help="a word recorded with the row (e.g. before, after)")
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args()
    # as `gen kiosk` runs (the CLI makes it first); --glibc-malloc: glibc's defaults, to see what it changes
    malloc = gen_malloc(not args.glibc_malloc)
    if not Path(args.bundle).is_dir():
        ap.error(f"no bundle at {args.bundle}: give a stylegan or dream bundle folder")
    bundle = load_bundle(args.bundle)
    if bundle.manifest.kind not in ("stylegan", "dream"):
        ap.error("this benchmark plays a stylegan bundle (an endless walk) or a dream bundle (dream zooms)")
    size = tuple(int(v) for v in args.size.split("x"))
    machine = describe()
    load_start = os.getloadavg()
    print(f"machine: {machine}; load average {load_start}")
    settings = KioskSettings(fps=args.fps, speed=args.speed, photos=(Path(args.photo),), size=args.dream_size)
    render = render_rate(bundle, settings, args.engine)
    print(f"render: {render}")
    if not args.memory_every >= 0:
        ap.error("--memory-every must be 0 (none) or more seconds")
    soak = display_run(bundle, settings, args.engine, args.fps, args.soak_minutes * 60, size,
                       memory_every=args.memory_every, trace=args.tracemalloc)
    print(f"display at {args.fps:g} fps for {args.soak_minutes:g} min: "
          f"{ {k: v for k, v in soak.items() if k not in ('memory', 'tracemalloc_growth_after_1min')} }")
    print(summary("display", soak))
    # (uncapped: the queue stays ~30 frames deep, not 1 s of 1000 fps; a dream's segments get 1000 fps x --speed frames)
    uncapped = display_run(bundle, replace(settings, fps=1000.0, ahead=0.03), args.engine, 1000.0, 10.0, size)
    print(f"uncapped: {uncapped}")
    print(summary("uncapped", uncapped))
    print(f"load average at the end {os.getloadavg()}")
    if not args.no_record:
        labelled = {"label": args.label} if args.label else {}
        record("kiosk_speed", {**labelled, "bundle": Path(args.bundle).name, "kind": bundle.manifest.kind,
                               "command": " ".join(["python", "benchmarks/kiosk_speed.py", *sys.argv[1:]]),
                               **({"photo": Path(args.photo).name, "dream_size": args.dream_size}
                                  if bundle.manifest.kind == "dream" else {}),
                               "malloc": malloc,
                               "malloc_env": {k: v for k, v in os.environ.items() if k.startswith("MALLOC_")},
                               "window": args.size, "render": render, "display": soak, "uncapped": uncapped,
                               "load_average_start": load_start, "load_average": os.getloadavg()}, machine)


if __name__ == "__main__":
    main()
