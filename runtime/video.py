"""Videos: GIF (Pillow) or MP4 (ffmpeg, from the `video` extra) through imageio, written one frame at a
time to a temporary file that replaces the output only when every frame is done."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np

from .errors import GenError, require_extra
from .files import atomic_path

VIDEO_SUFFIXES = (".gif", ".mp4")


def check_video_path(path: str | Path) -> Path:
    path = Path(path)
    if path.suffix.lower() not in VIDEO_SUFFIXES:
        raise GenError(f"'{path}': animations are written as .gif or .mp4")
    if path.suffix.lower() == ".mp4":
        require_extra("imageio_ffmpeg", "video")
    return path


def write_video(path: str | Path, frames: Iterable[np.ndarray], fps: float) -> int:
    """Write uint8 RGB frames to a .gif or .mp4 atomically; returns the number of frames written."""
    import imageio.v3 as iio

    path = check_video_path(path)
    count = 0
    with atomic_path(path) as tmp:
        if path.suffix.lower() == ".gif":
            with iio.imopen(tmp, "w", extension=".gif", plugin="pillow") as f:
                for frame in frames:
                    f.write(frame, duration=round(1000 / fps), loop=0)
                    count += 1
        else:
            import imageio_ffmpeg

            writer = None
            for frame in frames:
                # H.264 in yuv420p needs even sides: drop the last row/column if odd (no rescaling).
                h, w = frame.shape[:2]
                frame = np.ascontiguousarray(frame[: h - h % 2, : w - w % 2])
                if writer is None:
                    writer = imageio_ffmpeg.write_frames(
                        str(tmp), (frame.shape[1], frame.shape[0]), fps=fps, codec="libx264", quality=8,
                        macro_block_size=1, output_params=["-f", "mp4"], ffmpeg_log_level="error")
                    writer.send(None)  # start ffmpeg
                writer.send(frame)
                count += 1
            if writer is not None:
                writer.close()
    return count
