"""`gen verify`: run a bundle's golden inputs through an engine and compare with the PyTorch outputs.

Each graph on its golden cases, and then what the manifest adds on the way to a picture: a stylegan
bundle's seeds drawn by the runtime itself (w_avg, default psi, value range, the order of the noise inputs),
a dream bundle's images mapped through its preprocessing as `gen dream` maps them.
"""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass

import numpy as np

from .bundle import Bundle, DreamRun, PictureCase, Tolerance
from .dream.engine import bundle_engine
from .dream.loop import DreamEngine, DreamSettings, dream_planes
from .engines import Runner, open_runner
from .errors import GenError
from .stylegan.generator import BundleGenerator

# The FP16 bound when a bundle states none: PSNR 50 dB is an RMS error of 0.3% of the value range, under
# one 8-bit level; FP16 synthesis measures ~80 dB on onnxruntime (export/fp16.py), a wrong op < 30 dB.
FP16_PSNR_DB = 50.0
# Pictures drawn by the runtime against PyTorch's, in 8-bit levels. FP32 engines differ from PyTorch by ~1e-5 of
# the value range: one level where a value sits at a rounding tie. A wrong w_avg, psi or value range moves whole
# pictures; PSNR 50 dB over 255 is an RMS error of 0.8 levels, 40 dB (FP16) 2.5 levels.
PICTURE_MAX_LEVELS = 2.0
PICTURE_PSNR_DB = 50.0
PICTURE_FP16_PSNR_DB = 40.0
# The styles of those pictures, whatever the manifest's mapping tolerance: FP32 engines agree with PyTorch to ~1e-7,
# while a default psi or w_avg off by 1e-3 moves them by about as much.
STYLES_REL_L2 = 1e-4
# A golden dream redreamed by the runtime (relative L2). Its images are not chosen away from ReLU kinks as the
# golden gradient images are, so a unit that rounds the other way on another engine or thread count can turn
# a step: measured 3e-6 (dream-lite0, block9) to 1.5e-3 (tests' shallow layers, one thread); an octave more or
# less (min_size off by one pixel) moves it by ~0.3.
DREAM_REL_L2 = 2e-2


@dataclass
class Check:
    graph: str
    output: str
    note: str
    engine: str
    max_abs: float
    rel_l2: float
    tol_max_abs: float | None
    tol_rel_l2: float | None
    psnr_db: float = float("inf")
    tol_psnr_db: float | None = None

    @property
    def ok(self) -> bool:
        return (self.tol_max_abs is None or self.max_abs <= self.tol_max_abs) and (
            self.tol_rel_l2 is None or self.rel_l2 <= self.tol_rel_l2) and (
            self.tol_psnr_db is None or self.psnr_db >= self.tol_psnr_db)


def relative_l2(got: np.ndarray, want: np.ndarray) -> float:
    """|got - want| / |want| in the L2 norm (inf when the shapes differ)."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    if got.shape != want.shape:
        return float("inf")
    with np.errstate(all="ignore"):
        return float(np.linalg.norm(got - want) / max(np.linalg.norm(want), 1e-30))


def errors(got: np.ndarray, want: np.ndarray) -> tuple[float, float]:
    """Max absolute difference and relative L2 norm of the difference."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    if got.shape != want.shape:
        return float("inf"), float("inf")
    with np.errstate(all="ignore"):
        return float(np.abs(got - want).max(initial=0.0)), relative_l2(got, want)


def psnr(got: np.ndarray, want: np.ndarray, peak: float | None = None) -> float:
    """Peak signal-to-noise ratio in dB (inf when equal, -inf when the shapes differ). The peak is `peak`
    (255 for 8-bit pictures), or by default the reference's own value range."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    if got.shape != want.shape:
        return float("-inf")
    with np.errstate(all="ignore"):  # golden data of huge or non-finite values gives inf/nan, a FAIL, not a warning
        mse = float(np.mean((got - want) ** 2))
        if peak is None:
            peak = float(want.max(initial=0.0) - want.min(initial=0.0)) or 1.0
        return float("inf") if mse == 0 else float(10 * np.log10(peak**2 / mse))


def tolerance_for(bundle: Bundle, graph: str, precision: str = "fp32") -> Tolerance:
    """The graph's tolerance; an FP16 engine of it is held to `<graph>_fp16` (PSNR) where the bundle has one."""
    tols = bundle.manifest.golden.tolerances
    if precision == "fp16" and not graph.endswith("_fp16"):
        return tols.get(f"{graph}_fp16") or Tolerance(psnr_db=FP16_PSNR_DB)
    return tols[graph]


