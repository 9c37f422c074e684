"""Audio decoding: whole clips, or long recordings as a stream of bounded blocks.

- wav/flac/ogg go through soundfile (exact sample ranges, no container demux);
  anything else (.avi, .mp4, .mkv, ...) through PyAV, which bundles FFmpeg.
- Audio is downmixed to mono by averaging channels and resampled with
  torchaudio's band-limited sinc resampler, so features do not depend on which
  FFmpeg build decoded the file.
- The header is checked before anything is allocated (`probe_audio`): a
  sample rate outside 1 kHz..768 kHz or more than 64 channels is refused, as
  a 16 KB file claiming 1 Hz would otherwise be resampled into gigabytes.
- `load_audio` returns a whole clip; extractors use it up to `LONG_SECONDS`.
  Longer recordings go through `stream_audio`, which decodes and resamples
  `BLOCK_SECONDS` at a time (the resampler keeps enough context across block
  borders that the samples equal a one-pass resampling up to float rounding),
  so memory does not grow with the recording's length.

Every failure a dataset can contain (a missing or corrupt file, no audio
track, a zero-length or silent clip) raises `MediaError` with a short reason,
which the extraction runner writes to the cache's `.errors.csv` sidecar.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF

from amid.errors import AmidError, MediaError

SOUNDFILE_SUFFIXES = frozenset({".wav", ".flac", ".ogg"})
# Integer PCM formats FFmpeg can hand back, and the scale that maps them to [-1, 1).
_PCM_SCALE = {"u8": 128.0, "s16": 32768.0, "s32": 2147483648.0, "s64": 9.223372036854776e18}
_AUDIO_PREROLL = 0.5  # seconds decoded before a segment start, then dropped
# FFmpeg failures surface as several exception types; all mean "cannot decode".
DECODE_ERRORS = (av.FFmpegError, OSError, ValueError, RuntimeError, EOFError, IndexError)
RATES = (1000, 768_000)  # plausible sample rates, Hz
MAX_CHANNELS = 64
LONG_SECONDS = 300.0  # longer clips are streamed (extractors decide with `clip_seconds`)
BLOCK_SECONDS = 30.0  # audio decoded and resampled at a time when streaming
_LOWPASS_WIDTH, _ROLLOFF = 6, 0.99  # torchaudio's resample defaults (its kernel width)


def check_file(path: Path) -> None:
    if not path.exists():
        raise MediaError(f"file not found: {path}")
    if not path.is_file():
        raise MediaError(f"not a file: {path}")
    if path.stat().st_size == 0:
        raise MediaError(f"empty file (0 bytes): {path.name}")


def check_segment(start: float | None, end: float | None) -> None:
    if start is not None and start < 0:
        raise MediaError(f"segment start {start} is negative")
    if start is not None and end is not None and end <= start:
        raise MediaError(f"segment end {end} is not after start {start}")


@dataclass(frozen=True)
class AudioHeader:
    rate: int  # native sample rate, Hz
    channels: int
    seconds: float | None  # duration the header declares, when it declares one


def probe_audio(path: str | Path) -> AudioHeader:
    """What a file's header says, refusing implausible values before anything is decoded."""
    path = Path(path)
    check_file(path)
    try:
        if path.suffix.lower() in SOUNDFILE_SUFFIXES:
            info = sf.info(str(path))
            rate, channels = int(info.samplerate), int(info.channels)
            seconds = info.frames / rate if rate > 0 else None
        else:
            with av.open(str(path)) as container:
                if not container.streams.audio:
                    raise MediaError(f"no audio stream in {path.name}")
                stream = container.streams.audio[0]
                rate = int(stream.rate or stream.codec_context.sample_rate or 0)
                channels = int(stream.codec_context.channels or 1)
                seconds = (float(stream.duration * stream.time_base) if stream.duration
                           else container.duration / 1e6 if container.duration else None)
    except AmidError:
        raise
    except (*DECODE_ERRORS, sf.LibsndfileError) as exc:
        raise MediaError(f"cannot decode audio file {path.name}: {exc}") from None
    if not RATES[0] <= rate <= RATES[1]:
        raise MediaError(f"{path.name}: the header says sample rate {rate} Hz, not plausible for "
                         f"audio (expected {RATES[0]} to {RATES[1]} Hz); not decoded")
    if not 1 <= channels <= MAX_CHANNELS:
        raise MediaError(f"{path.name}: the header says {channels} channels (expected 1 to "
                         f"{MAX_CHANNELS}); not decoded")
    return AudioHeader(rate, channels, seconds)


