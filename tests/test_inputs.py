"""Every bad input is one clear line, and nothing is lost: hostile images, damaged weight files, outputs that
already exist, and the modes of the files gen writes."""

from __future__ import annotations

import io
import json
import logging
import os
import pickle
import stat
import struct
import subprocess
import sys
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import SHIPPED, gen_without_torch
from gen.runtime.errors import GenError, GenWarning
from gen.runtime.files import write_bytes_atomic, write_text_atomic
from gen.runtime.images import MAX_PIXELS, load_image, save_image
from gen.runtime.kiosk.scenes import usable_photos

RNG = np.random.default_rng(12)


def chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bytes(rgb: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return buf.getvalue()


def bomb(path: Path, width: int, height: int) -> Path:
    """A small real PNG whose header (IHDR) declares width x height, its CRC recomputed: a decompression bomb."""
    data = png_bytes(RNG.integers(0, 255, (8, 8, 3), dtype=np.uint8))
    assert data[12:16] == b"IHDR"
    ihdr = struct.pack(">II", width, height) + data[24:29]  # the new size; depth, colour, ... as they were
    path.write_bytes(data[:8] + chunk(b"IHDR", ihdr) + data[33:])
    return path


def missing_rows(path: Path, width: int = 16, height: int = 16, rows: int = 8) -> Path:
    """A PNG whose (well-formed) compressed data holds only the first `rows` of its rows."""
    rgb = RNG.integers(0, 255, (height, width, 3), dtype=np.uint8)
    raw = b"".join(b"\0" + rgb[y].tobytes() for y in range(rows))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw))
                     + chunk(b"IEND", b""))
    return path


# ---------------------------------------------------------------------------------------------------------------
# Images


@pytest.mark.parametrize("width, height", [(100_000, 100_000), (10_000, 10_000)])  # past Pillow's error; its warning
def test_a_decompression_bomb_is_one_line(tmp_path, width, height):
    path = bomb(tmp_path / "huge-declared.png", width, height)
    assert width * height > MAX_PIXELS == 89_478_485
    with pytest.raises(GenError, match=r"declares .*decompression bomb") as e:
        load_image(path)
    assert "\n" not in str(e.value)


def test_the_pixel_limit_is_ours(tmp_path, monkeypatch):
    import gen.runtime.images as images

    monkeypatch.setattr(images, "MAX_PIXELS", 100)  # (a bomb at Pillow's limit would cost 268 MB to decode)
    (tmp_path / "10x10.png").write_bytes(png_bytes(np.zeros((10, 10, 3), np.uint8)))
    (tmp_path / "11x10.png").write_bytes(png_bytes(np.zeros((10, 11, 3), np.uint8)))
    assert load_image(tmp_path / "10x10.png").shape == (10, 10, 3)
    with pytest.raises(GenError, match="declares 11x10 pixels, more than the 0 megapixels"):
        load_image(tmp_path / "11x10.png")


def test_truncated_images_are_refused(tmp_path):
    with pytest.raises(GenError, match="ends before the last row"):
        load_image(missing_rows(tmp_path / "rows.png"))
    whole = missing_rows(tmp_path / "whole.png", rows=16)  # the same, complete: read as it is
    assert load_image(whole).shape == (16, 16, 3)
    data = png_bytes(RNG.integers(0, 255, (32, 32, 3), dtype=np.uint8))
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(GenError, match="damaged or truncated"):
        load_image(tmp_path / "cut.png")


