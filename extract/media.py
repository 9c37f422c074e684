"""Decoding of real media: video frames here, audio in `amid.extract.audio`.

Every failure a dataset can contain (a missing or corrupt file, a container
with no decodable frame, an empty frame folder) raises `MediaError` with a
short reason; the extraction runner writes that reason to the cache's
`.errors.csv` sidecar and goes on with the rest.

- Video frames are sampled by timestamp at a chosen rate: the frame shown at
  time `start + k / fps` for k = 0, 1, ... (the last frame whose presentation
  time is not after the target), independent of the file's own frame rate.
- A frame folder (a directory of .jpg/.png, one per frame, as many datasets
  ship them) stands for a video whose frame k is shown at k / folder_fps.
- `load_video` returns all sampled frames; `stream_video` yields them one by
  one, for long videos whose frames would not fit in memory together.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import numpy as np

from amid.errors import AmidError, MediaError
from amid.extract.audio import (  # noqa: F401  (audio entry points, re-exported)
    DECODE_ERRORS,
    SOUNDFILE_SUFFIXES,
    check_file,
    check_segment,
    load_audio,
    probe_audio,
    stream_audio,
)
from amid.samples import IMAGE_SUFFIXES  # frames of a frame folder

_DECODE_ERRORS = DECODE_ERRORS
_check_file, _check_segment = check_file, check_segment


# --------------------------------------------------------------------- video


def load_video(
    path: str | Path,
    fps: float | None,
    start: float | None = None,
    end: float | None = None,
    max_frames: int | None = None,
    folder_fps: float = 25.0,
) -> np.ndarray:
    """RGB frames (T, H, W, 3) uint8 sampled at `fps` (None: every decoded frame).

    `path` is a video file, or a frame folder (already decoded frames, one image
    per frame, in natural name order) whose frames were taken at `folder_fps`.
    """
    frames = list(stream_video(path, fps, start, end, max_frames, folder_fps))
    if len({f.shape for f in frames}) > 1:
        raise MediaError(f"frames of {Path(path).name} differ in size: "
                         f"{sorted({f.shape[:2] for f in frames})}")
    return np.stack(frames)


def stream_video(
    path: str | Path,
    fps: float | None,
    start: float | None = None,
    end: float | None = None,
    max_frames: int | None = None,
    folder_fps: float = 25.0,
) -> Iterator[np.ndarray]:
    """The frames of `load_video`, (H, W, 3) uint8, one at a time (one decoded frame in memory)."""
    path = Path(path)
    _check_segment(start, end)
    if fps is not None and fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    if path.is_dir():
        yield from _folder_frames(path, fps, start, end, max_frames, folder_fps)
        return
    _check_file(path)
    emitted = 0
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise MediaError(f"no video stream in {path.name}")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for frame in _sample_frames(container, stream, fps, start, end, max_frames):
                emitted += 1
                yield frame
    except AmidError:
        raise
    except _DECODE_ERRORS as exc:
        raise MediaError(f"cannot decode video {path.name}: {exc}") from None
    if not emitted:
        where = "" if start is None and end is None else f" in [{start}, {end}) s"
        raise MediaError(f"no video frames decoded from {path.name}{where}")


def video_frame_count(path: str | Path, fps: float | None, start: float | None = None,
                      end: float | None = None, max_frames: int | None = None,
                      folder_fps: float = 25.0) -> int | None:
    """About how many frames `load_video` would return, from the header; None if unknown.

    Lets an extractor stream a long video instead of holding all its frames.
    """
    path = Path(path)
    try:
        if path.is_dir():
            count = sum(1 for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            seconds, rate = count / folder_fps, folder_fps
        else:
            with av.open(str(path)) as container:
                if not container.streams.video:
                    return None
                stream = container.streams.video[0]
                rate = float(stream.average_rate or stream.guessed_rate or 25)
                seconds = (float(stream.duration * stream.time_base) if stream.duration
                           else container.duration / 1e6 if container.duration else None)
    except (*_DECODE_ERRORS, ZeroDivisionError):
        return None  # the load itself reports the problem
    if seconds is None:
        return None if max_frames is None else max_frames
    span = max(0.0, (seconds if end is None else min(end, seconds)) - (start or 0.0))
    frames = math.ceil(span * (fps or rate)) + 1
    return frames if max_frames is None else min(frames, max_frames)


def _natural_key(name: str) -> list[Any]:
    """frame2.jpg before frame10.jpg: digit runs compare as numbers."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def _folder_frames(folder: Path, fps: float | None, start: float | None, end: float | None,
                   max_frames: int | None, folder_fps: float) -> Iterator[np.ndarray]:
    """Frames of a folder of images; image k is on screen from k / folder_fps seconds.

    The same sampling as a video file: at each target time start + j / fps the
    last frame whose time is not after it. Images decode with torchvision
    (libjpeg-turbo / libpng); only the sampled ones are read.
    """
    from torchvision.io import ImageReadMode, decode_image

    if folder_fps <= 0:
        raise ValueError(f"folder_fps must be positive, got {folder_fps}")
    images = sorted((p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES),
                    key=lambda p: _natural_key(p.name))
    if not images:
        raise MediaError(f"no image frames ({', '.join(sorted(IMAGE_SUFFIXES))}) in folder "
                         f"{folder.name}")
    n = len(images)
    if fps is None:  # every frame whose time lies in [start, end), as for video files
        first = int(np.ceil((start or 0.0) * folder_fps - 1e-9))
        stop = n if end is None else min(n, int(np.ceil(end * folder_fps - 1e-9)))
        picks = list(range(first, stop))
    else:
        base, picks = start or 0.0, []
        while max_frames is None or len(picks) < max_frames:
            t = base + len(picks) / fps
            k = int(np.floor(t * folder_fps + 1e-9))  # the last frame shown at or before t
            if k >= n or (end is not None and t >= end):
                break
            picks.append(k)
    if max_frames is not None:
        picks = picks[:max_frames]
    if not picks:
        raise MediaError(f"no frames of folder {folder.name} in [{start}, {end}) s "
                         f"({n} frames at {folder_fps} fps)")
    shape = None
    for k in picks:
        try:
            img = decode_image(str(images[k]), mode=ImageReadMode.RGB)  # (3, H, W) uint8
        except (RuntimeError, OSError, ValueError) as exc:
            raise MediaError(f"cannot decode frame {images[k].name} of {folder.name}: "
                             f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
                             ) from None
        frame = img.permute(1, 2, 0).numpy()
        if shape is not None and frame.shape != shape:
            raise MediaError(f"frames of {folder.name} differ in size: "
                             f"{sorted({shape[:2], frame.shape[:2]})}")
        shape = frame.shape
        yield frame


