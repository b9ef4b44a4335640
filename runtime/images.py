"""Image I/O, in one place: reading any common image safely, writing atomically, grids.

Arrays are uint8 RGB, shape [H, W, 3], unless a function says otherwise.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import GenError, GenWarning
from .files import write_bytes_atomic

# Still pictures by suffix, with Pillow's format names: what we write, and what training reads.
STILL_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP", ".bmp": "BMP", ".tif": "TIFF",
                 ".tiff": "TIFF"}
STILL_SUFFIXES = tuple(STILL_FORMATS)
IMAGE_SUFFIXES = (*STILL_SUFFIXES, ".gif")  # what we read: the stills, and a GIF's first frame
WHITE = (255, 255, 255)


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
    """Open and fully decode an image file, turning every failure into a one-line GenError."""
    path = Path(path)
    if not path.exists():
        raise GenError(f"'{path}' does not exist")
    if path.is_dir():
        raise GenError(f"'{path}' is a folder, not an image")
    try:
        with Image.open(path) as im:
            im.load()  # decode now: a truncated file fails here, not later
            return ImageOps.exif_transpose(im) or im
    except UnidentifiedImageError:
        raise GenError(f"'{path}' is not an image Pillow can read (PNG, JPEG, WebP, ...)") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise GenError(f"'{path}' is damaged or truncated and cannot be decoded ({e})") from None


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
