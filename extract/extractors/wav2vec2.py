"""`wav2vec2`: frame features of a Hugging Face wav2vec 2.0 / HuBERT / WavLM encoder.

The model (hub id or local folder; default `facebook/wav2vec2-base`) and its
feature extractor (the input normalisation) load through
`weights.load_hf`: offline mode honoured, remote code never run, missing
weights refused. `random_init: true` keeps `model`'s configuration and
feature extractor (its `config.json` and `preprocessor_config.json`, from a
local folder or the Hugging Face cache) and draws the weights from `seed`
(pipeline tests only). `model: builtin:tiny` with `random_init: true` needs
no file at all: a small wav2vec 2.0 built in code (`builtin_tiny`: the
released models' CNN, so 16 kHz in and 50 frames/s out, then 2 transformer
layers of 64 dimensions) with the standard normalising feature extractor.
Audio is resampled with torchaudio to the rate the feature extractor
declares (16 kHz for every released wav2vec 2.0 model).

`layer` picks a hidden state. 0 is the input of the first transformer layer:
the projected CNN features plus the convolutional position embedding (on
post-norm models such as wav2vec2-base also after the encoder's LayerNorm).
k = 1..L-1 is the output of transformer layer k. -1 (or L) is the model's
final output, `last_hidden_state`: on "stable layer norm" models
(wav2vec2-large-lv60, HuBERT/WavLM large) that is the last layer's output
after the encoder's final LayerNorm, which transformers' `hidden_states[-1]`
leaves out; on post-norm models the two are the same. Other negative values
count from the end of `hidden_states` (-2: the output of layer L-1). The ~50
frames/s sequence is kept (`pooling: none`), averaged into bins of
`frame_rate` per second, or averaged over the whole clip (`pooling: mean`).

Batching: clips of different lengths share a forward pass only when the
model was trained with attention masks (its feature extractor sets
`return_attention_mask`, as the layer-norm models do); then they are
zero-padded with the mask and sorted by length so little is padded. Models
without (wav2vec2-base, HuBERT base) change under zero padding, so only
chunks of one length are batched: exact features over speed.

Long recordings run in chunks of about `chunk_seconds` (default 30 s):
self-attention memory grows with the square of the length, so a chunk bounds
the peak at about heads x (50 x chunk_seconds)^2 x 4 bytes per layer
(wav2vec2-base, 30 s: 12 x 1500^2 x 4 B = 108 MB). Chunks start every
`chunk_seconds` (rounded to whole frames) and overlap by the CNN's receptive
field minus its stride (400 - 320 samples), so they give exactly the frames
one pass would: 31 s gives 1549 frames, in one chunk or two. Chunks are
normalised together (the whole clip's mean and variance) and their frames
concatenated; a frame near a chunk border sees no attention context across
it. Clips longer than 5 minutes are decoded as a stream (two passes: the
normalisation statistics, then the chunks), so memory does not grow with
the recording; the features are then its frames (pooled as asked), not the
samples.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
import torch

from amid.errors import CheckpointError, ConfigError
from amid.extract.extractors.base import (
    AUDIO_DECODERS,
    EXTRACTORS,
    ExtractorParams,
    MediaError,
    MediaItem,
)
from amid.extract.extractors.long import BinPooler, LongAudio, long_audio
from amid.extract.extractors.weights import (
    BUILTIN,
    TorchExtractor,
    check_random_init,
    load_hf,
    random_hf_model,
    random_init_files,
    random_init_name,
)
from amid.extract.media import load_audio
from amid.schema import option

MIN_SAMPLES = 400  # the CNN's receptive field: one frame needs 25 ms


def builtin_tiny(seed: int) -> tuple[Any, Any]:
    """The `builtin:tiny` feature extractor and model, weights drawn from `seed`.

    wav2vec 2.0's own convolutional encoder (kernels 10,3,3,3,3,2,2, strides
    5,2,2,2,2,2,2: a 400-sample receptive field, 320-sample hop) with 32
    channels, then 2 transformer layers of width 64; 16 kHz input normalised
    to zero mean and unit variance, as the released base models expect.
    """
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

    config = Wav2Vec2Config(
        conv_dim=(32,) * 7, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=128, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4,
    )
    processor = Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, padding_value=0.0,
                                         do_normalize=True, return_attention_mask=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return processor, Wav2Vec2Model(config)


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
    LIBRARIES = (*AUDIO_DECODERS, "transformers")
    # No LATE_DEFAULTS: the frame-exact chunking and `layer: -1` on stable-layer-norm
    # models changed features, so caches from before are re-extracted on purpose.

    class Params(ExtractorParams):
        model: str = "facebook/wav2vec2-base"  # hub id, local folder, or builtin:tiny
        layer: int = -1
        pooling: Literal["none", "mean"] = "none"
        frame_rate: float | None = None  # with pooling none: average to this many frames/s
        chunk_seconds: float = option(30.0, gt=0)
        random_init: bool = False  # tests/CI only: `model`'s architecture, seeded random weights
        seed: int = 0  # the seed of random_init

    @classmethod
    def check(cls, params: Any, where: str) -> None:
        if params.frame_rate is not None and (params.frame_rate <= 0 or params.pooling != "none"):
            raise ConfigError(f"{where}.frame_rate must be > 0, with pooling none "
                              f"(extractor {cls.name!r})")
        check_random_init(cls.name, params, where, "")  # also: builtin:tiny needs random_init

    @classmethod
    def model_name(cls, params: Any) -> str:
        return random_init_name(params.seed) if params.random_init else params.model

    def __init__(self, params: Any) -> None:
        super().__init__(params)
        from transformers import AutoFeatureExtractor, AutoModel

        p = params
        if p.model == BUILTIN:
            self.processor, model = builtin_tiny(p.seed)
        elif p.random_init:
            with random_init_files("config.json and preprocessor_config.json",
                                   "a small wav2vec 2.0 built in code"):
                self.processor = load_hf(AutoFeatureExtractor, p.model,
                                         "wav2vec2 feature extractor", check_missing=False)
                model = random_hf_model(AutoModel, p.model, "wav2vec2 model", p.seed)
        else:
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
        self.final = p.layer in (-1, layers)  # last_hidden_state, after any final LayerNorm
        self.sample_rate = int(self.processor.sampling_rate)
        self._conv = list(zip(model.config.conv_kernel, model.config.conv_stride, strict=True))
        self.stride = math.prod(model.config.conv_stride)
        # receptive field of one frame: 400 samples for wav2vec 2.0
        self.field = 1 + sum((k - 1) * math.prod(model.config.conv_stride[:i])
                             for i, (k, _) in enumerate(self._conv))
        self.native_rate = self.sample_rate / self.stride
        self.step = max(1, round(p.chunk_seconds * self.sample_rate / self.stride)) * self.stride
        # Models trained with attention masks (layer-norm feature encoders: wav2vec2-large-lv60,
        # HuBERT/WavLM large) say so in their feature extractor; only they may be zero-padded.
        self.masked = bool(getattr(self.processor, "return_attention_mask", False))

    @property
    def feature_dim(self) -> int:
        return int(self.module.config.hidden_size)

    def load(self, item: MediaItem) -> list[np.ndarray] | LongAudio:
        """The clip, normalised as the model expects, cut into chunks (or a LongAudio)."""
        if item.path is None:
            raise MediaError("no audio_path (and no video soundtrack)")
        deferred = long_audio(item, self.sample_rate)
        if deferred is not None:
            return deferred
        wave = load_audio(item.path, self.sample_rate, start=item.start, end=item.end)
        if len(wave) < self.field:
            wave = np.pad(wave, (0, self.field - len(wave)))
        values = self.processor(wave, sampling_rate=self.sample_rate, return_tensors="np")
        return self.chunks(np.asarray(values["input_values"][0], dtype=np.float32))

    def chunks(self, values: np.ndarray) -> list[np.ndarray]:
        """Overlapping chunks whose frames, concatenated, are exactly one pass's frames.

        Chunk j covers samples [j*step, j*step + step + field - stride): step /
        stride frames, the frames j*step/stride onwards. A tail shorter than the
        receptive field holds no frame of its own and is left out.
        """
        span = self.step + self.field - self.stride
        out = [values[lo : lo + span] for lo in range(0, len(values), self.step)
               if lo == 0 or len(values) - lo >= self.field]
        return out

    def _hidden(self, chunks: list[np.ndarray]) -> list[np.ndarray]:
        """Hidden states of equal-length chunks, one forward pass (no padding involved)."""
        x = torch.from_numpy(np.stack(chunks)).to(self.device)
        return list(self._states(self.module(x, output_hidden_states=not self.final)))

    def _states(self, out: Any) -> np.ndarray:
        states = out.last_hidden_state if self.final else out.hidden_states[self.params.layer]
        return states.float().cpu().numpy()

    def _hidden_masked(self, chunks: list[np.ndarray]) -> list[np.ndarray]:
        """Hidden states of chunks of any lengths: zero-padded, with the attention mask."""
        lengths = [len(c) for c in chunks]
        x = np.zeros((len(chunks), max(lengths)), dtype=np.float32)
        mask = np.zeros(x.shape, dtype=np.int64)
        for row, chunk in enumerate(chunks):
            x[row, : len(chunk)], mask[row, : len(chunk)] = chunk, 1
        out = self.module(torch.from_numpy(x).to(self.device),
                          attention_mask=torch.from_numpy(mask).to(self.device),
                          output_hidden_states=not self.final)
        return [h[: self.frames(n)] for h, n in zip(self._states(out), lengths, strict=True)]

    def frames(self, samples: int) -> int:
        """Frames the convolutional encoder makes of `samples` (each layer: (L - k) // s + 1)."""
        for kernel, stride in self._conv:
            samples = (samples - kernel) // stride + 1
        return samples

    def embed(self, batch: list[Any]) -> list[np.ndarray]:
        out: list[np.ndarray | None] = [None] * len(batch)
        short = [i for i, x in enumerate(batch) if not isinstance(x, LongAudio)]
        for i, x in enumerate(batch):
            if isinstance(x, LongAudio):
                out[i] = self._embed_long(x)
        for i, feats in zip(short, self._embed_chunked([batch[i] for i in short]), strict=True):
            out[i] = feats
        return out  # type: ignore[return-value]

    def _embed_chunked(self, batch: list[list[np.ndarray]]) -> list[np.ndarray]:
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

    def _embed_long(self, clip: LongAudio) -> np.ndarray:
        """A long recording in two streaming passes: normalisation statistics, then chunks."""
        mean, scale = 0.0, 1.0
        if getattr(self.processor, "do_normalize", False):
            n, total, squares = 0, 0.0, 0.0
            for block in clip.blocks():
                n += len(block)
                total += float(block.sum(dtype=np.float64))
                squares += float(np.square(block, dtype=np.float64).sum())
            mean = total / n
            scale = math.sqrt(max(squares / n - mean * mean, 0.0) + 1e-7)
        frames: list[np.ndarray] = []
        pooler = (BinPooler(self.native_rate, self.params.frame_rate)
                  if self.params.frame_rate is not None else None)
        total_frames, summed = 0, None
        span = self.step + self.field - self.stride
        buf, base = np.zeros(0, np.float32), 0  # buf holds samples [base, base + len(buf))

        def run(chunk: np.ndarray) -> None:
            nonlocal total_frames, summed
            with self.running():
                (h,) = self._hidden([((chunk - mean) / scale).astype(np.float32)])
            total_frames += len(h)
            if self.params.pooling == "mean":
                summed = h.astype(np.float64).sum(0) + (0 if summed is None else summed)
            elif pooler is not None:
                pooler.add(h)
            else:
                frames.append(h)

        for block in clip.blocks():
            buf = np.concatenate([buf, block])
            while len(buf) >= span:
                run(buf[:span])
                buf, base = buf[self.step:], base + self.step
        if base == 0 or len(buf) >= self.field:  # the tail, as `chunks` keeps it
            run(np.pad(buf, (0, max(0, self.field - len(buf)))))
        if self.params.pooling == "mean":
            return (summed / total_frames)[None].astype(np.float32)
        if pooler is not None:
            return pooler.result()
        return np.concatenate(frames).astype(np.float32)