def test_an_animation_gives_its_first_frame_with_one_warning(tmp_path):
    frames = [Image.new("RGB", (8, 8), c) for c in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    for name in ("anim.gif", "anim.png"):
        frames[0].save(tmp_path / name, save_all=True, append_images=frames[1:], duration=100)
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            rgb = load_image(tmp_path / name)
        said = [str(w.message) for w in seen if issubclass(w.category, GenWarning)]
        assert said == [f"'{tmp_path / name}' is an animation; only its first frame is used"]
        assert rgb.shape == (8, 8, 3) and (rgb == (255, 0, 0)).all()
    frames[0].save(tmp_path / "still.gif")
    with warnings.catch_warnings():
        warnings.simplefilter("error", GenWarning)
        assert (load_image(tmp_path / "still.gif") == (255, 0, 0)).all()


def test_the_kiosk_skips_a_bomb_or_a_truncated_photo(tmp_path, caplog):
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "good.png").write_bytes(png_bytes(RNG.integers(0, 255, (40, 40, 3), dtype=np.uint8)))
    bomb(folder / "huge-declared.png", 100_000, 100_000)
    missing_rows(folder / "rows.png", 40, 40, 20)
    with caplog.at_level(logging.WARNING, logger="gen.kiosk"):
        assert usable_photos([folder], min_side=16) == [folder / "good.png"]
    assert "skipping 2 photo(s)" in caplog.text and "huge-declared.png" in caplog.text
    (folder / "good.png").unlink()
    with pytest.raises(GenError, match="none of the 2 photo"):
        usable_photos([folder], min_side=16)


@pytest.mark.parametrize("side", [100_000, 10_000])  # no Pillow warning either, below twice its limit
def test_gen_dream_on_a_bomb_is_one_line(tmp_path, side):
    photo = bomb(tmp_path / "huge-declared.png", side, side)
    p = gen_without_torch("dream", str(photo), "--bundle", str(SHIPPED / "dream-lite0"), "-o", str(tmp_path / "o.png"))
    assert p.returncode == 2, p.stderr
    assert p.stderr.startswith("error:") and "decompression bomb" in p.stderr and len(p.stderr.splitlines()) == 1
    assert not (tmp_path / "o.png").exists()


# ---------------------------------------------------------------------------------------------------------------
# Weights: backbone weight files (.pth, .safetensors) and training checkpoints


def damaged_safetensors(tmp_path: Path) -> dict[str, Path]:
    """Good, then damaged in each way a hostile tester found, as files in tmp_path."""
    import torch
    from safetensors.torch import save_file

    from gen.train import checkpoint as ckpt

    good = tmp_path / "good.safetensors"
    save_file({"a": torch.ones(3, 4), "b": torch.zeros(2)}, str(good),
              metadata={"gen": json.dumps({"format": ckpt.FORMAT, "version": ckpt.VERSION})})
    data = good.read_bytes()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8 : 8 + n])
    header["a"]["shape"] = [300, 4]  # more than the file holds
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    cases = {"empty": b"", "text": b"these are not the weights you are looking for\n", "truncated": data[:-8],
             "huge-header": struct.pack("<Q", 2**62) + data[8:], "bad-shape": struct.pack("<Q", len(text)) + text
             + data[8 + n :]}
    files = {}
    for name, content in cases.items():
        files[name] = tmp_path / f"{name}.safetensors"
        files[name].write_bytes(content)
    return files


def test_damaged_safetensors_are_one_line(tmp_path):
    pytest.importorskip("torch")
    from gen.train import checkpoint as ckpt
    from gen.train.backbones import read_state_dict

    for name, path in damaged_safetensors(tmp_path).items():
        for read in (read_state_dict, ckpt.load_checkpoint):
            with pytest.raises(GenError) as e:
                read(path)
            assert "\n" not in str(e.value) and path.name in str(e.value), (name, read)


def test_a_checkpoint_with_unreadable_metadata_is_one_line(tmp_path):
    pytest.importorskip("torch")
    import torch
    from safetensors.torch import save_file

    from gen.train import checkpoint as ckpt

    for meta in ("{not json", "[1, 2]"):
        save_file({"a": torch.ones(2)}, str(tmp_path / "c.safetensors"), metadata={"gen": meta})
        with pytest.raises(GenError, match="not a JSON object"):
            ckpt.load_checkpoint(tmp_path / "c.safetensors")


