"""Long media, embedded in bounded pieces so memory does not grow with the clip's length.

An extractor's `load` returns a `LongAudio` / `LongVideo` (a note of what to
decode, not the samples) for media longer than `LONG_SECONDS` of audio or
`LONG_FRAMES` frames; its `embed` then streams the media block by block
(`amid.extract.audio.stream_audio`, `amid.extract.media.stream_video`) and
combines the pieces' features: frame sequences are concatenated, statistics
merged (`RunningMoments`), rate pooling accumulated per bin (`BinPooler`).
Shorter media take the whole-clip path, whose features are unchanged.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from amid.extract.audio import BLOCK_SECONDS, LONG_SECONDS, clip_seconds, probe_audio, stream_audio
from amid.extract.extractors.base import MediaError, MediaItem
from amid.extract.media import stream_video, video_frame_count

LONG_FRAMES = 512  # sampled video frames above which a video is streamed


@dataclass(frozen=True)
class LongAudio:
    """A recording to stream at `rate` Hz ([start, end) seconds of `path`)."""

    path: Path
    rate: int
    start: float | None
    end: float | None
    seconds: float | None  # from the header; None when it does not say

    def __len__(self) -> int:  # samples, for the runner's bucketing
        return int((self.seconds or 86400.0) * self.rate)

    def blocks(self) -> Iterator[np.ndarray]:
        return stream_audio(self.path, self.rate, self.start, self.end,
                            block_seconds=BLOCK_SECONDS)


def long_audio(item: MediaItem, rate: int) -> LongAudio | None:
    """A LongAudio for an item longer than LONG_SECONDS (or of unknown length), else None.

    Probing the header also refuses implausible headers before anything is decoded.
    """
    if item.path is None:
        raise MediaError("no audio_path (and no video soundtrack)")
    seconds = clip_seconds(probe_audio(item.path), item.start, item.end)
    if seconds is not None and seconds <= LONG_SECONDS:
        return None
    return LongAudio(Path(item.path), rate, item.start, item.end, seconds)


@dataclass(frozen=True)
class LongVideo:
    """A video whose sampled frames are streamed (the arguments of `load_video`)."""

    path: Path
    fps: float | None
    start: float | None
    end: float | None
    max_frames: int | None
    folder_fps: float
    frames: int  # estimated, for bucketing

    def __len__(self) -> int:
        return self.frames

    def stream(self) -> Iterator[np.ndarray]:
        return stream_video(self.path, self.fps, self.start, self.end, self.max_frames,
                            self.folder_fps)


def long_video(item: MediaItem, fps: float | None, max_frames: int | None,
               folder_fps: float = 25.0) -> LongVideo | None:
    """A LongVideo when more than LONG_FRAMES frames would be sampled, else None.

    A header that does not say (a damaged file, mostly) takes the ordinary
    path, which reports what is wrong with the file.
    """
    if item.path is None:
        raise MediaError("no video_path")
    count = video_frame_count(item.path, fps, item.start, item.end, max_frames, folder_fps)
    if count is None or count <= LONG_FRAMES:
        return None
    return LongVideo(Path(item.path), fps, item.start, item.end, max_frames, folder_fps, count)


def batches(frames: Iterator[np.ndarray], size: int) -> Iterator[np.ndarray]:
    """Stack a frame stream into arrays of at most `size` frames."""
    block: list[np.ndarray] = []
    for frame in frames:
        block.append(frame)
        if len(block) == size:
            yield np.stack(block)
            block = []
    if block:
        yield np.stack(block)


class RunningMoments:
    """Mean and population standard deviation over rows added in blocks (Chan et al.).

    float64 throughout: the merge of a few hundred thousand log-mel frames
    stays within 1e-6 of a one-pass computation.
    """

    def __init__(self) -> None:
        self.n = 0
        self.mean: np.ndarray | None = None
        self.m2: np.ndarray | None = None

    def add(self, rows: np.ndarray) -> None:
        rows = np.asarray(rows, dtype=np.float64)
        if not len(rows):
            return
        n_b, mean_b = len(rows), rows.mean(axis=0)
        m2_b = ((rows - mean_b) ** 2).sum(axis=0)
        if self.mean is None:
            self.n, self.mean, self.m2 = n_b, mean_b, m2_b
            return
        n = self.n + n_b
        delta = mean_b - self.mean
        self.mean = self.mean + delta * (n_b / n)
        self.m2 = self.m2 + m2_b + delta**2 * (self.n * n_b / n)
        self.n = n

    @property
    def std(self) -> np.ndarray:
        return np.sqrt(self.m2 / max(self.n, 1))


class BinPooler:
    """Average frames (global index i at i / native_rate s) into bins of 1 / rate s, as they come.

    The same bins as `wav2vec2.pool_to_rate` on the whole sequence; memory is
    the pooled output.
    """

    def __init__(self, native_rate: float, rate: float) -> None:
        self.native_rate, self.rate = native_rate, rate
        self.sums: list[np.ndarray] = []
        self.counts: list[int] = []
        self.seen = 0

    def add(self, frames: np.ndarray) -> None:
        index = np.arange(self.seen, self.seen + len(frames))
        bins = np.floor(index * self.rate / self.native_rate + 1e-9).astype(np.int64)
        self.seen += len(frames)
        for b, row in zip(bins, np.asarray(frames, dtype=np.float64), strict=True):
            while len(self.sums) <= b:
                self.sums.append(np.zeros(len(row)))
                self.counts.append(0)
            self.sums[b] += row
            self.counts[b] += 1

    def result(self) -> np.ndarray:
        rows = [s / c for s, c in zip(self.sums, self.counts, strict=True) if c]
        return np.stack(rows).astype(np.float32)


def centred_slices(blocks: Iterator[np.ndarray], n_fft: int, hop: int,
                   min_frames: int = 64) -> Iterator[np.ndarray]:
    """Sample slices whose un-centred STFTs, one after another, are the centred STFT of the
    whole stream (torch.stft(center=True, pad_mode="reflect"): frame t covers samples
    [t*hop - n_fft//2, t*hop - n_fft//2 + n_fft), reflected at the two ends).

    A clip shorter than one window is zero-padded to `n_fft` first, as the
    whole-clip extractors do.
    """
    half = n_fft // 2
    buf = np.zeros(0, np.float32)
    start = 0  # global sample index of buf[0]
    done = 0  # frames covered so far
    for block in blocks:
        buf = np.concatenate([buf, block])
        stop = (start + len(buf) + half - n_fft) // hop + 1  # frames whose samples are here
        if stop - done < min_frames or start + len(buf) <= half:
            continue  # the first half + 1 samples stay until the first frames are made
        lo = done * hop - half
        left = buf[1 : half + 1][::-1] if lo < 0 else np.zeros(0, np.float32)
        yield np.concatenate([left, buf[max(lo, 0) - start : (stop - 1) * hop - half + n_fft
                                        - start]])
        done = stop
        keep = max(done * hop - half, start)
        buf, start = buf[keep - start :], keep
    total = start + len(buf)
    if total < n_fft:
        buf = np.pad(buf, (0, n_fft - total))
        total = n_fft
    last = total // hop  # one pass makes frames 0 .. total // hop
    lo = done * hop - half
    left = buf[1 : half + 1][::-1] if lo < 0 else np.zeros(0, np.float32)
    right = buf[len(buf) - half - 1 : len(buf) - 1][::-1]
    tail = np.concatenate([left, buf[max(lo, 0) - start :], right])
    yield tail[: (last - done) * hop + n_fft]
