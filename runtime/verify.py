"""`gen verify`: run a bundle's golden inputs through an engine and compare with the PyTorch outputs."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .bundle import Bundle, BundleError
from .runners import open_runner


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

    @property
    def ok(self) -> bool:
        return (self.tol_max_abs is None or self.max_abs <= self.tol_max_abs) and (
            self.tol_rel_l2 is None or self.rel_l2 <= self.tol_rel_l2)


def errors(got: np.ndarray, want: np.ndarray) -> tuple[float, float]:
    """Max absolute difference and relative L2 norm of the difference."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    if got.shape != want.shape:
        return float("inf"), float("inf")
    diff = got - want
    return float(np.abs(diff).max(initial=0.0)), float(np.linalg.norm(diff) / max(np.linalg.norm(want), 1e-30))


def verify(bundle: Bundle, engine: str = "auto") -> list[Check]:
    m = bundle.manifest
    golden = bundle.golden()
    runners = {}
    checks = []
    for case in m.golden.cases:
        runner = runners.get(case.graph) or runners.setdefault(case.graph, open_runner(bundle, case.graph, engine))
        try:
            feeds = {name: golden[key] for name, key in case.inputs.items()}
            wants = {name: golden[key] for name, key in case.outputs.items()}
        except KeyError as e:
            raise BundleError(f"{bundle.path}: golden data lacks {e}; re-export the bundle") from None
        outs = runner.run(feeds)
        tol = m.golden.tolerances[case.graph]
        for name, want in wants.items():
            max_abs, rel = errors(outs[name], want)
            checks.append(Check(case.graph, name, case.note, runner.name, max_abs, rel, tol.max_abs, tol.rel_l2))
    return checks