def clip_seconds(header: AudioHeader, start: float | None, end: float | None) -> float | None:
    """Length of [start, end) of a file, from its header; None when the header does not say."""
    if end is not None:
        stop = end if header.seconds is None else min(end, header.seconds)
    elif header.seconds is None:
        return None
    else:
        stop = header.seconds
    return max(0.0, stop - (start or 0.0))


# ------------------------------------------------------------------ whole clips


def load_audio(path: str | Path, sample_rate: int, start: float | None = None,
               end: float | None = None, *, reject_silent: bool = True) -> np.ndarray:
    """Mono float32 waveform of `path` (or of [start, end) seconds) at `sample_rate`.

    A clip that decodes to no samples, or (with `reject_silent`) only zeros, is
    a MediaError: features of digital silence say nothing about the sample and
    would enter the cache looking like real ones.
    """
    path = Path(path)
    check_segment(start, end)
    native = probe_audio(path).rate
    wave = np.concatenate([np.zeros(0, np.float32), *_native_blocks(path, native, start, end)])
    _check_wave(wave, start, end, reject_silent, final=True)
    if native != sample_rate:
        wave = AF.resample(torch.from_numpy(wave), native, sample_rate).numpy()
    return np.ascontiguousarray(wave, dtype=np.float32)


def _check_wave(wave: np.ndarray, start: float | None, end: float | None, reject_silent: bool,
                *, final: bool, heard: bool = False) -> None:
    if not np.isfinite(wave).all():
        raise MediaError("audio contains NaN or infinite samples")
    if not final:
        return
    if wave.size == 0 and not heard:
        where = "" if start is None and end is None else f" in [{start}, {end}) s"
        raise MediaError(f"no audio samples{where} (zero-length clip)")
    if reject_silent and not heard and not np.any(wave):
        raise MediaError("audio is silent (every sample is zero)")


# ------------------------------------------------------------------ streaming


def stream_audio(path: str | Path, sample_rate: int, start: float | None = None,
                 end: float | None = None, *, block_seconds: float = BLOCK_SECONDS,
                 reject_silent: bool = True) -> Iterator[np.ndarray]:
    """Mono float32 blocks at `sample_rate` covering [start, end), about `block_seconds` each.

    Concatenated, they are what `load_audio` returns (up to float rounding of
    the resampler); memory stays at a few blocks whatever the length. The
    checks of `load_audio` apply (silence and zero length once the stream ends).
    """
    path = Path(path)
    check_segment(start, end)
    native = probe_audio(path).rate
    blocks = _native_blocks(path, native, start, end, block_seconds)
    if native != sample_rate:
        blocks = resample_stream(blocks, native, sample_rate)
    heard = nonempty = False
    for block in blocks:
        _check_wave(block, start, end, reject_silent, final=False)
        heard = heard or bool(np.any(block))
        nonempty = nonempty or bool(block.size)
        if block.size:
            yield np.ascontiguousarray(block, dtype=np.float32)
    empty = np.zeros(0 if not nonempty else 1, np.float32)
    _check_wave(empty, start, end, reject_silent, final=True, heard=heard)


