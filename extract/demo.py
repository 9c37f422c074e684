"""The embedded demo dataset (README: The demo): real raw media, made offline and deterministically.

Built on scikit-learn's handwritten digits (real 8x8 images, 10 classes). Each
sample is a short video, an audio clip and a transcript, laid out as
`<split>/<label>/<sample_id>.{avi,wav,txt}` plus `manifest.csv`:

- visual (the target modality): the digit, blurred and under heavy per-frame
  noise, as an MPEG-4 `.avi`. Averaging frames helps, but the digit stays hard
  to read: the student alone is well below the teacher.
- audio (auxiliary): a tone whose pitch encodes `label mod 5`, in white noise.
  It says which pair {k, k+5} the digit belongs to, not which one.
- text (auxiliary): a transcript naming the digit's word, replaced by a random
  digit word with probability `text_noise`.

Together the auxiliary modalities pin the label down, so a full-modality
teacher clearly beats the visual-only student and distillation has something
to transfer. Everything is drawn from one seeded generator in a fixed order.
Every file is written atomically (`amid.storage`): a read-only folder or a
full disk is one error naming the file, with nothing half-written left.
"""

from __future__ import annotations

import io
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pandas as pd
import soundfile as sf
from scipy.ndimage import gaussian_filter, zoom
from sklearn.datasets import load_digits

from amid.config import DemoConfig
from amid.errors import ConfigError
from amid.extract.adapters.demo import prepare_demo
from amid.manifest import write_manifest
from amid.schema import load
from amid.sizes import check_demo_size
from amid.storage import replace_atomically, write_text

# what a failed encoder write raises besides OSError (a full disk inside FFmpeg/libsndfile)
_WRITE_ERRORS = (OSError, av.FFmpegError, RuntimeError)

WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
FPS = 8


@dataclass(frozen=True)
class DemoSpec:
    """What the demo looks like; mirrors `amid.config.DemoConfig`."""

    n_per_class: int = 60
    frames: int = 6
    frame_size: int = 32
    visual_noise: float = 0.9
    visual_blur: float = 1.2
    sample_rate: int = 16000
    duration: float = 0.5
    audio_noise: float = 0.6
    text_noise: float = 0.3
    # fraction of TRAINING annotations that name a wrong class (filed under another
    # class's folder), as web or crowd labels do; the media still show the true class,
    # validation and test stay correct
    label_noise: float = 0.0
    seed: int = 0


def tone_frequency(label: int) -> float:
    """Pitch of the audio cue: five semitone-spaced steps an octave apart."""
    return 440.0 * 2 ** ((label % 5) * 3 / 12)


def _video_frames(image: np.ndarray, spec: DemoSpec, rng: np.random.Generator) -> np.ndarray:
    """(frames, size, size, 3) uint8: the blurred digit under fresh noise each frame."""
    digit = gaussian_filter(image / 16.0, spec.visual_blur)
    digit = zoom(digit, spec.frame_size / image.shape[0], order=1)  # (size, size) in ~[0, 1]
    noise = rng.normal(0.0, spec.visual_noise, (spec.frames, *digit.shape))
    frames = np.clip(digit[None] + noise, 0.0, 1.0)
    gray = np.round(frames * 255).astype(np.uint8)
    return np.repeat(gray[..., None], 3, axis=-1)


def _write_bytes(path: Path, data: bytes) -> None:
    # encoded in memory first: the file itself is written (space reserved) and renamed by
    # amid.storage, never by the encoder's own file I/O
    with replace_atomically(path, reserve=len(data), errors=_WRITE_ERRORS) as tmp:
        tmp.write_bytes(data)


def write_video(path: Path, frames: np.ndarray, fps: int = FPS) -> None:
    """Encode RGB frames as MPEG-4 Part 2 in AVI (the container UCF-101 uses), atomically."""
    buffer = io.BytesIO()
    _encode(buffer, frames, fps)
    _write_bytes(path, buffer.getvalue())


def write_wav(path: Path, wave: np.ndarray, sample_rate: int) -> None:
    """16-bit PCM wav, atomically."""
    buffer = io.BytesIO()
    sf.write(buffer, wave, sample_rate, subtype="PCM_16", format="WAV")
    _write_bytes(path, buffer.getvalue())


def _encode(target: io.BytesIO, frames: np.ndarray, fps: int) -> None:
    with av.open(target, mode="w", format="avi") as container:
        stream = container.add_stream("mpeg4", rate=Fraction(fps))
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.bit_rate = 2_000_000
        stream.thread_count = 1  # one encoder thread keeps the bytes reproducible
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def _audio(label: int, spec: DemoSpec, rng: np.random.Generator) -> np.ndarray:
    n = int(round(spec.duration * spec.sample_rate))
    t = np.arange(n) / spec.sample_rate
    phase = rng.uniform(0, 2 * np.pi)
    wave = np.sin(2 * np.pi * tone_frequency(label) * t + phase)
    wave = wave + rng.normal(0.0, spec.audio_noise, n)
    return (0.25 * wave / np.abs(wave).max()).astype(np.float32)


def _transcript(label: int, spec: DemoSpec, rng: np.random.Generator) -> str:
    word = WORDS[label] if rng.random() >= spec.text_noise else WORDS[rng.integers(10)]
    return f"the speaker says {word}"


def make_demo(out: str | Path, spec: DemoSpec) -> pd.DataFrame:
    """Write the demo's media and `manifest.csv` under `out`; return the manifest."""
    # the ranges and size bounds of `demo.*`, for callers that did not load a config
    check_demo_size(load(DemoConfig, asdict(spec), "demo"))
    out = Path(out)
    digits = load_digits()
    rng = np.random.default_rng(spec.seed)
    # its own stream: with label_noise 0 every byte of the demo is as before
    annotator = np.random.default_rng([spec.seed, 0xA770])
    for label in range(10):
        pool = np.flatnonzero(digits.target == label)
        if spec.n_per_class > len(pool):
            raise ConfigError(
                f"demo.n_per_class is {spec.n_per_class}, but digit {label} has only {len(pool)} "
                f"images (use at most {min(np.bincount(digits.target))})"
            )
        chosen = np.sort(rng.choice(pool, spec.n_per_class, replace=False))
        n_train = round(0.6 * spec.n_per_class)
        n_val = round(0.2 * spec.n_per_class)
        for k, index in enumerate(chosen):
            split = "train" if k < n_train else "val" if k < n_train + n_val else "test"
            sample_id = f"{WORDS[label]}_{index:04d}"
            annotated = label
            if split == "train" and annotator.random() < spec.label_noise:
                annotated = (label + 1 + int(annotator.integers(9))) % 10  # any other class
            folder = out / split / WORDS[annotated]
            write_video(folder / f"{sample_id}.avi", _video_frames(digits.images[index], spec, rng))
            write_wav(folder / f"{sample_id}.wav", _audio(label, spec, rng), spec.sample_rate)
            write_text(folder / f"{sample_id}.txt", _transcript(label, spec, rng) + "\n")
    manifest = prepare_demo(out)
    write_manifest(manifest, out / "manifest.csv")
    return manifest
