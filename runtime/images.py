"""Image I/O, in one place: reading any common image safely, writing atomically, grids.

Arrays are uint8 RGB, shape [H, W, 3], unless a function says otherwise.
"""

from __future__ import annotations

import io
import re
import struct
import warnings
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import GenError, GenWarning
from .files import check_input_file, write_bytes_atomic

# Still pictures by suffix, with Pillow's format names: what we write, and what training reads.
STILL_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP", ".bmp": "BMP", ".tif": "TIFF",
                 ".tiff": "TIFF"}
STILL_SUFFIXES = tuple(STILL_FORMATS)
IMAGE_SUFFIXES = (*STILL_SUFFIXES, ".gif")  # what we read: the stills, and a GIF's first frame
WHITE = (255, 255, 255)

# The most pixels an image may declare: Pillow's own default (Image.MAX_IMAGE_PIXELS, 2**30 // 4 // 3, about
# 268 MB as RGB), kept here explicitly so that a program changing Pillow's global changes nothing here. A
# decompression bomb (a small file whose header declares, say, 100000x100000) is refused from its header, before
# any memory is spent. Pillow itself only warns up to twice its limit and raises past it; its warning is silenced
# below because open_image refuses every image it would warn about, in one line of its own.
MAX_PIXELS = 89_478_485
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


def parse_color(text: str) -> tuple[int, int, int]:
    """'white', 'black', '#ff8800' or '255,128,0' -> an RGB triple."""
    names = {"white": WHITE, "black": (0, 0, 0), "gray": (128, 128, 128), "grey": (128, 128, 128)}
    text = text.strip().lower()
    if text in names:
        return names[text]
    try:
        if text.startswith("#") and len(text) == 7:
            return tuple(int(text[i : i + 2], 16) for i in (1, 3, 5))  # type: ignore[return-value]
        parts = [int(v) for v in text.split(",")]
        if len(parts) == 3 and all(0 <= v <= 255 for v in parts):
            return tuple(parts)  # type: ignore[return-value]
    except ValueError:
        pass
    raise GenError(f"cannot read colour '{text}'; use white, black, #rrggbb or r,g,b")


def open_image(path: str | Path) -> Image.Image:
    """Open and fully decode an image file, turning every failure into a one-line GenError.

    Refused: FIFOs, devices and sockets (opening a FIFO waits for a writer), images of more than MAX_PIXELS
    (decompression bombs), truncated or damaged files, PNGs whose pixel data stops before the last row. An
    animation (GIF, APNG, WebP) gives its first frame, with a GenWarning.
    """
    path = Path(path)
    if not path.exists():
        raise GenError(f"'{path}' does not exist")
    if path.is_dir():
        raise GenError(f"'{path}' is a folder, not an image")
    check_input_file(path)
    try:
        with Image.open(path) as im:
            if im.width * im.height > MAX_PIXELS:
                raise _too_many_pixels(path, f"{im.width}x{im.height} pixels")
            animated = getattr(im, "is_animated", False)  # (looks for a second frame, then goes back to the first)
            if animated:
                warnings.warn(f"'{path}' is an animation; only its first frame is used", GenWarning, stacklevel=2)
            im.load()  # decode now: a truncated file fails here, not later
            if im.format == "PNG" and not animated and _png_rows_missing(path):
                raise GenError(f"'{path}' is damaged or truncated: its pixel data ends before the last row")
            return ImageOps.exif_transpose(im) or im
    except UnidentifiedImageError:
        raise GenError(f"'{path}' is not an image Pillow can read (PNG, JPEG, WebP, ...)") from None
    except Image.DecompressionBombError as e:  # past twice Pillow's own limit: Image.open refuses it itself
        pixels = re.search(r"\((\d+) pixels\)", str(e))
        declared = f"{int(pixels.group(1)) / 1e6:.0f} megapixels" if pixels else "too many pixels"
        raise _too_many_pixels(path, declared) from None
    except (OSError, SyntaxError, ValueError, struct.error, EOFError) as e:
        raise GenError(f"'{path}' is damaged or truncated and cannot be decoded ({e})") from None


def _too_many_pixels(path: Path, declared: str) -> GenError:
    return GenError(f"'{path}' declares {declared}, more than the {MAX_PIXELS / 1e6:.0f} megapixels gen opens "
                    "(a decompression bomb, or a damaged header?); scale it down first")


_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # by colour type: grey, RGB, palette, grey + alpha, RGBA
_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))


