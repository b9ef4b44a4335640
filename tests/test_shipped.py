"""The bundles shipped in models/ load, pass their golden data, and make pictures."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import SHIPPED
from gen.runtime.bundle import is_bundle, load_bundle
from gen.runtime.verify import verify

BUNDLES = sorted(p for p in SHIPPED.iterdir() if is_bundle(p))


def test_there_are_shipped_bundles():
    kinds = {load_bundle(p).manifest.kind for p in BUNDLES}
    assert kinds == {"dream", "stylegan"}
    assert "Noto Emoji" in load_bundle(SHIPPED / "emoji").manifest.license  # the training data is credited


def test_shipped_stylegan_bundle_samples_a_grid_without_torch(tmp_path):
    """The README's first command, in a process where importing torch fails."""
    out = tmp_path / "grid.png"
    code = ("import sys; sys.modules['torch'] = None; sys.argv = ['gen', 'sample', sys.argv[1], '--seeds', '0-15', "
            "'--out', sys.argv[2]]; from gen.cli import main; main()")
    result = subprocess.run([sys.executable, "-c", code, str(SHIPPED / "emoji"), str(out)], capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stderr
    grid = np.asarray(Image.open(out))
    res = load_bundle(SHIPPED / "emoji").manifest.stylegan.resolution
    assert grid.shape[0] >= 4 * res and grid.shape[1] >= 4 * res
    assert grid.std() > 20  # pictures, not a flat field


@pytest.mark.parametrize("path", BUNDLES, ids=[p.name for p in BUNDLES])
def test_shipped_bundle_verifies(path):
    bundle = load_bundle(path)
    checks = verify(bundle, "cpu")
    assert checks and all(c.ok for c in checks), [c for c in checks if not c.ok]
    assert sum(f.size for f in bundle.manifest.files.values()) < 50e6


def test_shipped_dream_bundle_dreams_on_the_shipped_photo(tmp_path):
    from typer.testing import CliRunner

    from gen.cli import app

    out = tmp_path / "dream.png"
    result = CliRunner().invoke(app, ["dream", str(SHIPPED / "photos" / "chelsea.jpg"), "--bundle",
                                      str(SHIPPED / "dream-lite0"), "--octaves", "2", "--iterations", "2", "-o",
                                      str(out)])
    assert result.exit_code == 0, result.output
    assert out.stat().st_size > 10_000