def resample_stream(blocks: Iterator[np.ndarray], orig: int, new: int) -> Iterator[np.ndarray]:
    """torchaudio's sinc resampling of a stream of blocks, block by block.

    torchaudio computes output group p (`n` samples) from input samples
    [p*o - width, p*o + width + o) (o, n: the rates divided by their gcd).
    Each step resamples a slice that starts on a multiple of o with `ctx`
    samples of context on either side and keeps only the groups whose input
    lies inside it, so every kept sample saw the same inputs as in one pass.
    """
    g = math.gcd(orig, new)
    o, n = orig // g, new // g
    width = math.ceil(_LOWPASS_WIDTH * o / (min(o, n) * _ROLLOFF))
    ctx = o * (width // o + 2)  # a multiple of o, more than width
    buf = np.zeros(0, np.float32)
    base = 0  # global index of buf[0]; always a multiple of o
    done = 0  # output groups emitted so far
    total = 0  # input samples seen
    for block in blocks:
        buf = np.concatenate([buf, block])
        total += len(block)
        # groups whose input (plus context) is all in the buffer
        stop = (base + len(buf) - ctx) // o
        if stop - done < max(1, 4 * ctx // o):
            continue
        lo = max(0, done * o - ctx)
        out = AF.resample(torch.from_numpy(buf[lo - base:stop * o + ctx - base]), orig, new)
        first = (done * o - lo) // o * n
        yield out[first:first + (stop - done) * n].numpy()
        done = stop
        keep = max(0, done * o - ctx)
        buf, base = buf[keep - base:], keep
    target = math.ceil(new * total / orig)  # torchaudio's output length for the whole input
    if target > done * n:
        lo = max(0, done * o - ctx)
        out = AF.resample(torch.from_numpy(buf[lo - base:]), orig, new)
        first = (done * o - lo) // o * n
        yield out[first:first + target - done * n].numpy()


def _native_blocks(path: Path, native: int, start: float | None, end: float | None,
                   block_seconds: float | None = None) -> Iterator[np.ndarray]:
    """Mono float32 blocks at the file's own rate, [start, end) cut at sample precision."""
    reader = _soundfile_blocks if path.suffix.lower() in SOUNDFILE_SUFFIXES else _container_blocks
    try:
        yield from reader(path, native, start, end, block_seconds)
    except AmidError:
        raise
    except (*DECODE_ERRORS, sf.LibsndfileError) as exc:
        raise MediaError(f"cannot decode audio of {path.name}: {exc}") from None


def _soundfile_blocks(path: Path, native: int, start: float | None, end: float | None,
                      block_seconds: float | None) -> Iterator[np.ndarray]:
    with sf.SoundFile(str(path)) as f:
        first = int(round((start or 0.0) * native))
        if first:
            f.seek(min(first, f.frames))
        left = None if end is None else max(0, int(round(end * native)) - first)
        block = -1 if block_seconds is None else max(1, int(block_seconds * native))
        while left is None or left > 0:
            count = block if left is None else (left if block < 0 else min(block, left))
            data = f.read(frames=count, dtype="float32", always_2d=True)
            if not len(data):
                return
            yield data.mean(axis=1, dtype=np.float32)
            if left is not None:
                left -= len(data)
            if block < 0:
                return


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


def _container_blocks(path: Path, native: int, start: float | None, end: float | None,
                      block_seconds: float | None) -> Iterator[np.ndarray]:
    """The audio track's frames overlapping [start, end), trimmed at sample precision.

    Frames hold ~1000 samples; the cut is made in samples counted from the
    first kept frame's time, as one concatenation would be cut.
    """
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        first_time = lo = hi = None
        position = 0.0  # running time for streams whose frames carry no pts
        kept = 0  # samples of kept frames so far
        for frame in _frames_from(container, stream, start):
            samples = _frame_samples(frame)
            t0 = float(frame.time) if frame.time is not None else position
            position = t0 + samples.shape[1] / frame.sample_rate
            if end is not None and t0 >= end:
                return
            if start is not None and position <= start:
                continue
            if first_time is None:
                first_time = t0
                lo = max(0, int(round(((start or 0.0) - first_time) * native)))
                hi = None if end is None else max(lo, int(round((end - first_time) * native)))
            mono = samples.mean(axis=0, dtype=np.float32)
            a = kept
            kept += len(mono)
            cut = mono[max(0, lo - a): None if hi is None else max(0, hi - a)]
            if cut.size:
                yield cut
            if hi is not None and kept >= hi:
                return


def _frames_from(container: av.container.InputContainer, stream: av.AudioStream,
                 start: float | None) -> Iterator[av.AudioFrame]:
    """Decoded frames from a little before `start` (from the beginning if the seek overshoots)."""
    if not start or start <= _AUDIO_PREROLL:
        yield from container.decode(stream)
        return
    # Land well before `start`: lapped-transform codecs (AAC, MP3) decode the
    # first frame after a seek wrongly; those samples fall before `start`.
    try:
        container.seek(int((start - _AUDIO_PREROLL) / stream.time_base), stream=stream,
                       backward=True)
    except DECODE_ERRORS:
        container.seek(0)
    frames = container.decode(stream)
    first = next(frames, None)
    landed = None if first is None else (float(first.time) if first.time is not None else 0.0)
    if landed is None or landed > start - _AUDIO_PREROLL / 2:
        # The seek overshot (a poor index): decode from the beginning instead.
        container.seek(0)
        yield from container.decode(stream)
        return
    yield first
    yield from frames