def test_non_finite_weights_are_refused_by_name(tmp_path):
    pytest.importorskip("torch")
    import torch

    from gen.train import checkpoint as ckpt
    from gen.train.backbones import build_backbone
    from gen.train.config import ModelConfig, to_json

    meta = {"model": to_json(ModelConfig())}
    ckpt.save_checkpoint(tmp_path / "c.safetensors", {"G.w": torch.ones(3), "G.b": torch.tensor([0.0, float("nan")]),
                                                       "rng": torch.zeros(4, dtype=torch.uint8)}, meta)
    with pytest.raises(GenError, match="tensor 'G.b' holds NaN or infinite values"):
        ckpt.load_checkpoint(tmp_path / "c.safetensors")
    ckpt.save_checkpoint(tmp_path / "c.safetensors", {"G.w": torch.ones(3)}, meta)
    assert ckpt.load_checkpoint(tmp_path / "c.safetensors")[0]["G.w"].tolist() == [1, 1, 1]
    state = build_backbone("googlenet", random_weights=True).state_dict()
    state["inception4c.branch1.conv.weight"][0, 0, 0, 0] = float("inf")
    torch.save(state, tmp_path / "g.pth")
    with pytest.raises(GenError, match="tensor 'inception4c.branch1.conv.weight' holds NaN or infinite"):
        build_backbone("googlenet", tmp_path / "g.pth")


def test_pth_files_that_are_no_state_dict_are_one_line(tmp_path):
    pytest.importorskip("torch")
    import torch

    from gen.train.backbones import read_state_dict

    torch.save({1: torch.ones(2)}, tmp_path / "int-keys.pth")
    with pytest.raises(GenError, match="holds no state dict of tensors: its key 1 is not a parameter name"):
        read_state_dict(tmp_path / "int-keys.pth")
    torch.save({"a": torch.ones(2), "b": 3}, tmp_path / "number.pth")
    with pytest.raises(GenError, match="'b' is a int"):
        read_state_dict(tmp_path / "number.pth")
    for name, content in (("empty.pth", b""), ("text.pth", b"hello"), ("cut.pth", b"PK\x03\x04" + b"\0" * 40)):
        (tmp_path / name).write_bytes(content)
        with pytest.raises(GenError, match="cannot read weights") as e:
            read_state_dict(tmp_path / name)
        assert "\n" not in str(e.value)


class Code:
    def __reduce__(self):
        return (print, ("this ran",))


