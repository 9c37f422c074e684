"""`logmel`: a weightless audio extractor, log-mel frames or their statistics.

torchaudio's mel spectrogram (power, `n_mels` bands, `n_fft`/`hop_length`
samples at `sample_rate`), log-compressed. `pooling: none` keeps the frame
sequence (T, n_mels); `stats` gives one clip-level vector (1, 2 * n_mels) of
per-band mean and standard deviation over time.

Clips longer than 5 minutes are streamed (`extractors.long`): the STFT frames
are computed block by block from the samples each needs (the reflect padding
of a centred STFT only at the clip's two ends, as in one pass), and `stats`
merges per-block moments in float64, so memory stays flat in the clip's
length and the features equal one pass's up to float rounding.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch
import torchaudio

from amid.extract.extractors.base import (
    AUDIO_DECODERS,
    EXTRACTORS,
    Extractor,
    ExtractorParams,
    MediaError,
    MediaItem,
)
from amid.extract.extractors.long import (
    LongAudio,
    RunningMoments,
    centred_slices,
    long_audio,
)
from amid.extract.media import load_audio
from amid.schema import option

FILTERBANK = "(the filterbank is (n_fft / 2 + 1) x n_mels x 4 bytes)"


@EXTRACTORS.register("logmel")
class LogMelExtractor(Extractor):
    modality = "audio"
    LIBRARIES = AUDIO_DECODERS  # torchaudio also makes the mel spectrogram
    # Upper bounds no real setting reaches, so a typo fails here, not in the allocator:
    # memory grows with each (a clip is resampled to sample_rate; the window and the
    # filterbank, (n_fft / 2 + 1) x n_mels floats, are built at construction).

    class Params(ExtractorParams):
        sample_rate: int = option(16000, ge=1000, le=768_000,
                                  note="Hz (a 1 s clip is 4 bytes a sample)")
        n_fft: int = option(400, ge=8, le=65_536, note=FILTERBANK)
        hop_length: int = option(160, ge=1, le=65_536)
        n_mels: int = option(40, ge=1, le=4096, note=FILTERBANK)
        f_min: float = option(0.0, ge=0)
        f_max: float = 8000.0
        pooling: Literal["none", "stats"] = "stats"

    def __init__(self, params: Any) -> None:
        super().__init__(params)
        p = params
        self._mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=p.sample_rate,
            n_fft=p.n_fft,
            hop_length=p.hop_length,
            n_mels=p.n_mels,
            f_min=p.f_min,
            f_max=p.f_max,
            power=2.0,
        )
        # the same transform on explicitly padded slices, for streamed clips
        self._mel_slice = torchaudio.transforms.MelSpectrogram(
            sample_rate=p.sample_rate, n_fft=p.n_fft, hop_length=p.hop_length, n_mels=p.n_mels,
            f_min=p.f_min, f_max=p.f_max, power=2.0, center=False,
        )

    @property
    def feature_dim(self) -> int:
        return self.params.n_mels * (2 if self.params.pooling == "stats" else 1)

    def load(self, item: MediaItem) -> Any:
        if item.path is None:
            raise MediaError("no audio_path (and no video soundtrack)")
        deferred = long_audio(item, self.params.sample_rate)
        if deferred is not None:
            return deferred
        wave = load_audio(item.path, self.params.sample_rate, start=item.start, end=item.end)
        if len(wave) < self.params.n_fft:  # shorter than one window: pad, don't crash
            wave = np.pad(wave, (0, self.params.n_fft - len(wave)))
        return wave

    def embed(self, batch: list[Any]) -> list[np.ndarray]:
        out = []
        with torch.no_grad():
            for wave in batch:
                if isinstance(wave, LongAudio):
                    out.append(self._embed_long(wave))
                    continue
                mel = self._mel(torch.from_numpy(np.ascontiguousarray(wave)))  # (n_mels, T)
                logmel = torch.log(mel + 1e-6).T  # (T, n_mels); 1e-6 floors silence
                if self.params.pooling == "stats":
                    logmel = torch.cat([logmel.mean(0), logmel.std(0, unbiased=False)])[None]
                out.append(logmel.numpy().astype(np.float32))
        return out

    def _embed_long(self, clip: LongAudio) -> np.ndarray:
        """Log-mel frames of a streamed clip, block by block; `stats` merges moments."""
        moments, frames = RunningMoments(), []
        for piece in centred_slices(clip.blocks(), self.params.n_fft, self.params.hop_length):
            with torch.no_grad():
                mel = self._mel_slice(torch.from_numpy(np.ascontiguousarray(piece)))
            logmel = torch.log(mel + 1e-6).T.numpy()
            if self.params.pooling == "stats":
                moments.add(logmel)
            else:
                frames.append(logmel.astype(np.float32))
        if self.params.pooling == "stats":
            return np.concatenate([moments.mean, moments.std])[None].astype(np.float32)
        return np.concatenate(frames)
