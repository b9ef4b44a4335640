"""Writing bundles: built in a temporary folder, held to their own golden data, then moved into place.

The format itself (schema, loading, validation) is the runtime's, in gen.runtime.bundle; this is the
only code that writes it.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from gen.runtime.bundle import (
    FORMAT,
    FORMAT_VERSION,
    MANIFEST,
    Bundle,
    FileEntry,
    Manifest,
    is_bundle,
    load_bundle,
    parse,
    sha256_file,
    to_data,
)
from gen.runtime.errors import GenError
from gen.runtime.verify import verify


def gen_version() -> str:
    try:
        return version("gen")
    except PackageNotFoundError:
        return "unknown"


def write_bundle(out: str | Path, fill: Callable[[Path], dict], overwrite: bool = False) -> Bundle:
    """Build a bundle in a temporary folder beside `out`, check it, then move it into place in one rename.

    `fill(folder)` writes the graphs and golden data into `folder` and returns the manifest fields
    other than format, versions, date and files, which are added here. The new bundle must pass its
    own golden data on onnxruntime-cpu before it replaces anything.
    """
    out = Path(out)
    if out.exists() and not (overwrite and is_bundle(out)):
        hint = "pass --overwrite to replace it" if is_bundle(out) else "choose another --out"
        raise GenError(f"'{out}' already exists; {hint}")
    if not out.parent.is_dir():
        raise GenError(f"output folder '{out.parent}' does not exist; create it first")
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    tmp.chmod(0o755)  # mkdtemp makes it private; a bundle is meant to be copied and shared
    try:
        fields = fill(tmp)
        files = {p.name: FileEntry(sha256=sha256_file(p), size=p.stat().st_size)
                 for p in sorted(tmp.iterdir()) if p.name != MANIFEST}
        fields = to_data(dict(format=FORMAT, format_version=FORMAT_VERSION, gen_version=gen_version(),
                              created=datetime.now(timezone.utc).isoformat(timespec="seconds"), files=files, **fields))
        manifest = to_data(parse(fields, Manifest))  # checked, and in the schema's order
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        _check_golden(load_bundle(tmp), out)
        if out.exists():
            old = out.with_name(f".{out.name}.old")
            if old.exists() and not is_bundle(old):
                raise GenError(f"'{old}' is in the way of replacing '{out}' and is not a gen bundle; move it away")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return load_bundle(out)


def _check_golden(bundle: Bundle, out: Path) -> None:
    bad = [c for c in verify(bundle, "cpu") if not c.ok]
    if bad:
        worst = max(bad, key=lambda c: c.rel_l2)
        raise GenError(f"the exported {worst.graph} graph disagrees with PyTorch on its golden data (max abs "
                       f"{worst.max_abs:.2e}, rel L2 {worst.rel_l2:.2e}, {worst.note}); '{out}' was not written")


def extend_bundle(bundle: Bundle, add: Callable[[Path, dict], dict]) -> Bundle:
    """Rewrite a bundle with more files: `add(folder, fields)` writes them and returns the new manifest fields."""
    kept = {"format", "format_version", "gen_version", "created", "files"}

    def fill(folder: Path) -> dict:
        for name in bundle.manifest.files:
            shutil.copy2(bundle.file(name), folder / name)
        fields = to_data(bundle.manifest)
        return add(folder, {k: v for k, v in fields.items() if k not in kept})

    return write_bundle(bundle.path, fill, overwrite=True)