def test_a_pickle_with_code_is_refused_in_our_words(tmp_path):
    pytest.importorskip("torch")
    import torch

    from gen.train.backbones import read_state_dict

    torch.save({"a": torch.ones(2), "b": Code()}, tmp_path / "code.pth")
    (tmp_path / "path.pth").write_bytes(pickle.dumps(Path("x")))
    for name in ("code.pth", "path.pth"):
        with pytest.raises(GenError) as e:
            read_state_dict(tmp_path / name)
        msg = str(e.value)
        assert "holds a pickle with code or objects that gen does not run" in msg and ".safetensors" in msg
        assert "\x1b" not in msg and "\n" not in msg and "Weights only" not in msg
    p = subprocess.run([sys.executable, "-m", "gen.cli", "dream", str(SHIPPED / "photos" / "chelsea.jpg"), "-o",
                        str(tmp_path / "o.png"), "--backbone", "googlenet", "--weights", str(tmp_path / "path.pth")],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 2 and len(p.stderr.splitlines()) == 1 and "holds a pickle with code" in p.stderr, p.stderr


# ---------------------------------------------------------------------------------------------------------------
# Outputs: an existing file is replaced only with --overwrite


def test_sample_walk_and_mix_refuse_to_replace_a_file(tmp_path):
    bundle = str(SHIPPED / "emoji")
    runs = {
        "sample": ("sample", bundle, "--seeds", "0-1", "-o"),
        "mix": ("mix", bundle, "--rows", "1", "--cols", "2", "-o"),
        "walk": ("walk", bundle, "--seeds", "3,17", "--seconds", "0.5", "--fps", "4", "-o"),
    }
    for name, args in runs.items():
        out = tmp_path / (f"{name}.gif" if name == "walk" else f"{name}.png")
        out.write_bytes(b"a photo worth keeping")
        p = gen_without_torch(*args, str(out))
        assert p.returncode == 2 and "already exists; pass --overwrite" in p.stderr, (name, p.stderr)
        assert len(p.stderr.splitlines()) == 1 and out.read_bytes() == b"a photo worth keeping"
        p = gen_without_torch(*args, str(out), "--overwrite")
        assert p.returncode == 0, (name, p.stderr)
        assert out.read_bytes() != b"a photo worth keeping"


def test_sample_outdir_refuses_to_replace_a_seeds_picture(tmp_path):
    from gen.runtime.stylegan.sample import sample_to_files

    def draw(seeds):
        return np.full((len(seeds), 8, 8, 3), 128, np.uint8)

    keep = tmp_path / "seed0001.png"
    keep.write_bytes(b"keep me")
    with pytest.raises(GenError, match=r"already holds seed0001.png; pass --overwrite"):
        sample_to_files(draw, "0-2", tmp_path / "grid.png", tmp_path)
    assert keep.read_bytes() == b"keep me" and not (tmp_path / "grid.png").exists()
    sample_to_files(draw, "0-2", tmp_path / "grid.png", tmp_path, overwrite=True)
    assert load_image(keep).shape == (8, 8, 3)
    with pytest.raises(GenError, match="grid.png' already exists"):
        sample_to_files(draw, "5", tmp_path / "grid.png", tmp_path)


# ---------------------------------------------------------------------------------------------------------------
# File modes: what a plain open() would give, never mkstemp's 0600


@pytest.fixture
def umask():
    old = os.umask(0o022)
    os.umask(old)

    def set_umask(mask: int) -> None:
        os.umask(mask)

    yield set_umask
    os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_atomic_writes_get_the_mode_of_a_plain_open(tmp_path, umask):
    rgb = np.zeros((4, 4, 3), np.uint8)
    for mask in (0o022, 0o002, 0o077):
        umask(mask)
        folder = tmp_path / f"{mask:o}"
        folder.mkdir()
        write_bytes_atomic(folder / "a.bin", b"x")
        write_text_atomic(folder / "a.txt", "x")
        save_image(folder / "frame.png", rgb)
        with open(folder / "plain.bin", "w"):
            pass
        want = mode(folder / "plain.bin")
        assert want == 0o666 & ~mask
        assert mode(folder / "a.bin") == mode(folder / "a.txt") == mode(folder / "frame.png") == want
    umask(0o022)
    kept = tmp_path / "private.png"
    save_image(kept, rgb)
    kept.chmod(0o640)  # replacing a file keeps its mode, as writing into it would
    save_image(kept, rgb)
    assert mode(kept) == 0o640


def test_integer_weights_where_floats_belong_are_refused(tmp_path):
    """A hostile tester's find: an int64 bias in a checkpoint was copied into the float parameter, fractions
    silently gone; no trainer saves that, so it is a damaged or foreign file: one line naming the key."""
    pytest.importorskip("torch")
    import torch

    from gen.train import checkpoint as ckpt
    from gen.train.backbones import build_backbone
    from gen.train.config import ModelConfig
    from gen.train.stylegan import Generator

    G = Generator(ModelConfig(resolution=8, z_dim=8, w_dim=8, mapping_layers=1, channel_base=64, channel_max=8))
    state = dict(G.state_dict())
    state["mapping.layers.0.bias"] = state["mapping.layers.0.bias"].to(torch.int64)
    with pytest.raises(GenError, match=r"integers where numbers with fractions belong \(e.g. mapping.layers.0.bias"):
        ckpt.load_module(G, state, "the checkpoint's G_ema")
    state = build_backbone("googlenet", random_weights=True).state_dict()
    state["fc.bias"] = state["fc.bias"].to(torch.int32)
    torch.save(state, tmp_path / "g.pth")
    with pytest.raises(GenError, match="fc.bias: torch.int32"):
        build_backbone("googlenet", tmp_path / "g.pth")


def test_a_fifo_as_backbone_weights_is_named_as_such(tmp_path):
    import os

    fifo = tmp_path / "w.pth"
    os.mkfifo(fifo)
    pytest.importorskip("torch")
    p = subprocess.run([sys.executable, "-m", "gen.cli", "dream", str(SHIPPED / "photos" / "chelsea.jpg"), "--weights",
                        str(fifo), "-o", str(tmp_path / "d.png")], capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "is a FIFO (named pipe), not a regular file" in p.stderr, p.stderr
