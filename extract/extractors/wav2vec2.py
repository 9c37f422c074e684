"""`wav2vec2`: frame features of a Hugging Face wav2vec 2.0 / HuBERT / WavLM encoder.

The model (hub id or local folder; default `facebook/wav2vec2-base`) and its
feature extractor (the input normalisation) load through
`weights.load_hf`: offline mode honoured, remote code never run, missing
weights refused. Audio is resampled with torchaudio to the rate the feature
extractor declares (16 kHz for every released wav2vec 2.0 model).

`layer` picks a hidden state (0: the CNN features after projection, L: the
last transformer layer; negative counts from the end). The ~50 frames/s
sequence is kept (`pooling: none`), averaged into bins of `frame_rate` per
second, or averaged over the whole clip (`pooling: mean`, T = 1).

Batching: clips of different lengths share a forward pass only when the
model was trained with attention masks (its feature extractor sets
`return_attention_mask`, as the layer-norm models do); then they are
zero-padded with the mask and sorted by length so little is padded. Models
without (wav2vec2-base, HuBERT base) change under zero padding, so only
chunks of one length are batched: exact features over speed.

Long recordings run in `chunk_seconds` pieces (default 30 s): self-attention
memory grows with the square of the length, so a chunk bounds the peak at
about heads x (50 x chunk_seconds)^2 x 4 bytes per layer (wav2vec2-base,
30 s: 12 x 1500^2 x 4 B = 108 MB), whatever the recording's length. Chunks
are normalised together (the whole clip's mean and variance) and their
frames concatenated; the frames at a chunk border see no context across it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from amid.errors import CheckpointError, ConfigError
from amid.extract.extractors.base import EXTRACTORS, MediaError, MediaItem
from amid.extract.extractors.weights import TorchExtractor, load_hf
from amid.extract.media import load_audio

MIN_SAMPLES = 400  # the CNN's receptive field: one frame needs 25 ms


def pool_to_rate(frames: np.ndarray, native_rate: float, rate: float) -> np.ndarray:
    """Average frames (T, D) into bins of 1 / rate seconds (frame i lies at i / native_rate)."""
    bins = np.floor(np.arange(len(frames)) * rate / native_rate + 1e-9).astype(np.int64)
    sums = np.zeros((bins[-1] + 1, frames.shape[1]), dtype=np.float64)
    np.add.at(sums, bins, frames)
    counts = np.bincount(bins)[:, None]
    return (sums[counts[:, 0] > 0] / counts[counts[:, 0] > 0]).astype(np.float32)


@EXTRACTORS.register("wav2vec2")
class Wav2Vec2Extractor(TorchExtractor):
    modality = "audio"

    @dataclass(frozen=True)
    class Params:
        model: str = "facebook/wav2vec2-base"  # hub id or local folder
        layer: int = -1
        pooling: Literal["none", "mean"] = "none"
        frame_rate: float | None = None  # with pooling none: average to this many frames/s
        chunk_seconds: float = 30.0

    def __init__(self, params: Any) -> None:
        super().__init__(params)
        from transformers import AutoFeatureExtractor, AutoModel

        p = params
        if p.chunk_seconds <= 0:
            raise ConfigError(f"extractor {self.name!r}: chunk_seconds must be > 0")
        if p.frame_rate is not None and (p.frame_rate <= 0 or p.pooling != "none"):
            raise ConfigError(f"extractor {self.name!r}: frame_rate must be > 0, with pooling none")
        self.processor = load_hf(AutoFeatureExtractor, p.model, "wav2vec2 feature extractor",
                                 check_missing=False)
        model = load_hf(AutoModel, p.model, "wav2vec2 model")
        if getattr(model, "main_input_name", "") != "input_values":
            raise CheckpointError(
                f"{p.model!r} is a {type(model).__name__}, not a speech encoder taking raw "
                "audio (wav2vec 2.0, HuBERT, WavLM, data2vec-audio)"
            )
        self.module = self._frozen(model)
        layers = model.config.num_hidden_layers
        if not -(layers + 1) <= p.layer <= layers:
            raise ConfigError(f"extractor {self.name!r}: layer {p.layer} outside "
                              f"-{layers + 1}..{layers} for {p.model!r}")
        self.sample_rate = int(self.processor.sampling_rate)
        stride = math.prod(model.config.conv_stride)
        self.native_rate = self.sample_rate / stride
        self.chunk = int(round(p.chunk_seconds * self.sample_rate))
        # Models trained with attention masks (layer-norm feature encoders: wav2vec2-large-lv60,
        # HuBERT/WavLM large) say so in their feature extractor; only they may be zero-padded.
        self.masked = bool(getattr(self.processor, "return_attention_mask", False))
        self._conv = list(zip(model.config.conv_kernel, model.config.conv_stride, strict=True))

    @property
    def feature_dim(self) -> int:
        return int(self.module.config.hidden_size)

    @property
    def model(self) -> str:
        return self.params.model

    def load(self, item: MediaItem) -> list[np.ndarray]:
        """The clip, normalised as the model expects, cut into chunks."""
        if item.path is None:
            raise MediaError("no audio_path (and no video soundtrack)")
        wave = load_audio(item.path, self.sample_rate, start=item.start, end=item.end)
        if len(wave) < MIN_SAMPLES:
            wave = np.pad(wave, (0, MIN_SAMPLES - len(wave)))
        values = self.processor(wave, sampling_rate=self.sample_rate, return_tensors="np")
        values = np.asarray(values["input_values"][0], dtype=np.float32)
        chunks = [values[i : i + self.chunk] for i in range(0, len(values), self.chunk)]
        if len(chunks) > 1 and len(chunks[-1]) < MIN_SAMPLES:
            chunks[-1] = np.pad(chunks[-1], (0, MIN_SAMPLES - len(chunks[-1])))
        return chunks

    def _hidden(self, chunks: list[np.ndarray]) -> list[np.ndarray]:
        """Hidden states of equal-length chunks, one forward pass (no padding involved)."""
        x = torch.from_numpy(np.stack(chunks)).to(self.device)
        out = self.module(x, output_hidden_states=True)
        return list(out.hidden_states[self.params.layer].float().cpu().numpy())

    def _hidden_masked(self, chunks: list[np.ndarray]) -> list[np.ndarray]:
        """Hidden states of chunks of any lengths: zero-padded, with the attention mask."""
        lengths = [len(c) for c in chunks]
        x = np.zeros((len(chunks), max(lengths)), dtype=np.float32)
        mask = np.zeros(x.shape, dtype=np.int64)
        for row, chunk in enumerate(chunks):
            x[row, : len(chunk)], mask[row, : len(chunk)] = chunk, 1
        out = self.module(torch.from_numpy(x).to(self.device),
                          attention_mask=torch.from_numpy(mask).to(self.device),
                          output_hidden_states=True)
        states = out.hidden_states[self.params.layer].float().cpu().numpy()
        return [h[: self.frames(n)] for h, n in zip(states, lengths, strict=True)]

    def frames(self, samples: int) -> int:
        """Frames the convolutional encoder makes of `samples` (each layer: (L - k) // s + 1)."""
        for kernel, stride in self._conv:
            samples = (samples - kernel) // stride + 1
        return samples

    def embed(self, batch: list[Any]) -> list[np.ndarray]:
        # Without an attention mask (wav2vec2-base) zero padding changes the features, so
        # only chunks of one length share a pass (full chunks all do); with one, chunks of
        # similar length (sorted) are padded into passes of 8.
        flat = [(i, k, c) for i, chunks in enumerate(batch) for k, c in enumerate(chunks)]
        if self.masked:
            flat.sort(key=lambda entry: len(entry[2]))
            groups = [flat]
        else:
            by_length: dict[int, list[tuple[int, int, np.ndarray]]] = {}
            for entry in flat:
                by_length.setdefault(len(entry[2]), []).append(entry)
            groups = list(by_length.values())
        forward = self._hidden_masked if self.masked else self._hidden
        hidden: dict[tuple[int, int], np.ndarray] = {}
        with self.running():
            for entries in groups:
                for lo in range(0, len(entries), 8):  # 8 chunks per pass bounds memory
                    part = entries[lo : lo + 8]
                    for (i, k, _), h in zip(part, forward([c for *_, c in part]), strict=True):
                        hidden[i, k] = h
        out = []
        for i, chunks in enumerate(batch):
            frames = np.concatenate([hidden[i, k] for k in range(len(chunks))])
            if self.params.pooling == "mean":
                frames = frames.mean(axis=0, keepdims=True)
            elif self.params.frame_rate is not None:
                frames = pool_to_rate(frames, self.native_rate, self.params.frame_rate)
            out.append(frames.astype(np.float32))
        return out