def _timed_frames(
    container: av.container.InputContainer, stream: av.VideoStream, start: float | None
) -> Iterator[tuple[float, av.VideoFrame]]:
    """(presentation time, frame) in decode order, from a keyframe at or before `start`."""
    rate = float(stream.average_rate or stream.guessed_rate or 25)
    if start:
        try:
            container.seek(int(start / stream.time_base), stream=stream, backward=True)
        except _DECODE_ERRORS:
            container.seek(0)
    for index, frame in enumerate(container.decode(stream)):
        yield (float(frame.time) if frame.time is not None else index / rate), frame


def _sample_frames(
    container: av.container.InputContainer,
    stream: av.VideoStream,
    fps: float | None,
    start: float | None,
    end: float | None,
    max_frames: int | None,
) -> Iterator[np.ndarray]:
    """Yield the frame on screen at each target time start + k / fps before `end`."""
    base = start or 0.0
    limit = max_frames if max_frames is not None else np.inf
    period = 1.0 / float(stream.average_rate or stream.guessed_rate or 25)
    emitted = 0
    if fps is None:
        for time, frame in _timed_frames(container, stream, start):
            if end is not None and time >= end or emitted >= limit:
                return
            if time >= base:
                yield frame.to_ndarray(format="rgb24")
                emitted += 1
        return
    k = 0
    shown: av.VideoFrame | None = None  # the frame on screen before `time`
    rgb: np.ndarray | None = None
    stop = None  # when `shown` leaves the screen; None while decoding goes on
    for time, frame in _timed_frames(container, stream, start):
        if end is not None and time >= end:
            stop = end
            break
        # Targets before this frame's time show the previous frame.
        while shown is not None and base + k / fps < time and emitted < limit:
            rgb = shown.to_ndarray(format="rgb24") if rgb is None else rgb
            yield rgb
            emitted += 1
            k += 1
        if emitted >= limit:
            return
        shown, rgb, last_time = frame, None, time
    if shown is None:
        return
    if stop is None:  # the stream ended: the last frame lasts one frame period
        stop = last_time + period if end is None else min(last_time + period, end)
    while base + k / fps < stop and emitted < limit:
        rgb = shown.to_ndarray(format="rgb24") if rgb is None else rgb
        yield rgb
        emitted += 1
        k += 1
