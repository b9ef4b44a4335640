"""The training data pipeline: folder -> checked dataset -> reproducible, sharded, endless batches."""

from __future__ import annotations

import itertools
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import EMOJI
from gen.runtime.errors import GenError, GenWarning
from gen.runtime.images import load_image, resize_center_crop
from gen.train.data import SAMPLE_DATA, ImageFolder, InfiniteSampler, find_images, make_loader


def save(path: Path, array: np.ndarray, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, **kw)
    return path


def noise_images(folder: Path, n: int, size: int = 8, seed: int = 0) -> list[Path]:
    """n distinct, asymmetric RGB PNGs."""
    rng = np.random.default_rng(seed)
    shape = (size, size, 3)
    return [save(folder / f"{i:03d}.png", rng.integers(0, 256, shape, dtype=np.uint8)) for i in range(n)]


@pytest.fixture
def emoji(tmp_path) -> Path:
    """A spread of 40 real emoji, linked into a fresh folder to keep the tests fast."""
    src = find_images(EMOJI) if EMOJI.is_dir() else find_images(SAMPLE_DATA)
    out = tmp_path / "emoji"
    out.mkdir()
    for p in src[:: len(src) // 40][:40]:
        (out / p.name).symlink_to(p)
    return out


def test_emoji_subset_loads_to_shape_and_range(emoji):
    ds = ImageFolder(emoji, 64)
    assert len(ds) == 40
    x = torch.stack([ds[i] for i in range(len(ds))])
    assert x.shape == (40, 3, 64, 64) and x.dtype == torch.float32
    assert x.min() >= -1 and x.max() <= 1
    assert x.max() == 1 and x.min() < -0.9  # white background, dark outlines: the full range is used
    # Exactly the shared loader's pixels, scaled: no second colour path to drift from the runtime's.
    ref = load_image(ds.files[3])
    assert torch.equal(ds[3], torch.from_numpy(ref.transpose(2, 0, 1).astype(np.float32)) / 127.5 - 1)


def test_builtin_sample_ships_and_loads():
    ds = ImageFolder(SAMPLE_DATA, 32)
    assert len(ds) == 253 and ds.skipped == []
    assert ds[0].shape == (3, 32, 32)


def test_rgba_is_composited_on_white_or_the_chosen_background(tmp_path):
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[2:6, 2:6] = (255, 0, 0, 255)  # opaque red centre; the rest fully transparent (and black)
    save(tmp_path / "a.png", rgba)
    white = ImageFolder(tmp_path, 8)[0]
    assert white[:, 0, 0].tolist() == [1, 1, 1]
    assert white[:, 4, 4].tolist() == [1, -1, -1]
    blue = ImageFolder(tmp_path, 8, background=(0, 0, 255))[0]
    assert blue[:, 0, 0].tolist() == [-1, -1, 1]
    assert ImageFolder(tmp_path, 8, background="black")[0][:, 7, 7].tolist() == [-1, -1, -1]


def test_non_square_jpeg_is_resized_and_centre_cropped(tmp_path):
    img = np.zeros((60, 180, 3), np.uint8)
    img[:, :40] = (255, 0, 0)  # red and blue bands at the sides fall outside the centre square
    img[:, 40:140] = (0, 255, 0)
    img[:, 140:] = (0, 0, 255)
    path = save(tmp_path / "wide.JPG", img, quality=95)
    x = ImageFolder(tmp_path, 16)[0]
    assert x.shape == (3, 16, 16)
    assert x[1].min() > 0.8 and x[0].max() < -0.8 and x[2].max() < -0.8  # all green: cropped, not squashed
    ref = resize_center_crop(load_image(path), 16)
    assert torch.equal(x, torch.from_numpy(ref.transpose(2, 0, 1).astype(np.float32)) / 127.5 - 1)


def test_xflip_copy_is_the_exact_mirror(tmp_path):
    noise_images(tmp_path, 3)
    plain, ds = ImageFolder(tmp_path, 8), ImageFolder(tmp_path, 8, xflip=True)
    assert len(ds) == 6
    for i in range(3):
        assert torch.equal(ds[i], plain[i])
        assert torch.equal(ds[i + 3], ds[i].flip(-1))
        assert not torch.equal(ds[i + 3], ds[i])
    with pytest.raises(IndexError):
        ds[6]


def test_corrupt_and_truncated_files_are_skipped_with_one_warning_each(tmp_path):
    good = noise_images(tmp_path / "sub", 3, size=32)
    (tmp_path / "bad.png").write_bytes(np.random.default_rng(1).bytes(500))
    (tmp_path / "trunc.png").write_bytes(good[0].read_bytes()[: good[0].stat().st_size // 2])
    (tmp_path / "notes.txt").write_text("not an image")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = ImageFolder(tmp_path, 32)
    messages = [str(w.message) for w in caught if issubclass(w.category, GenWarning)]
    assert len(messages) == 2 and "bad.png" in messages[0] and "trunc.png" in messages[1]
    assert all("\n" not in m for m in messages)
    assert ds.files == good and len(ds) == 3
    assert [p.name for p in ds.skipped] == ["bad.png", "trunc.png"]


def test_a_file_that_breaks_mid_run_is_replaced_by_its_neighbour(tmp_path):
    files = noise_images(tmp_path, 3)
    ds = ImageFolder(tmp_path, 8)
    neighbour = ds[2]
    files[1].write_bytes(b"gone")
    with pytest.warns(GenWarning, match="001.png"):
        assert torch.equal(ds[1], neighbour)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warned once, not on every read
        assert torch.equal(ds[1], neighbour)


def test_unusable_folders_are_clear_errors_before_training(tmp_path):
    with pytest.raises(GenError, match="does not exist"):
        ImageFolder(tmp_path / "missing", 64)
    (tmp_path / "file.png").write_bytes(b"x")
    with pytest.raises(GenError, match="is a file"):
        find_images(tmp_path / "file.png")
    empty = tmp_path / "empty"
    (empty / ".hidden").mkdir(parents=True)
    (empty / "readme.txt").write_text("hi")
    save(empty / ".hidden" / "x.png", np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(GenError, match="no images"):
        ImageFolder(empty, 64)
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("a.png", "b.jpg"):
        (broken / name).write_bytes(b"not really an image")
    with pytest.warns(GenWarning), pytest.raises(GenError, match="none of the 2 image files .* can be read"):
        ImageFolder(broken, 64)


def test_find_images_is_recursive_sorted_and_case_insensitive(tmp_path):
    for rel in ("b/z.PNG", "a.jpeg", "b/a.webp", "c.Jpg", "b/c/d.png"):
        save(tmp_path / rel, np.zeros((4, 4, 3), np.uint8))
    (tmp_path / "skip.gif").write_bytes(b"")
    (tmp_path / "b" / "._z.PNG").write_bytes(b"macOS metadata")  # hidden: not an image to train on
    os.symlink(tmp_path / "b", tmp_path / "b" / "c" / "loop")  # a symlink loop must not hang the walk
    names = [p.relative_to(tmp_path).as_posix() for p in find_images(tmp_path)]
    assert names == ["a.jpeg", "b/a.webp", "b/c/d.png", "b/z.PNG", "c.Jpg"]


def test_grayscale_16bit_and_palette_pngs_load_as_rgb(tmp_path):
    ramp = np.linspace(0, 255, 64, dtype=np.uint8).reshape(8, 8)
    save(tmp_path / "gray.png", ramp)
    save(tmp_path / "deep.png", ramp.astype(np.uint16) * 257)  # 16-bit: 0..65535
    pal = Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8) % 2, "P")
    pal.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    pal.save(tmp_path / "pal.png")
    with pytest.warns(GenWarning, match="deep.png.*8-bit"):
        ds = ImageFolder(tmp_path, 8)
    deep, gray, palette = (ds[i] for i in range(3))
    expected = torch.from_numpy(ramp.astype(np.float32)) / 127.5 - 1
    for x in (gray, deep):
        assert x.shape == (3, 8, 8) and torch.equal(x[0], x[1]) and torch.equal(x[1], x[2])
        assert torch.equal(x[0], expected)
    assert palette[:, 0, 0].tolist() == [1, -1, -1] and palette[:, 0, 1].tolist() == [-1, -1, 1]


def take(sampler, n):
    return list(itertools.islice(iter(sampler), n))


def test_sampler_is_a_pure_function_of_seed_rank_world_and_position():
    assert take(InfiniteSampler(10, seed=3), 25) == take(InfiniteSampler(10, seed=3), 25)
    assert take(InfiniteSampler(10, seed=3), 10) != take(InfiniteSampler(10, seed=4), 10)
    stream = take(InfiniteSampler(10, seed=3), 30)
    for epoch in range(3):  # every epoch a permutation, and a different one
        assert sorted(stream[10 * epoch : 10 * epoch + 10]) == list(range(10))
    assert stream[:10] != stream[10:20]
    assert take(InfiniteSampler(10, seed=3, start=7), 23) == stream[7:]


@pytest.mark.parametrize("size", [12, 10])  # divisible by the world size, and not
def test_sampler_shards_are_disjoint_and_together_read_the_single_process_stream(size):
    world = 3
    shards = [take(InfiniteSampler(size, seed=5, rank=r, world_size=world), 2 * size) for r in range(world)]
    single = take(InfiniteSampler(size, seed=5), 2 * size * world)
    assert [shards[i % world][i // world] for i in range(len(single))] == single
    if size % world == 0:
        per_epoch = size // world
        assert sorted(sum((s[:per_epoch] for s in shards), [])) == list(range(size))
    # A rank resumed at `start` continues its own shard.
    assert take(InfiniteSampler(size, seed=5, rank=2, world_size=world, start=5), 7) == shards[2][5:12]
    with pytest.raises(GenError):
        InfiniteSampler(size, rank=3, world_size=3)


def test_loader_is_reproducible_resumable_and_leaves_the_global_rng_alone(tmp_path):
    noise_images(tmp_path, 10, size=16)
    ds = ImageFolder(tmp_path, 16, xflip=True)  # 20 items; 6 batches of 4 span two epochs
    torch.manual_seed(123)
    state = torch.get_rng_state()

    def batches(n, **kw):
        it = make_loader(ds, 4, seed=7, workers=2, **kw)
        return [next(it) for _ in range(n)]

    first, again = batches(6), batches(6)
    assert torch.equal(torch.get_rng_state(), state)
    assert all(b.shape == (4, 3, 16, 16) and b.dtype == torch.float32 for b in first)
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    resumed = batches(3, start=3 * 4)
    assert all(torch.equal(a, b) for a, b in zip(first[3:], resumed, strict=True))
    # The batches hold the sampler's items in its order, and a rank-1 loader reads the other half.
    order = take(InfiniteSampler(len(ds), seed=7), 24)
    assert torch.equal(torch.cat(first), torch.stack([ds[i] for i in order]))
    other = make_loader(ds, 2, seed=7, rank=1, world_size=2, workers=0)
    assert torch.equal(next(other), torch.stack([ds[i] for i in order[1:4:2]]))
    assert torch.equal(torch.get_rng_state(), state)
