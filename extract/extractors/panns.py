"""`panns-cnn14` / `panns-cnn14-emb512`: the PANNs CNN14 audio network (Kong et al. 2020).

Written here, with the module names and shapes of the published checkpoints
(`Cnn14_mAP=0.431.pth`, the 16 kHz `Cnn14_16k_mAP=0.438.pth`, and the 512-d
`Cnn14_emb512` used for the UCF51 features), so they load strictly:
`bn0`, `conv_block1..6` (each conv1, bn1, conv2, bn2), `fc1`, `fc_audioset`.
Embeddings are `relu(fc1(.))`, 2048-d (512-d for the emb512 variant).

The front end is rebuilt on torchaudio: periodic Hann STFT (`window_size`
points, hop `hop_size`, centred with reflect padding), power spectrum, a
slaney-scale slaney-normalised mel filterbank (librosa's default) of
`mel_bins` bands in [fmin, fmax], and 10 log10(max(x, 1e-10)) (ref 1, no
top_db). The checkpoints carry the original front end's frozen tensors
(`spectrogram_extractor.stft.conv_real/conv_imag.weight`,
`logmel_extractor.melW`); they are compared with this front end, which
catches a checkpoint loaded with the wrong sample rate or band edges, and
dropped. Any other extra or missing key is a `CheckpointError`.

A clip shorter than the network's pooling depth (32 STFT frames) is
zero-padded at the end rather than crashing. `window_seconds` gives a
sequence: one embedding per window of that length every `hop_seconds`.

Clips longer than 5 minutes are streamed, so memory does not grow with their
length: windows are cut from the stream as it is decoded; a clip-level
embedding runs the convolutional trunk on 32 s pieces of the log-mel frames
with 2.9 s of context on each side (more than the trunk's receptive field,
aligned to its 32-frame pooling grid), keeps each piece's inner time steps,
which are the steps one pass computes, and takes max + mean over all of them.

`random_init: true` draws the weights from `seed` instead of loading
`checkpoint` (pipeline tests only); the cache records `random-init(seed=N)`.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
import torchaudio.functional as AF
from torch import nn

from amid.errors import CheckpointError, ConfigError
from amid.extract.extractors.base import (
    AUDIO_DECODERS,
    EXTRACTORS,
    ExtractorParams,
    MediaError,
    MediaItem,
)
from amid.extract.extractors.long import LongAudio, centred_slices, long_audio
from amid.extract.extractors.weights import (
    TorchExtractor,
    check_random_init,
    load_state_dict,
    random_init_name,
)
from amid.extract.media import load_audio
from amid.schema import option

FRONT_END_KEYS = (
    "spectrogram_extractor.stft.conv_real.weight",
    "spectrogram_extractor.stft.conv_imag.weight",
    "logmel_extractor.melW",
)
MIN_FRAMES = 32  # five 2x2 average pools in time: fewer frames cannot pass conv_block5
# Streamed clip-level embeddings: log-mel frames per piece and context on each side, both
# multiples of the 32-frame pooling grid; the trunk's receptive field is 284 frames.
CORE_FRAMES, CONTEXT_FRAMES = 3200, 288
AMIN = 1e-10


class ConvBlock(nn.Module):
    """Two 3x3 conv + batch-norm + ReLU layers, then 2-D average pooling."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.bn2 = nn.BatchNorm2d(c_out)

    def forward(self, x: torch.Tensor, pool: int) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        return F.avg_pool2d(x, pool) if pool > 1 else x


class LogMel(nn.Module):
    """Waveform (B, n) -> log-mel (B, 1, frames, mel_bins), float32, no learnt state."""

    def __init__(self, sample_rate: int, window_size: int, hop_size: int, mel_bins: int,
                 fmin: float, fmax: float) -> None:
        super().__init__()
        self.window_size, self.hop_size = window_size, hop_size
        # Non-persistent: derived constants, kept out of the state dict.
        self.register_buffer("window", torch.hann_window(window_size, periodic=True), False)
        fb = AF.melscale_fbanks(window_size // 2 + 1, fmin, fmax, mel_bins, sample_rate,
                                norm="slaney", mel_scale="slaney")
        self.register_buffer("melW", fb, False)  # (freq_bins, mel_bins), as the checkpoints

    def forward(self, wave: torch.Tensor, center: bool = True) -> torch.Tensor:
        """`center=False`: a slice already padded by `long.centred_slices`."""
        with torch.autocast(wave.device.type, enabled=False):  # dB of bf16 powers is noise
            power = AF.spectrogram(
                wave.float(), pad=0, window=self.window, n_fft=self.window_size,
                hop_length=self.hop_size, win_length=self.window_size, power=2.0,
                normalized=False, center=center, pad_mode="reflect",
            )  # (B, freq, frames)
            mel = torch.matmul(power.transpose(1, 2), self.melW)
            return (10.0 * torch.log10(torch.clamp(mel, min=AMIN)))[:, None]


