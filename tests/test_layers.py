"""The house's rules, read from the source: no import cycles, and the layers import only downwards.

gen.cli (the command line) sits on top; gen.train (PyTorch) and gen.export (checkpoint -> bundle) below
it; gen.runtime (torch-free) at the bottom, importing none of the others, so an edge device installs and
runs it alone. The one exception is gen.runtime.cli, the old name of `python -m gen.cli`, kept for systemd
units written by earlier versions: it only imports gen.cli's main.

Inside the runtime, too, imports go one way: the basics (errors, files, progress, images, video, latents
and the bundle contract) at the bottom, then the engines, then stylegan and dream side by side, then the
kiosk; verify and report above the engines, report only for the command line. RULES says what each may
not import and why.

The graph holds every import, at module level or inside functions, and what each import runs first:
importing a.b.c runs a/__init__ and a.b/__init__ before a.b.c, so a module has an edge to each package
above what it imports, except its own packages (already running when it runs).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"cli": "gen.cli", "runtime": "gen.runtime", "train": "gen.train", "export": "gen.export",
            "models": "gen.models"}
ALIAS = "gen.runtime.cli"
BASICS = ("gen.runtime.errors", "gen.runtime.files", "gen.runtime.progress", "gen.runtime.images",
          "gen.runtime.video", "gen.runtime.latents", "gen.runtime.bundle")
SUBPACKAGES = ("gen.runtime.engines", "gen.runtime.stylegan", "gen.runtime.dream", "gen.runtime.kiosk")
# (who, what it may not import, why). A name stands for its submodules too; the alias is checked on its own.
RULES = [
    (("gen.runtime",), ("gen.train", "gen.export", "gen.cli"),
     "the runtime is torch-free: an edge device installs and runs it alone"),
    (("gen.train",), ("gen.export", "gen.cli"), "training is a library that export and the command line call"),
    (("gen.export",), ("gen.cli",), "export is a library that the command line calls"),
    (("gen.models",), ("gen.runtime", "gen.train", "gen.export", "gen.cli"), "the shipped bundles are data"),
    (BASICS, (*SUBPACKAGES, "gen.runtime.verify", "gen.runtime.report"),
     "the basics are what every part of the runtime uses; they use none of the parts"),
    (("gen.runtime.engines",), ("gen.runtime.stylegan", "gen.runtime.dream", "gen.runtime.kiosk",
                                "gen.runtime.verify", "gen.runtime.report"),
     "an engine runs any bundle's graphs; what the graphs are for (and checking them) lives above it"),
    (("gen.runtime.stylegan",), ("gen.runtime.dream", "gen.runtime.kiosk"),
     "stylegan stands alone beside dream; the kiosk shows its walks, it does not know the kiosk"),
    (("gen.runtime.dream",), ("gen.runtime.stylegan", "gen.runtime.kiosk"),
     "dream stands alone beside stylegan; the kiosk shows its dreams, it does not know the kiosk"),
    (("gen.runtime",), ("gen.runtime.report", ALIAS),
     "presentation for the command line: report words `gen info` and `gen verify`; the alias is gen.cli itself"),
]
# (who, all it may import of the runtime, why)
ONLY = [
    ("gen.runtime.bundle", ("gen.runtime.errors", "gen.runtime.latents"),
     "the bundle contract, written by export and read by every engine, depends on no other part of the runtime"),
]


def under(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def packages_above(name: str) -> set[str]:
    """gen.a.b.c -> {gen, gen.a, gen.a.b}: the packages whose __init__ runs before gen.a.b.c."""
    parts = name.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts))}


def module_files(root: Path = ROOT, packages: dict[str, str] = PACKAGES) -> dict[str, Path]:
    modules = {}
    for folder, package in packages.items():
        for path in sorted((root / folder).rglob("*.py")):
            parts = path.relative_to(root / folder).with_suffix("").parts
            name = ".".join([package, *parts]).removesuffix(".__init__").removesuffix(".__main__")
            if path.name != "__main__.py":
                modules[name] = path
    return modules


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Every gen module that importing `name` runs: what it imports, at module level or inside functions, and
    the packages above those, but for `name`'s own packages (running already when `name` runs)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([node.module] if node.module else []))
            for a in node.names:  # `from pkg import module` imports the module; `from mod import name`, mod
                found.add(f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base)
    found |= {above for m in found for above in packages_above(m)} - packages_above(name)
    return {m for m in found if m in modules and m != name}


def import_graph(root: Path = ROOT, packages: dict[str, str] = PACKAGES) -> dict[str, set[str]]:
    modules = module_files(root, packages)
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def broken_rules(graph: dict[str, set[str]]) -> list[str]:
    """'NAME imports TARGET: why not' for each import RULES or ONLY forbid."""
    wrong = [f"{name} imports {target}: {why}" for name, targets in graph.items() for target in sorted(targets)
             for who, banned, why in RULES
             if name != ALIAS and any(under(name, w) for w in who) and any(under(target, b) for b in banned)]
    wrong += [f"{name} imports {target}: {why}" for name, targets in graph.items() for target in sorted(targets)
              for who, allowed, why in ONLY
              if under(name, who) and under(target, "gen.runtime") and not any(under(target, a) for a in allowed)]
    return wrong


def test_the_graph_is_read():
    graph = import_graph()
    assert len(graph) > 50 and "gen.runtime.engines.ort" in graph["gen.runtime.engines"]  # a function-level import
    assert "gen.train.sample" in graph["gen.export.stylegan"] and "gen.train.checkpoint" in graph["gen.train.trainer"]
    # scenes imports gen.runtime.dream.feedback, which runs gen.runtime.dream first; gen.runtime.kiosk runs already
    scenes = graph["gen.runtime.kiosk.scenes"]
    assert "gen.runtime.dream" in scenes and "gen.runtime.dream.loop" in scenes and "gen.runtime.kiosk" not in scenes


def test_the_graph_has_the_packages_an_import_runs(tmp_path):
    """`import gen.app.b.y` runs gen.app.b/__init__ first; a package importing its own submodules is no cycle."""
    tree = {"__init__.py": "",
            "a/__init__.py": "from .x import X\nfrom gen.app.b.y import Y\n",  # its own submodule, and another's
            "a/x.py": "def f():\n    from gen.app.a.z import Z\n",  # a sibling: gen.app.a is running already
            "a/z.py": "Z = 1\n",
            "b/__init__.py": "",
            "b/y.py": "Y = 2\n"}
    for name, text in tree.items():
        (tmp_path / "app" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "app" / name).write_text(text)
    graph = import_graph(tmp_path, {"app": "gen.app"})
    assert graph == {"gen.app": set(), "gen.app.a": {"gen.app.a.x", "gen.app.b", "gen.app.b.y"},
                     "gen.app.a.x": {"gen.app.a.z"}, "gen.app.a.z": set(), "gen.app.b": set(), "gen.app.b.y": set()}
    assert find_cycle(graph) is None
    # b.y importing a.z runs a/__init__, which imports b.y: importing gen.app.b.y first fails
    (tmp_path / "app/b/y.py").write_text("from gen.app.a.z import Z\nY = Z\n")
    graph = import_graph(tmp_path, {"app": "gen.app"})
    assert graph["gen.app.b.y"] == {"gen.app.a", "gen.app.a.z"}
    assert find_cycle(graph) == ["gen.app.a", "gen.app.b.y", "gen.app.a"]


def test_no_import_cycles():
    assert find_cycle(import_graph()) is None, " -> ".join(find_cycle(import_graph()))


def test_cycle_finder_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_layers_import_only_downwards():
    graph = import_graph()
    assert not (wrong := broken_rules(graph)), "\n".join(wrong)
    assert graph[ALIAS] == {"gen.cli"}  # the alias imports nothing else


def test_every_rule_can_fail():
    """Each forbidden import, added to the real graph, is reported (so a rule that names no module is caught)."""
    graph = import_graph()
    for who, banned, why in RULES:
        for name in who:
            for target in banned:
                assert name in graph and target in graph, (name, target)  # the rule names real modules
                assert f"{name} imports {target}: {why}" in broken_rules({**graph, name: graph[name] | {target}})
    for name, allowed, why in ONLY:
        for target in sorted(set(graph) - set(allowed)):
            if under(target, "gen.runtime") and target != name:
                assert f"{name} imports {target}: {why}" in broken_rules({**graph, name: graph[name] | {target}})


def test_every_runtime_module_imports_without_torch_train_or_export():
    """As on an edge device: torch (and what only training needs) is absent, and so are gen.train and gen.export."""
    code = """
import importlib, pkgutil, sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('torch', 'safetensors', 'onnxscript', 'onnx', 'onnxslim') \\
                or name.startswith(('gen.train', 'gen.export')):
            raise ImportError('blocked: ' + name)
sys.meta_path.insert(0, Block())
import gen.runtime
names = [m.name for m in pkgutil.walk_packages(gen.runtime.__path__, 'gen.runtime.')]
for name in names:
    importlib.import_module(name)
assert not [m for m in sys.modules if m.split('.')[0] == 'torch' or m.startswith(('gen.train', 'gen.export'))]
print(len(names))
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert int(proc.stdout) >= 30  # the subpackages were walked, not only the top level
