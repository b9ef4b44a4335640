"""A bundle as readable tables, for `gen info` and `gen verify` (the CLI prints them)."""

from __future__ import annotations

from pathlib import Path

from rich.console import RenderableType
from rich.markup import escape
from rich.table import Table

from .bundle import load_bundle, to_data
from .engines import available_engines
from .verify import verify


def info_report(path: Path) -> list[RenderableType]:
    """The manifest: a head table (kind, versions, licence, the model's section), the graphs, the golden data."""
    b = load_bundle(path)
    m = b.manifest
    head = Table(show_header=False, title=escape(f"bundle {path}"))
    for k, v in [("kind", m.kind), ("format", f"{m.format} v{m.format_version}"),
                 ("written by", f"gen {m.gen_version}"), ("created", m.created), ("licence", m.license),
                 ("value range", f"{m.preprocessing.value_range} {m.preprocessing.layout} {m.preprocessing.color}")]:
        head.add_row(escape(k), escape(str(v)))  # (manifest text is data, not markup)
    section = m.stylegan or m.dream
    for k, v in to_data(section).items():
        if k == "w_avg":
            v = f"[{len(v)} values, mean {sum(v) / max(len(v), 1):+.4f}]"
        elif k == "noise_inputs":
            v = f"{len(v)} ({v[0]} ... {v[-1]})" if v else "none"
        head.add_row(escape(k), escape(str(v)))  # (manifest text is data, not markup)
    graphs = Table(title="graphs")
    for col in ("graph", "file", "opset", "inputs", "outputs", "size"):
        graphs.add_column(col)
    for name, g in m.graphs.items():
        ins = ", ".join(f"{t.name} {t.shape}" for t in g.inputs[:3]) + (" ..." if len(g.inputs) > 3 else "")
        outs = ", ".join(f"{t.name} {t.shape}" for t in g.outputs)
        graphs.add_row(escape(name), escape(g.file), str(g.opset), escape(ins), escape(outs),
                       f"{m.files[g.file].size / 1e6:.2f} MB")
    tol = ", ".join(f"{g}: " + " ".join(f"{k} {v:g}" for k, v in to_data(t).items())
                    for g, t in m.golden.tolerances.items())
    return [head, graphs, escape(f"golden: {len(m.golden.cases)} cases in {m.golden.file}; tolerances {tol}")]


def verify_report(path: Path, engine: str = "auto") -> tuple[list[RenderableType], bool]:
    """One row per golden output and engine ('all': every engine here), a verdict line, and whether every
    row is within tolerance."""
    b = load_bundle(path)
    engines = available_engines() if engine == "all" else [engine]
    table = Table(title=escape(f"verify {path}"))
    for col in ("engine", "graph", "case", "max abs", "rel L2", "tolerance", "ok"):
        table.add_column(col)
    all_ok = True
    for eng in engines:
        for c in verify(b, eng):
            tol = " ".join(f"{k} {v:g}" for k, v in (("max_abs", c.tol_max_abs), ("rel_l2", c.tol_rel_l2)) if v)
            tol += f" PSNR {c.psnr_db:.1f} >= {c.tol_psnr_db:g} dB" if c.tol_psnr_db else ""
            table.add_row(escape(c.engine), escape(f"{c.graph}.{c.output}"), escape(c.note), f"{c.max_abs:.2e}",
                          f"{c.rel_l2:.2e}", tol,
                          "[green]ok[/]" if c.ok else "[red]FAIL[/]")
            all_ok &= c.ok
    verdict = "[green]all within tolerance[/]" if all_ok else "[red]some outputs are outside tolerance[/]"
    return [table, verdict], all_ok