class Cnn14(nn.Module):
    """CNN14 from waveform to (embedding, clip-wise AudioSet probabilities)."""

    def __init__(self, sample_rate: int = 32000, window_size: int = 1024, hop_size: int = 320,
                 mel_bins: int = 64, fmin: float = 50.0, fmax: float = 14000.0,
                 embed_dim: int = 2048, classes: int = 527) -> None:
        super().__init__()
        self.front_end = LogMel(sample_rate, window_size, hop_size, mel_bins, fmin, fmax)
        self.bn0 = nn.BatchNorm2d(mel_bins)
        widths = [1, 64, 128, 256, 512, 1024, 2048]
        for i in range(6):
            self.add_module(f"conv_block{i + 1}", ConvBlock(widths[i], widths[i + 1]))
        self.fc1 = nn.Linear(2048, embed_dim)
        self.fc_audioset = nn.Linear(embed_dim, classes)

    def trunk(self, logmel: torch.Tensor) -> torch.Tensor:
        """(B, 1, T, mel) log-mel -> (B, 2048, T // 32) time steps, averaged over mel."""
        x = self.bn0(logmel.transpose(1, 3)).transpose(1, 3)  # normalise per mel band
        for i in range(1, 7):
            x = getattr(self, f"conv_block{i}")(x, pool=2 if i < 6 else 1)
        return x.mean(dim=3)  # over mel

    def head(self, pooled: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        embedding = F.relu(self.fc1(pooled))
        return embedding, torch.sigmoid(self.fc_audioset(embedding))

    def forward(self, wave: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.trunk(self.front_end(wave))
        return self.head(x.max(dim=2).values + x.mean(dim=2))  # over time


def dft_kernels(window_size: int) -> tuple[np.ndarray, np.ndarray]:
    """The original front end's STFT conv weights, (freq_bins, 1, window_size) each."""
    n = np.arange(window_size)
    k = np.arange(window_size // 2 + 1)[:, None]
    window = 0.5 - 0.5 * np.cos(2 * np.pi * n / window_size)  # periodic Hann
    angle = 2 * np.pi * k * n / window_size
    return (np.cos(angle) * window)[:, None], (-np.sin(angle) * window)[:, None]


def load_cnn14_state(model: Cnn14, state: dict[str, torch.Tensor], source: str) -> None:
    """Check the frozen front-end tensors against `model`'s, drop them, load the rest strictly."""
    state = dict(state)
    expected = {
        FRONT_END_KEYS[2]: model.front_end.melW.cpu().numpy(),
        **dict(zip(FRONT_END_KEYS[:2], dft_kernels(model.front_end.window_size), strict=True)),
    }
    for key, want in expected.items():
        if key not in state:
            continue  # a converted checkpoint may omit the derived tensors
        got = state.pop(key).detach().cpu().double().numpy()
        if got.shape != want.shape:
            raise CheckpointError(
                f"{source}: {key} has shape {tuple(got.shape)}, this front end has "
                f"{tuple(want.shape)}; check sample_rate, window_size and mel_bins"
            )
        scale = float(np.abs(want).max())
        err = float(np.abs(got - want).max())
        if err > 1e-4 * scale:
            raise CheckpointError(
                f"{source}: {key} differs from this front end (max difference {err:.3g}, "
                f"values up to {scale:.3g}); the checkpoint was trained with other "
                f"sample_rate/window_size/hop/fmin/fmax settings"
            )
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if tuple(own[k].shape) != tuple(state[k].shape))
    if missing or unexpected or wrong:
        shapes = [f"{k} {tuple(state[k].shape)} != {tuple(own[k].shape)}" for k in wrong]
        raise CheckpointError(
            f"{source} is not a CNN14 checkpoint for these settings: missing keys {missing}, "
            f"unexpected keys {unexpected}, shape mismatches {shapes}"
        )
    model.load_state_dict(state, strict=True)


class PannsCnn14(TorchExtractor):
    """Base of the two registered variants; `embed_dim` fixes which checkpoint fits."""

    modality = "audio"
    LIBRARIES = AUDIO_DECODERS  # the network and its front end are torch's
    embed_dim: ClassVar[int] = 2048
    window_batch: ClassVar[int] = 64  # windows per forward pass: bounds activation memory

    LATE_DEFAULTS = {"seed": 0}  # added later; caches made before it stay valid
    # sizes no checkpoint has, bounded so a typo fails here, not in the allocator

    class Params(ExtractorParams):
        checkpoint: str = ""  # a local .pth (PANNs release) or .safetensors file
        random_init: bool = False  # tests/CI only: seeded random weights, never silently
        sample_rate: int = option(32000, ge=1000, le=768_000, note="Hz")
        window_size: int = option(1024, ge=8, le=65_536)
        hop_size: int = option(320, ge=1, le=65_536)
        mel_bins: int = option(64, ge=1, le=4096)
        fmin: float = 50.0
        fmax: float = 14000.0
        classes: int = option(527, ge=1, le=100_000,
                              note="(the output layer is 2048 x classes x 4 bytes)")
        window_seconds: float | None = None  # None: one clip-level embedding (T = 1)
        hop_seconds: float | None = None  # None: = window_seconds
        seed: int = 0  # the seed of random_init

    @classmethod
    def check(cls, params: Any, where: str) -> None:
        p = params
        if not p.checkpoint and not p.random_init:
            raise ConfigError(
                f"{where}.checkpoint: extractor {cls.name!r} needs the path of a PANNs CNN14 "
                "checkpoint (e.g. Cnn14_mAP=0.431.pth from zenodo.org/record/3987831); "
                "random_init: true is for pipeline tests only; see the README section "
                "\"Working offline\""
            )
        check_random_init(cls.name, p, where, "checkpoint")
        if p.window_seconds is not None and p.window_seconds <= 0:
            raise ConfigError(f"{where}.window_seconds must be > 0 (extractor {cls.name!r})")
        if p.hop_seconds is not None and (p.window_seconds is None or p.hop_seconds <= 0):
            raise ConfigError(f"{where}.hop_seconds needs window_seconds, > 0 "
                              f"(extractor {cls.name!r})")

    @classmethod
    def model_name(cls, params: Any) -> str:
        return params.checkpoint or random_init_name(params.seed)

    def __init__(self, params: Any) -> None:
        super().__init__(params)
        p = params
        kwargs = dict(sample_rate=p.sample_rate, window_size=p.window_size, hop_size=p.hop_size,
                      mel_bins=p.mel_bins, fmin=p.fmin, fmax=p.fmax, embed_dim=self.embed_dim,
                      classes=p.classes)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(p.seed)
            model = Cnn14(**kwargs)
        if p.checkpoint:
            load_cnn14_state(model, load_state_dict(p.checkpoint, "CNN14 checkpoint"), p.checkpoint)
        self.module = self._frozen(model)
        self.min_samples = (MIN_FRAMES - 1) * p.hop_size + 1

    @property
    def feature_dim(self) -> int:
        return self.embed_dim

    def _window_shape(self) -> tuple[int, int]:
        p = self.params
        size = max(int(round(p.window_seconds * p.sample_rate)), self.min_samples)
        return size, int(round((p.hop_seconds or p.window_seconds) * p.sample_rate))

    def windows(self, wave: np.ndarray) -> np.ndarray:
        """(n_windows, samples): the whole padded clip, or fixed windows every hop."""
        if self.params.window_seconds is None:
            return self._pad(wave, self.min_samples)[None]
        size, hop = self._window_shape()
        count = 1 + math.ceil(max(0, len(wave) - size) / hop)
        wave = self._pad(wave, (count - 1) * hop + size)
        return np.lib.stride_tricks.sliding_window_view(wave, size)[::hop][:count].copy()

    @staticmethod
    def _pad(wave: np.ndarray, length: int) -> np.ndarray:
        return np.pad(wave, (0, length - len(wave))) if len(wave) < length else wave

    def load(self, item: MediaItem) -> np.ndarray | LongAudio:
        if item.path is None:
            raise MediaError("no audio_path (and no video soundtrack)")
        deferred = long_audio(item, self.params.sample_rate)
        if deferred is not None:
            return deferred
        wave = load_audio(item.path, self.params.sample_rate, start=item.start, end=item.end)
        return self.windows(wave)

    def embed(self, batch: list[Any]) -> list[np.ndarray]:
        out: list[np.ndarray | None] = [None] * len(batch)
        # Clips of equal length share a forward pass; padding others would change them.
        groups: dict[int, list[int]] = {}
        for i, windows in enumerate(batch):
            if isinstance(windows, LongAudio):
                out[i] = self._embed_long(windows)
                continue
            groups.setdefault(windows.shape[1], []).append(i)
        with self.running():
            for indices in groups.values():
                stacked = np.concatenate([batch[i] for i in indices])
                parts = []
                for lo in range(0, len(stacked), self.window_batch):
                    chunk = torch.from_numpy(stacked[lo : lo + self.window_batch]).to(self.device)
                    parts.append(self.module(chunk)[0].float().cpu().numpy())
                feats = np.concatenate(parts)
                start = 0
                for i in indices:
                    out[i] = feats[start : start + len(batch[i])]
                    start += len(batch[i])
        return out  # type: ignore[return-value]

    def _embed_long(self, clip: LongAudio) -> np.ndarray:
        return (self._windows_long(clip) if self.params.window_seconds is not None
                else self._clip_long(clip))

    def _forward_windows(self, windows: list[np.ndarray]) -> np.ndarray:
        with self.running():
            x = torch.from_numpy(np.stack(windows)).to(self.device)
            return self.module(x)[0].float().cpu().numpy()

    def _windows_long(self, clip: LongAudio) -> np.ndarray:
        """The windows of `windows`, cut from the stream as it comes (the end zero-padded)."""
        size, hop = self._window_shape()
        buf, start, k, pending, out = np.zeros(0, np.float32), 0, 0, [], []
        for block in clip.blocks():
            buf = np.concatenate([buf, block])
            while k * hop + size <= start + len(buf):
                pending.append(buf[k * hop - start : k * hop - start + size])
                k += 1
                if len(pending) == self.window_batch:
                    out.append(self._forward_windows(pending))
                    pending = []
            keep = k * hop
            if keep > start:
                buf, start = buf[keep - start :], keep
        total = start + len(buf)
        count = 1 + math.ceil(max(0, total - size) / hop)
        buf = self._pad(buf, (count - 1) * hop + size - start)
        pending += [buf[j * hop - start : j * hop - start + size] for j in range(k, count)]
        for lo in range(0, len(pending), self.window_batch):
            out.append(self._forward_windows(pending[lo : lo + self.window_batch]))
        return np.concatenate(out)

    def _clip_long(self, clip: LongAudio) -> np.ndarray:
        """One clip-level embedding, the trunk run on pieces of the log-mel frames.

        Piece j's inner frames [j*CORE, (j+1)*CORE) are computed with CONTEXT
        frames on each side; the trunk's time steps of those inner frames are
        the ones a single pass computes, so max + mean over all of them is its
        clip embedding.
        """
        front = self.module.front_end
        frames = np.zeros((0, self.params.mel_bins), np.float32)
        first = 0  # global index of frames[0]
        core = 0  # first frame of the next piece
        state = {"max": None, "sum": None, "steps": 0}

        def piece(stop: int) -> None:
            lo = max(0, core - CONTEXT_FRAMES)
            window = frames[lo - first : stop + CONTEXT_FRAMES - first]
            with self.running():
                x = torch.from_numpy(np.ascontiguousarray(window))[None, None].to(self.device)
                steps = self.module.trunk(x)[0].float().cpu().numpy()  # (2048, len // 32)
            keep = steps[:, (core - lo) // 32 : (stop - lo) // 32]
            if keep.shape[1]:
                top = keep.max(axis=1)
                state["max"] = top if state["max"] is None else np.maximum(state["max"], top)
                total = keep.sum(axis=1, dtype=np.float64)
                state["sum"] = total if state["sum"] is None else state["sum"] + total
                state["steps"] += keep.shape[1]

        for samples in centred_slices(clip.blocks(), self.params.window_size,
                                      self.params.hop_size):
            with torch.no_grad():
                mel = front(torch.from_numpy(np.ascontiguousarray(samples))[None], center=False)
            frames = np.concatenate([frames, mel[0, 0].numpy()])
            while first + len(frames) >= core + CORE_FRAMES + CONTEXT_FRAMES:
                piece(core + CORE_FRAMES)
                core += CORE_FRAMES
                drop = max(first, core - CONTEXT_FRAMES)
                frames, first = frames[drop - first :], drop
        total = first + len(frames)
        if total < MIN_FRAMES:  # as the whole-clip path pads (a long clip never is this short)
            frames = np.pad(frames, ((0, MIN_FRAMES - total), (0, 0)))
            total = MIN_FRAMES
        while core < total:
            piece(min(core + CORE_FRAMES, total))
            core += CORE_FRAMES
        pooled = state["max"] + (state["sum"] / state["steps"]).astype(np.float32)
        with self.running():
            embedding = self.module.head(torch.from_numpy(pooled)[None].to(self.device))[0]
        return embedding.float().cpu().numpy()


@EXTRACTORS.register("panns-cnn14")
class PannsCnn14Extractor(PannsCnn14):
    """CNN14, 2048-d embeddings (AudioSet checkpoints Cnn14_mAP=0.431, Cnn14_16k)."""

    embed_dim = 2048


@EXTRACTORS.register("panns-cnn14-emb512")
class PannsCnn14Emb512Extractor(PannsCnn14):
    """CNN14 with a 512-d fc1 (Cnn14_emb512), the embedding of the UCF51 features."""

    embed_dim = 512
