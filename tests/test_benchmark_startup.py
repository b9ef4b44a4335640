"""What gen.cli does with the garbage collector for start-up speed (benchmarks/startup_speed.py): paused while
modules load, on while a command runs, so that the command's own garbage is still collected."""

from __future__ import annotations

import json
import subprocess
import sys


def run_python(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


def test_no_collection_while_gen_cli_loads():
    """None while its modules load (~30 without the pause), on again once they have. (Compiling gen/cli/__init__.py
    itself, where Python writes no bytecode cache, may set one off before its first line runs.)"""
    code = """
import gc
collections = []
gc.callbacks.append(lambda phase, info: phase == "start" and collections.append(info["generation"]))
import gen.cli
print(len(collections), gc.isenabled())
"""
    count, enabled = run_python(code).split()
    assert int(count) <= 1 and enabled == "True", (count, enabled)


def test_a_command_runs_with_the_collector_on_and_its_garbage_collected():
    """A stand-in for `gen info` (its module loaded and frozen as for any command) that leaves a reference cycle with a
    finalizer behind: the command runs with the collector on, the collector is on after main() in every way out (a
    command, a usage error, no command), and the cycle is collected and finalized by the time the process ends (it
    would not be if what is alive at exit were frozen, as gen once did: this test fails with that version)."""
    code = """
import gc, json, os, sys
import gen.cli, gen.cli.bundles

seen = {}
class Node:
    def __del__(self, write=os.write):
        write(1, b"finalized\\n")

def info():
    seen["on while running"] = gc.isenabled()
    node = Node()
    node.me = node

gen.cli.bundles.info = info
exits = []
for argv in (["no-such-command"], [], ["info"]):  # the command last: its cycle is left for the end
    sys.argv = ["gen", *argv]
    try:
        gen.cli.main()
    except SystemExit as e:
        exits.append(e.code)
    seen[f"on after {argv}"] = gc.isenabled()
print(json.dumps({"seen": seen, "exit": exits[-1]}), flush=True)
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()  # (`gen` alone prints its help; the cycle may be collected before the end)
    report = next(line for line in lines if line.startswith('{"seen"'))
    assert json.loads(report) == {"seen": {"on while running": True, "on after ['info']": True,
                                           "on after ['no-such-command']": True, "on after []": True}, "exit": 0}
    assert "finalized" in lines
