"""Shared test fixtures. `../shared` (beside the checkout) holds real data; tests fall back when it is absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED = Path(os.environ.get("GEN_SHARED", Path(__file__).resolve().parents[2] / "shared"))
EMOJI = SHARED / "data" / "emoji-google-64"
PHOTOS = SHARED / "data" / "photos"


def needs_shared(path: Path):
    return pytest.mark.skipif(not path.exists(), reason=f"{path} (../shared beside the checkout) is not here")


@pytest.fixture
def emoji_subset(tmp_path) -> Path:
    """24 real emoji (every 150th of the set), linked into a fresh folder; the built-in sample if no ../shared."""
    from gen.train.data import SAMPLE_DATA, find_images

    src = find_images(EMOJI) if EMOJI.is_dir() else find_images(SAMPLE_DATA)
    out = tmp_path / "emoji"
    out.mkdir()
    for p in src[:: max(len(src) // 24, 1)][:24]:
        (out / p.name).symlink_to(p)
    return out
