"""Decoding of real media: audio files, audio tracks and frames of videos.

Every failure a dataset can contain (a missing or corrupt file, a video with no
audio track, a zero-length or silent clip, a container with no decodable
frame) raises `MediaError` with a short reason; the extraction runner writes
that reason to the cache's `.errors.csv` sidecar and goes on with the rest.

- wav/flac/ogg go through soundfile (exact sample ranges, no container demux);
  anything else (.avi, .mp4, .mkv, ...) through PyAV, which bundles FFmpeg.
- Audio is downmixed to mono by averaging channels and resampled with
  torchaudio's band-limited sinc resampler, so features do not depend on which
  FFmpeg build decoded the file.
- Video frames are sampled by timestamp at a chosen rate: the frame shown at
  time `start + k / fps` for k = 0, 1, ... (the last frame whose presentation
  time is not after the target), independent of the file's own frame rate.
- A frame folder (a directory of .jpg/.png, one per frame, as many datasets
  ship them) stands for a video whose frame k is shown at k / folder_fps.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF

from amid.errors import AmidError, MediaError

SOUNDFILE_SUFFIXES = frozenset({".wav", ".flac", ".ogg"})
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png"})  # frames of a frame folder
# Integer PCM formats FFmpeg can hand back, and the scale that maps them to [-1, 1).
_PCM_SCALE = {"u8": 128.0, "s16": 32768.0, "s32": 2147483648.0, "s64": 9.223372036854776e18}

_AUDIO_PREROLL = 0.5  # seconds decoded before a segment start, then dropped
# FFmpeg failures surface as several exception types; all mean "cannot decode".
_DECODE_ERRORS = (av.FFmpegError, OSError, ValueError, RuntimeError, EOFError, IndexError)


def _check_file(path: Path) -> None:
    if not path.exists():
        raise MediaError(f"file not found: {path}")
    if not path.is_file():
        raise MediaError(f"not a file: {path}")
    if path.stat().st_size == 0:
        raise MediaError(f"empty file (0 bytes): {path.name}")


def _check_segment(start: float | None, end: float | None) -> None:
    if start is not None and start < 0:
        raise MediaError(f"segment start {start} is negative")
    if start is not None and end is not None and end <= start:
        raise MediaError(f"segment end {end} is not after start {start}")


# --------------------------------------------------------------------- audio


def load_audio(
    path: str | Path,
    sample_rate: int,
    start: float | None = None,
    end: float | None = None,
    *,
    reject_silent: bool = True,
) -> np.ndarray:
    """Mono float32 waveform of `path` (or of [start, end) seconds) at `sample_rate`.

    A clip that decodes to no samples, or (with `reject_silent`) only zeros, is
    a MediaError: features of digital silence say nothing about the sample and
    would enter the cache looking like real ones.
    """
    path = Path(path)
    _check_file(path)
    _check_segment(start, end)
    if path.suffix.lower() in SOUNDFILE_SUFFIXES:
        wave, native = _read_soundfile(path, start, end)
    else:
        wave, native = _read_container_audio(path, start, end)
    if wave.size == 0:
        where = "" if start is None and end is None else f" in [{start}, {end}) s"
        raise MediaError(f"no audio samples{where} (zero-length clip)")
    if not np.isfinite(wave).all():
        raise MediaError("audio contains NaN or infinite samples")
    if reject_silent and not np.any(wave):
        raise MediaError("audio is silent (every sample is zero)")
    if native != sample_rate:
        wave = AF.resample(torch.from_numpy(wave), native, sample_rate).numpy()
    return np.ascontiguousarray(wave, dtype=np.float32)


def _read_soundfile(path: Path, start: float | None, end: float | None) -> tuple[np.ndarray, int]:
    try:
        with sf.SoundFile(str(path)) as f:
            native = int(f.samplerate)
            first = int(round((start or 0.0) * native))
            if first:
                f.seek(min(first, f.frames))
            count = -1 if end is None else max(0, int(round(end * native)) - first)
            data = f.read(frames=count, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, OSError, ValueError) as exc:
        raise MediaError(f"cannot decode audio file {path.name}: {exc}") from None
    return data.mean(axis=1, dtype=np.float32), native


def _frame_samples(frame: av.AudioFrame) -> np.ndarray:
    """One decoded frame as (channels, samples) float32, whatever FFmpeg's sample format."""
    data = frame.to_ndarray()
    channels = len(frame.layout.channels)
    if not frame.format.is_planar:
        data = data.reshape(-1, channels).T
    fmt = frame.format.name.rstrip("p")
    if fmt in _PCM_SCALE:
        offset = 128.0 if fmt == "u8" else 0.0
        data = (data.astype(np.float64) - offset) / _PCM_SCALE[fmt]
    return data.astype(np.float32, copy=False)


