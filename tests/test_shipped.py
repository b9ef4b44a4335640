"""The bundles shipped in models/ load, pass their golden data, and make pictures."""

from __future__ import annotations

from pathlib import Path

import pytest

from gen.runtime.bundle import is_bundle, load_bundle
from gen.runtime.verify import verify

MODELS = Path(__file__).resolve().parents[1] / "models"
SHIPPED = sorted(p for p in MODELS.iterdir() if is_bundle(p))


def test_there_are_shipped_bundles():
    assert any(load_bundle(p).manifest.kind == "dream" for p in SHIPPED)


@pytest.mark.parametrize("path", SHIPPED, ids=[p.name for p in SHIPPED])
def test_shipped_bundle_verifies(path):
    bundle = load_bundle(path)
    checks = verify(bundle, "cpu")
    assert checks and all(c.ok for c in checks), [c for c in checks if not c.ok]
    assert sum(f.size for f in bundle.manifest.files.values()) < 50e6


def test_shipped_dream_bundle_dreams_on_the_shipped_photo(tmp_path):
    from typer.testing import CliRunner

    from gen.runtime.cli import app

    out = tmp_path / "dream.png"
    result = CliRunner().invoke(app, ["dream", str(MODELS / "photos" / "chelsea.jpg"), "--bundle",
                                      str(MODELS / "dream-lite0"), "--octaves", "2", "--iterations", "2", "-o",
                                      str(out)])
    assert result.exit_code == 0, result.output
    assert out.stat().st_size > 10_000
