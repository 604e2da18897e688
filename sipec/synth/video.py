"""H.264 mp4 writing through the ffmpeg binary that imageio-ffmpeg ships.

Raw RGB frames go to ffmpeg's stdin; the file is written under a temporary name and renamed
when ffmpeg has finished, so an interrupted run never leaves a truncated ``video.mp4``.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType

import numpy as np

from sipec.data.atomic import partial_path

DEFAULT_CRF = 17
DEFAULT_PRESET = "veryfast"


def ffmpeg_exe() -> str:
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


class Mp4Writer:
    """Write HxWx3 uint8 RGB frames to an H.264 (yuv420p) mp4; use as a context manager."""

    def __init__(self, path: str | os.PathLike, width: int, height: int, fps: float, crf: int = DEFAULT_CRF,
                 preset: str = DEFAULT_PRESET) -> None:
        if width % 2 or height % 2:
            raise ValueError(f"H.264 yuv420p needs an even frame size, not {width}x{height}")
        self.path = Path(path)
        self.width, self.height = width, height
        self.frames_written = 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = partial_path(self.path)
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 - ffmpeg's stderr; closed in close()/abort()
        cmd = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y",
               "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "-r", f"{fps:g}", "-i", "-",
               "-an", "-c:v", "libx264", "-preset", preset, "-crf", str(int(crf)), "-pix_fmt", "yuv420p",
               "-movflags", "+faststart", "-f", "mp4", str(self._tmp)]
        self._proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=self._log)

    def _ffmpeg_error(self) -> str:
        self._log.seek(0)
        return self._log.read().decode("utf-8", "replace").strip()[-2000:]

    def write(self, frame: np.ndarray) -> None:
        if frame.shape != (self.height, self.width, 3) or frame.dtype != np.uint8:
            raise ValueError(f"frame must be {self.height}x{self.width}x3 uint8, not {frame.shape} {frame.dtype}")
        assert self._proc.stdin is not None
        try:
            self._proc.stdin.write(np.ascontiguousarray(frame).data)
        except BrokenPipeError as exc:
            self._proc.wait()
            raise RuntimeError(f"ffmpeg stopped while writing {self.path}: {self._ffmpeg_error()}") from exc
        self.frames_written += 1

    def close(self) -> None:
        """Finish encoding and move the file into place."""
        assert self._proc.stdin is not None
        with contextlib.suppress(BrokenPipeError):
            self._proc.stdin.close()
        rc = self._proc.wait()
        try:
            if rc != 0:
                raise RuntimeError(f"ffmpeg failed writing {self.path} (exit {rc}): {self._ffmpeg_error()}")
            os.replace(self._tmp, self.path)
        finally:
            self._log.close()
            with contextlib.suppress(FileNotFoundError):
                self._tmp.unlink()

    def abort(self) -> None:
        """Stop ffmpeg and delete the partial file."""
        self._proc.kill()
        self._proc.wait()
        self._log.close()
        with contextlib.suppress(FileNotFoundError):
            self._tmp.unlink()

    def __enter__(self) -> Mp4Writer:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