def _png_rows_missing(path: Path) -> bool:
    """Whether a PNG's pixel data (its IDAT stream) ends before the last row. Pillow decodes such a file without
    a word and leaves the missing rows black; a file cut short within the data fails in Pillow already. Costs
    one more inflate of the data, stopped as soon as the last row is there."""
    with open(path, "rb") as f:
        if f.read(8) != b"\x89PNG\r\n\x1a\n":
            return False
        inflate, need, got = zlib.decompressobj(), None, 0
        try:
            while len(head := f.read(8)) == 8:
                length, kind = struct.unpack(">I4s", head)
                if kind == b"IHDR" and length >= 13:
                    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", f.read(13))
                    f.seek(length - 13 + 4, 1)
                    bits = depth * _PNG_CHANNELS.get(colour, 4)
                    need = 0  # the bytes of every row (and Adam7 pass), each with its filter byte
                    for x0, y0, dx, dy in _ADAM7 if interlace else ((0, 0, 1, 1),):
                        cols, rows = max(0, -(-(width - x0) // dx)), max(0, -(-(height - y0) // dy))
                        need += rows * (1 + (cols * bits + 7) // 8) if cols else 0
                    if need == 0:
                        return False
                elif kind == b"IDAT" and need is not None:
                    got += len(inflate.decompress(f.read(length), need - got))
                    if got >= need:
                        return False
                    f.seek(4, 1)
                elif kind == b"IEND":
                    break
                else:
                    f.seek(length + 4, 1)
        except (zlib.error, struct.error):
            return True
    return need is not None and got < need


def to_rgb(im: Image.Image, background: tuple[int, int, int] = WHITE, name: str = "image") -> np.ndarray:
    """Any Pillow image -> uint8 RGB array; transparency is composited on `background`."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        # 16-bit or float grayscale: scale to 8 bits (Pillow's convert('L') would clip instead).
        a = np.asarray(im, dtype=np.float64)
        top = 65535.0 if im.mode != "F" and a.max() > 255 else max(a.max(), 1.0)
        warnings.warn(f"{name}: {im.mode} image scaled to 8-bit RGB", GenWarning, stacklevel=2)
        a = np.clip(a / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(a[:, :, None], 3, axis=2)
    if im.mode == "CMYK":
        warnings.warn(f"{name}: CMYK image converted to RGB", GenWarning, stacklevel=2)
    if im.mode == "P":
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "PA") or "transparency" in im.info:
        im = im.convert("RGBA")
        canvas = Image.new("RGBA", im.size, background + (255,))
        return np.asarray(Image.alpha_composite(canvas, im).convert("RGB"))
    return np.asarray(im.convert("RGB"))


def load_image(
    path: str | Path, background: tuple[int, int, int] = WHITE, min_size: int = 1
) -> np.ndarray:
    """Read an image file as uint8 RGB [H, W, 3]; refuse images smaller than `min_size` pixels a side."""
    rgb = to_rgb(open_image(path), background, name=str(path))
    h, w = rgb.shape[:2]
    if min(h, w) < min_size:
        raise GenError(f"'{path}' is {w}x{h} pixels; at least {min_size}x{min_size} is needed")
    return rgb


def resize_center_crop(rgb: np.ndarray, size: int) -> np.ndarray:
    """Scale the short side to `size` (Lanczos), then crop the centre square."""
    im = Image.fromarray(rgb)
    return np.asarray(ImageOps.fit(im, (size, size), method=Image.Resampling.LANCZOS))


def resize(rgb: np.ndarray, width: int, height: int) -> np.ndarray:
    return np.asarray(Image.fromarray(rgb).resize((width, height), Image.Resampling.LANCZOS))


def float_to_uint8(x: np.ndarray, lo: float = -1.0, hi: float = 1.0) -> np.ndarray:
    """Map floats in [lo, hi] to uint8 with rounding and clipping."""
    scaled = (np.asarray(x, dtype=np.float32) - lo) * (255.0 / (hi - lo))
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def nchw_to_images(x: np.ndarray, lo: float = -1.0, hi: float = 1.0) -> np.ndarray:
    """Generator output [N, 3, H, W] in [lo, hi] -> uint8 [N, H, W, 3]."""
    return float_to_uint8(np.asarray(x).transpose(0, 2, 3, 1), lo, hi)


def make_grid(images: Sequence[np.ndarray] | np.ndarray, cols: int | None = None, pad: int = 2) -> np.ndarray:
    """Tile equal-sized uint8 images [N, H, W, 3] into one picture, `cols` wide, with white padding."""
    images = np.asarray(images)
    n, h, w, c = images.shape
    cols = cols or int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / cols))
    grid = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, c), 255, dtype=np.uint8)
    for i, img in enumerate(images):
        r, col = divmod(i, cols)
        y, x = pad + r * (h + pad), pad + col * (w + pad)
        grid[y : y + h, x : x + w] = img
    return grid


def encode_image(rgb: np.ndarray, suffix: str) -> bytes:
    fmt = STILL_FORMATS.get(suffix.lower())
    if fmt is None:
        raise GenError(f"cannot write '{suffix}' images; use .png, .jpg or .webp")
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb)).save(buf, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return buf.getvalue()


def blend(a: np.ndarray, b: np.ndarray, t: float) -> np.ndarray:
    """(1 - t) a + t b, uint8; a is resized to b's size first (photos differ in shape)."""
    if a.shape != b.shape:
        a = resize(a, b.shape[1], b.shape[0])
    # The arithmetic `gen dream --blend` has always used (a float64 sum with a float32 term), so its
    # animations stay bit for bit: dreaming amplifies a one-level rounding change over the frames.
    mixed = (1.0 - t) * a.astype(np.float64) + t * b.astype(np.float32)
    return np.clip(np.rint(mixed), 0, 255).astype(np.uint8)


def encode_jpeg(rgb: np.ndarray, quality: int = 90) -> bytes:
    """JPEG with full colour resolution (4:4:4): halving it smears a small picture's colours once enlarged."""
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb)).save(buf, format="JPEG", quality=quality, subsampling=0)
    return buf.getvalue()


def save_image(path: str | Path, rgb: np.ndarray) -> Path:
    """Write uint8 RGB atomically; the format follows the file's suffix."""
    path = Path(path)
    write_bytes_atomic(path, encode_image(rgb, path.suffix))
    return path