def verify(bundle: Bundle, engine: str = "auto") -> list[Check]:
    """Each golden case through `engine`, one Check per expected output, then the pictures; the runners are
    closed after."""
    m = bundle.manifest
    checks = []
    with ExitStack() as runners_open:
        runners: dict[str, Runner] = {}
        gen = None
        if m.kind == "stylegan":  # its mapping and synthesis runners serve the graph cases too
            gen = runners_open.enter_context(BundleGenerator(bundle, engine))
            runners |= {"mapping": gen.mapping, "synthesis": gen.synthesis}
        for graph in dict.fromkeys(c.graph for c in m.golden.cases):
            if graph not in runners:
                runners[graph] = runners_open.enter_context(open_runner(bundle, graph, engine))
        # golden data after the graphs: a manifest that contradicts a graph is told as that, not as bad golden data
        golden = bundle.golden()
        scale, offset = m.preprocessing.affine()
        for case in m.golden.cases:
            runner = runners[case.graph]
            feeds = {name: golden[key] for name, key in case.inputs.items()}
            wants = {name: golden[key] for name, key in case.outputs.items()}
            # dream golden images are [0, 1] pictures: the graph sees them preprocessed, its gradient is scaled back
            if m.kind == "dream" and "image" in feeds:
                with np.errstate(over="ignore", invalid="ignore"):  # (absurd golden values FAIL, quietly)
                    feeds["image"] = feeds["image"] * scale + offset
            outs = runner.run(feeds)
            if m.kind == "dream" and "image" in feeds and "grad" in outs:  # (chain rule)
                outs["grad"] = outs["grad"] * scale
            tol = tolerance_for(bundle, case.graph, runner.precision)
            for name, want in wants.items():
                max_abs, rel = errors(outs[name], want)
                checks.append(Check(case.graph, name, case.note, runner.name, max_abs, rel, tol.max_abs, tol.rel_l2,
                                    psnr(outs[name], want), tol.psnr_db))
        for picture in m.golden.pictures:
            checks += picture_checks(bundle, golden, gen, picture)
        if m.golden.dreams:
            dreamer = runners_open.enter_context(bundle_engine(bundle, engine))
            checks += [dream_check(bundle, golden, dreamer, run) for run in m.golden.dreams]
    return checks


def dream_check(bundle: Bundle, golden: dict[str, np.ndarray], dreamer: DreamEngine, run: DreamRun) -> Check:
    """A golden dream again, through the runtime's loop with the manifest's min_size (which octaves run)."""
    settings = DreamSettings(octaves=run.octaves, octave_scale=run.octave_scale, iterations=run.iterations,
                             step=run.step, jitter=run.jitter, tile=0, min_side=dreamer.min_side, seed=run.seed)
    want = golden[run.result]
    try:
        got = dream_planes(golden[run.image], dreamer.gradient, settings)
    except GenError:  # (the golden image is below the manifest's min_size: not the dream PyTorch dreamed)
        got = np.full_like(want, np.nan)
    max_abs, rel = errors(got, want)
    return Check("dream", "image", run.note, dreamer.description.rpartition(" on ")[2], max_abs, rel, None,
                 DREAM_REL_L2, psnr(got, want, 1.0))


def picture_checks(bundle: Bundle, golden: dict[str, np.ndarray], gen: BundleGenerator,
                   case: PictureCase) -> list[Check]:
    """Seeds drawn as `gen sample` draws them (default psi, the case's class; constant noise, or with --noise-mode
    random each seed's own noise): their styles against PyTorch's (mapping's tolerance) and their pictures against
    PyTorch's, in 8-bit levels."""
    want_ws, want_img = golden[case.ws], golden[case.image]
    camera = None if case.camera is None else np.asarray(case.camera, np.float32).reshape(3, 3)
    ws, img = gen.draw(case.seeds, gen.psi(None), noise_mode=case.noise, class_idx=case.class_index, camera=camera)
    note = case.note or f"seeds {case.seeds}, {case.noise} noise"
    tol = tolerance_for(bundle, "mapping", gen.mapping.precision)
    if gen.mapping.precision != "fp16":
        tol = Tolerance(rel_l2=min(tol.rel_l2 or STYLES_REL_L2, STYLES_REL_L2))
    max_abs, rel = errors(ws, want_ws)
    checks = [Check("pictures", "ws", note, gen.mapping.name, max_abs, rel, tol.max_abs, tol.rel_l2,
                    psnr(ws, want_ws), tol.psnr_db)]
    fp16 = gen.synthesis.precision == "fp16"
    max_abs, rel = errors(img, want_img)
    checks.append(Check("pictures", "image", note, gen.engine, max_abs, rel, None if fp16 else PICTURE_MAX_LEVELS,
                        None, psnr(img, want_img, 255.0), PICTURE_FP16_PSNR_DB if fp16 else PICTURE_PSNR_DB))
    return checks
