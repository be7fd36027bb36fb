"""Reading and writing videos for ``fnl predict clip.mp4`` (PyAV, the ``fnl-detector[video]``
extra).

:func:`read_video` yields ``(frame_index, H×W×3 uint8 RGB)`` in decoding order; bad input (no
such file, not a video, no video stream, zero frames, a frame that cannot be decoded) raises
:class:`fnl_core.errors.InputError` naming the file and, where it applies, the frame.
PyAV is required: torchvision 0.29 (the version FnL is tested with) no longer reads videos, so
there is no fallback; without PyAV the error says what to install.
:class:`VideoWriter` encodes RGB frames at a given frame rate (H.264, or MPEG-4 part 2 when
libx264 is missing); ``close`` (or leaving the ``with`` block, also on Ctrl-C) finishes the file
so that every frame written so far is kept.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from fnl_core.errors import InputError
from fnl_core.inputs import VIDEO_SUFFIXES, is_video


#: File name endings treated as videos by ``fnl predict``.
@dataclass(frozen=True)
class VideoInfo:
    """What a video stream says about itself (``frames`` is None when the container does not
    store a count)."""

    fps: Fraction
    width: int
    height: int
    frames: int | None


def _import_av() -> Any:
    try:
        import av
    except ImportError:
        return None
    return av


def probe_video(path: str | Path) -> VideoInfo:
    """Frame rate, size and frame count of ``path``'s first video stream."""
    path = Path(path)
    av = _require_av(path)
    with _open(av, path) as container:
        stream = _video_stream(container, path)
        fps = stream.average_rate or stream.guessed_rate or Fraction(25)
        return VideoInfo(
            Fraction(fps), int(stream.width), int(stream.height), int(stream.frames) or None
        )


def read_video(
    path: str | Path, *, every: int = 1, max_frames: int | None = None
) -> Iterator[tuple[int, np.ndarray]]:
    """``(index, frame)`` of every ``every``-th frame (index counts all decoded frames), at most
    ``max_frames`` of them. Raises :class:`InputError` naming file and frame on bad input."""
    if every < 1:
        raise InputError(f"every must be >= 1, got {every}")
    if max_frames is not None and max_frames < 1:
        raise InputError(f"max_frames must be >= 1, got {max_frames}")
    path = Path(path)
    av = _require_av(path)
    yielded = 0
    index = -1
    with _open(av, path) as container:
        stream = _video_stream(container, path)
        stream.thread_type = "AUTO"
        frames = container.decode(stream)
        while max_frames is None or yielded < max_frames:
            try:
                frame = next(frames)
            except StopIteration:
                break
            except av.error.FFmpegError as exc:
                raise InputError(
                    f"{path}: frame {index + 1}: cannot be decoded ({exc}); "
                    f"{index + 1} frame(s) before it were read"
                ) from None
            index += 1
            if index % every:
                continue
            yielded += 1
            yield index, frame.to_ndarray(format="rgb24")
    if index < 0:
        raise InputError(f"{path}: the video has no frames (expected at least one decodable frame)")


def _require_av(path: str | Path) -> Any:
    av = _import_av()
    if av is None:
        raise InputError(
            f"{path}: reading and writing videos needs PyAV; install fnl-detector[video] "
            "(or the av package)"
        )
    return av


def _open(av: Any, path: Path) -> Any:
    if not path.is_file():
        raise InputError(f"{path}: no such video file")
    try:
        return av.open(str(path), mode="r")
    except (av.error.FFmpegError, OSError, ValueError) as exc:
        raise InputError(f"{path}: not a video file FFmpeg can read ({exc})") from None


def _video_stream(container: Any, path: Path) -> Any:
    if not container.streams.video:
        raise InputError(f"{path}: no video stream (expected a file with one)")
    return container.streams.video[0]


class VideoWriter:
    """Encode H×W×3 uint8 RGB frames into ``path`` at ``fps`` (all frames the same size)."""

    def __init__(self, path: str | Path, fps: Fraction | float, width: int, height: int) -> None:
        av = _require_av(path)
        self.path = Path(path)
        self.width, self.height = int(width), int(height)
        self.frames = 0
        rate = Fraction(fps).limit_denominator(1001) if fps else Fraction(25)
        self._container = av.open(str(self.path), mode="w")
        codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
        self._stream = self._container.add_stream(codec, rate=rate)
        self._stream.width, self._stream.height = self.width, self.height
        even = self.width % 2 == 0 and self.height % 2 == 0
        # 4:2:0 needs even sizes; odd-sized clips keep their size in 4:4:4
        self._stream.pix_fmt = "yuv420p" if even or codec != "libx264" else "yuv444p"
        if codec == "libx264":
            self._stream.options = {"crf": "20", "preset": "veryfast"}
        self._frame_cls = av.VideoFrame

    def write(self, frame: np.ndarray) -> None:
        if frame.shape != (self.height, self.width, 3) or frame.dtype != np.uint8:
            raise ValueError(
                f"{self.path}: frame {self.frames} is {frame.dtype} {frame.shape}, expected "
                f"uint8 ({self.height}, {self.width}, 3)"
            )
        video_frame = self._frame_cls.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
        for packet in self._stream.encode(video_frame):
            self._container.mux(packet)
        self.frames += 1

    def close(self) -> None:
        if self._container is None:
            return
        try:
            for packet in self._stream.encode():
                self._container.mux(packet)
        finally:
            self._container.close()
            self._container = None

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


__all__ = ["VIDEO_SUFFIXES", "VideoInfo", "VideoWriter", "is_video", "probe_video", "read_video"]