def _read_container_audio(
    path: Path, start: float | None, end: float | None
) -> tuple[np.ndarray, int]:
    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise MediaError(f"no audio stream in {path.name}")
            stream = container.streams.audio[0]
            native = int(stream.rate or stream.codec_context.sample_rate or 0)
            if native <= 0:
                raise MediaError(f"audio stream of {path.name} has no sample rate")
            chunks, first_time = _decode_audio(container, stream, start, end)
    except AmidError:
        raise
    except _DECODE_ERRORS as exc:
        raise MediaError(f"cannot decode audio of {path.name}: {exc}") from None
    if not chunks:
        return np.zeros(0, dtype=np.float32), native
    wave = np.concatenate(chunks, axis=1).mean(axis=0, dtype=np.float32)
    # Cut at sample precision: frames hold ~1000 samples, segments need better.
    lo = max(0, int(round(((start or 0.0) - first_time) * native)))
    hi = len(wave) if end is None else max(lo, int(round((end - first_time) * native)))
    return wave[lo:hi], native


def _decode_audio(
    container: av.container.InputContainer,
    stream: av.AudioStream,
    start: float | None,
    end: float | None,
) -> tuple[list[np.ndarray], float]:
    """Frames overlapping [start, end), and the start time of the first one kept."""
    if not start or start <= _AUDIO_PREROLL:
        chunks, first_time, _ = _collect_audio(container.decode(stream), start, end)
        return chunks, first_time or 0.0
    # Land well before `start`: lapped-transform codecs (AAC, MP3) decode the
    # first frame after a seek wrongly; those samples fall before `start`.
    target = start - _AUDIO_PREROLL
    try:
        container.seek(int(target / stream.time_base), stream=stream, backward=True)
    except _DECODE_ERRORS:
        container.seek(0)
    chunks, first_time, landed = _collect_audio(container.decode(stream), start, end)
    if landed is None or landed > start - _AUDIO_PREROLL / 2:
        # The seek overshot (a poor index): decode from the beginning instead.
        container.seek(0)
        chunks, first_time, _ = _collect_audio(container.decode(stream), start, end)
    return chunks, first_time or 0.0


def _collect_audio(
    frames: Iterator[av.AudioFrame], start: float | None, end: float | None
) -> tuple[list[np.ndarray], float | None, float | None]:
    """Kept frames, the time of the first kept one, and of the first decoded one."""
    chunks: list[np.ndarray] = []
    first_time = landed = None
    position = 0.0  # running time for streams whose frames carry no pts
    for frame in frames:
        samples = _frame_samples(frame)
        t0 = float(frame.time) if frame.time is not None else position
        position = t0 + samples.shape[1] / frame.sample_rate
        landed = t0 if landed is None else landed
        if end is not None and t0 >= end:
            break
        if start is not None and position <= start:
            continue
        if first_time is None:
            first_time = t0
        chunks.append(samples)
    return chunks, first_time, landed


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
    path = Path(path)
    _check_segment(start, end)
    if fps is not None and fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    if path.is_dir():
        return _load_frame_folder(path, fps, start, end, max_frames, folder_fps)
    _check_file(path)
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise MediaError(f"no video stream in {path.name}")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            frames = list(_sample_frames(container, stream, fps, start, end, max_frames))
    except AmidError:
        raise
    except _DECODE_ERRORS as exc:
        raise MediaError(f"cannot decode video {path.name}: {exc}") from None
    if not frames:
        where = "" if start is None and end is None else f" in [{start}, {end}) s"
        raise MediaError(f"no video frames decoded from {path.name}{where}")
    return np.stack(frames)


def _natural_key(name: str) -> list[Any]:
    """frame2.jpg before frame10.jpg: digit runs compare as numbers."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def _load_frame_folder(folder: Path, fps: float | None, start: float | None, end: float | None,
                       max_frames: int | None, folder_fps: float) -> np.ndarray:
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
        while True:
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
    frames = []
    for k in picks:
        try:
            img = decode_image(str(images[k]), mode=ImageReadMode.RGB)  # (3, H, W) uint8
        except (RuntimeError, OSError, ValueError) as exc:
            raise MediaError(f"cannot decode frame {images[k].name} of {folder.name}: "
                             f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
                             ) from None
        frames.append(img.permute(1, 2, 0).numpy())
    if len({f.shape for f in frames}) > 1:
        raise MediaError(f"frames of {folder.name} differ in size: "
                         f"{sorted({f.shape[:2] for f in frames})}")
    return np.stack(frames)


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
