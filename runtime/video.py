"""Videos: GIF (Pillow) or MP4 (ffmpeg, from the `video` extra) through imageio, written one frame at a
time to a temporary file that replaces the output only when every frame is done."""

from __future__ import annotations

import contextlib
import errno
import os
import struct
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from .errors import GenError, require_extra
from .files import atomic_path, output_error

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
            gif = iio.imopen(tmp, "w", extension=".gif", plugin="pillow")
            try:
                with gif:  # (Pillow writes every frame as it closes)
                    for frame in frames:
                        gif.write(frame, duration=round(1000 / fps), loop=0)
                        count += 1
            except BaseException:
                # After a failed write (a full disk) the plugin would try again when collected, and print
                # a traceback below our one line: its frames are dropped and its file let go now.
                getattr(gif, "images_to_write", []).clear()
                with contextlib.suppress(Exception):
                    gif.close()
                raise
        else:
            import imageio_ffmpeg

            writer = None
            for frame in frames:
                # H.264 in yuv420p needs even sides: drop the last row/column if odd (no rescaling).
                h, w = frame.shape[:2]
                frame = np.ascontiguousarray(frame[: h - h % 2, : w - w % 2])
                try:
                    if writer is None:
                        writer = imageio_ffmpeg.write_frames(
                            str(tmp), (frame.shape[1], frame.shape[0]), fps=fps, codec="libx264", quality=8,
                            macro_block_size=1, output_params=["-f", "mp4"], ffmpeg_log_level="error")
                        writer.send(None)  # start ffmpeg
                    writer.send(frame)
                except OSError as e:  # ffmpeg has quit (a broken pipe; its own words went to stderr)
                    raise output_error(path, e) or _unfinished(path) from None
                count += 1
            if writer is not None:
                writer.close()
                # imageio-ffmpeg does not look at ffmpeg's exit status: a disk that filled would leave a cut
                # file, which must not take the output's name.
                if not mp4_is_complete(tmp):
                    raise _unfinished(path)
    return count


def mp4_is_complete(path: str | Path) -> bool:
    """Whether an MP4's top-level boxes span the whole file and include the index ('moov'), which ffmpeg
    writes last: a file cut short by a full disk fails this."""
    size, pos, index = os.path.getsize(path), 0, False
    with open(path, "rb") as f:
        while pos < size:
            f.seek(pos)
            head = f.read(16)
            if len(head) < 8:
                return False
            length, kind = struct.unpack(">I4s", head[:8])
            if length == 1:  # a 64-bit length follows
                length = struct.unpack(">Q", head[8:16])[0] if len(head) == 16 else 0
            elif length == 0:  # to the end of the file
                length = size - pos
            if length < 8:
                return False
            index |= kind == b"moov"
            pos += length
    return index and pos == size


def _unfinished(path: Path) -> GenError:
    """ffmpeg stopped before the video was whole; its reason went to stderr. A disk with no room left is said as
    any full disk is."""
    with contextlib.suppress(OSError):
        free = os.statvfs(path.parent)
        if free.f_bavail * free.f_frsize < 64 << 20:
            return output_error(path, OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)))
    return GenError(f"cannot write '{path}': ffmpeg stopped before the video was complete (is the disk full?); "
                    "check, and run again")
