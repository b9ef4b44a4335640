"""The house's rules, read from the source: no import cycles, and the layers import only downwards.

gen.cli (the command line) sits on top; gen.train (PyTorch) and gen.export (checkpoint -> bundle) below
it; gen.runtime (torch-free) at the bottom, importing none of the others, so an edge device installs and
runs it alone. The one exception is gen.runtime.cli, the old name of `python -m gen.cli`, kept for systemd
units written by earlier versions: it only imports gen.cli's main.
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
# What each layer may not import (function-level imports included).
FORBIDDEN = {"gen.runtime": ("gen.train", "gen.export", "gen.cli"), "gen.train": ("gen.export", "gen.cli"),
             "gen.export": ("gen.cli",), "gen.models": ("gen.runtime", "gen.train", "gen.export", "gen.cli")}


def module_files() -> dict[str, Path]:
    modules = {}
    for folder, package in PACKAGES.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = path.relative_to(ROOT / folder).with_suffix("").parts
            name = ".".join([package, *parts]).removesuffix(".__init__").removesuffix(".__main__")
            if path.name != "__main__.py":
                modules[name] = path
    return modules


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Every gen module `name` imports, at module level or inside functions."""
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
    return {m for m in found if m in modules and m != name}


def import_graph() -> dict[str, set[str]]:
    modules = module_files()
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


def test_the_graph_is_read():
    graph = import_graph()
    assert len(graph) > 50 and "gen.runtime.engines.ort" in graph["gen.runtime.engines"]  # a function-level import
    assert "gen.train.sample" in graph["gen.export.stylegan"] and "gen.train.checkpoint" in graph["gen.train.trainer"]


def test_no_import_cycles():
    assert find_cycle(import_graph()) is None, " -> ".join(find_cycle(import_graph()))


def test_cycle_finder_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_layers_import_only_downwards():
    wrong = [f"{name} imports {target}" for name, targets in import_graph().items() for target in sorted(targets)
             for layer, banned in FORBIDDEN.items()
             if (name == layer or name.startswith(layer + ".")) and name != ALIAS
             and any(target == b or target.startswith(b + ".") for b in banned)]
    assert not wrong, "\n".join(wrong)
    assert import_graph()[ALIAS] == {"gen.cli"}  # the alias imports nothing else


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
