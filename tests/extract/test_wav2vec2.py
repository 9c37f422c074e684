"""wav2vec2 through the same loading code as real checkpoints: a tiny random model saved
with save_pretrained, loaded by local path; layers, chunking, pooling, loud failures."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

from amid.errors import CheckpointError, ConfigError
from amid.extract.extractors import wav2vec2  # noqa: F401  (registration)
from amid.extract.extractors.base import MediaItem, build_extractor


def _save_tiny(path: Path, masked: bool = False, seed: int = 0,
               base_strides: bool = False) -> Path:
    """A tiny random wav2vec2 saved like a real one; `masked`: a layer-norm encoder whose
    feature extractor asks for attention masks (as wav2vec2-large-lv60's does);
    `base_strides`: wav2vec 2.0's own CNN kernels and strides (receptive field 400)."""
    convs = (dict(conv_dim=(8,) * 7, conv_stride=(5, 2, 2, 2, 2, 2, 2),
                  conv_kernel=(10, 3, 3, 3, 3, 2, 2)) if base_strides else
             dict(conv_dim=(16, 16, 16, 16), conv_stride=(5, 4, 4, 4), conv_kernel=(10, 4, 4, 4)))
    config = Wav2Vec2Config(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37,
        **convs,
        num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2,
        feat_extract_norm="layer" if masked else "group", do_stable_layer_norm=masked,
    )
    torch.manual_seed(seed)
    Wav2Vec2Model(config).save_pretrained(path)
    Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, do_normalize=True,
                             return_attention_mask=masked).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return _save_tiny(tmp_path_factory.mktemp("w2v") / "tiny-wav2vec2")


@pytest.fixture(scope="module")
def reference(model_dir) -> Wav2Vec2Model:
    return Wav2Vec2Model.from_pretrained(model_dir).eval()


def _hidden(reference: Wav2Vec2Model, wave: np.ndarray, layer: int) -> np.ndarray:
    """Hidden state `layer` of a normalised clip, straight from transformers."""
    x = (wave - wave.mean()) / np.sqrt(wave.var() + 1e-7)
    with torch.no_grad():
        out = reference(torch.tensor(x, dtype=torch.float32)[None], output_hidden_states=True)
    return out.hidden_states[layer][0].numpy()


def _wav(tmp_path: Path, seconds: float, seed: int = 0, rate: int = 16000
         ) -> tuple[Path, np.ndarray]:
    noise = np.random.default_rng(seed).standard_normal(int(seconds * rate))
    wave = (noise * 0.1).astype(np.float32)
    path = tmp_path / f"a{seed}.wav"
    sf.write(str(path), wave, rate, subtype="FLOAT")
    return path, wave


def test_layers_match_transformers(tmp_path, model_dir, reference) -> None:
    path, wave = _wav(tmp_path, 1.0)
    for layer in (-1, 0, 1):
        ex = build_extractor("wav2vec2", {"model": str(model_dir), "layer": layer})
        assert ex.feature_dim == 32 and ex.model == str(model_dir)
        feats = ex.embed([ex.load(MediaItem("a", path))])[0]
        # 16000 samples, strides 5, 4, 4, 4, kernels 10, 4, 4, 4: 3199, 799, 199, 49 frames
        assert feats.shape == (49, 32)
        np.testing.assert_allclose(feats, _hidden(reference, wave, layer), atol=1e-5)
    with torch.no_grad():
        x = (wave - wave.mean()) / np.sqrt(wave.var() + 1e-7)
        last = reference(torch.tensor(x)[None]).last_hidden_state[0].numpy()
    ex = build_extractor("wav2vec2", {"model": str(model_dir)})
    np.testing.assert_allclose(ex.embed([ex.load(MediaItem("a", path))])[0], last, atol=1e-5)


def test_chunks_keep_every_frame_and_resampling(tmp_path, model_dir, reference) -> None:
    path, wave = _wav(tmp_path, 1.7)
    ex = build_extractor("wav2vec2", {"model": str(model_dir), "chunk_seconds": 0.5})
    chunks = ex.load(MediaItem("a", path))
    # chunks start every 8000 samples (25 frames) and overlap by the receptive field minus
    # the stride (325 - 320 = 5 samples); the 3200-sample tail makes 9 frames of its own
    assert [len(c) for c in chunks] == [8005, 8005, 8005, 3200]
    feats = ex.embed([chunks, ex.load(MediaItem("b", _wav(tmp_path, 0.5, 1)[0]))])
    # as many frames as one pass over the whole clip: (27200 - 325) // 320 + 1 = 84
    with torch.no_grad():
        x = (wave - wave.mean()) / np.sqrt(wave.var() + 1e-7)
        one_pass = reference(torch.tensor(x)[None]).last_hidden_state[0].numpy()
    assert len(feats[0]) == len(one_pass) == 84
    # each chunk is the whole clip's normalisation, then its samples through the model alone
    expect = []
    for lo in range(0, len(x), 8000):
        piece = x[lo : lo + 8005]
        with torch.no_grad():
            expect.append(reference(torch.tensor(piece)[None]).last_hidden_state[0].numpy())
    np.testing.assert_allclose(feats[0], np.concatenate(expect), atol=1e-5)
    # the first chunk's frames equal one pass's except near its border (no attention across)
    np.testing.assert_allclose(feats[0][:25], expect[0], atol=1e-5)
    assert feats[1].shape == (24, 32)
    # an 8 kHz file is resampled to the model's 16 kHz
    low = tmp_path / "low.wav"
    sf.write(str(low), wave[::2], 8000, subtype="FLOAT")
    loaded = ex.load(MediaItem("c", low))
    assert sum(len(c) for c in loaded) == len(wave[::2]) * 2 + 3 * 5  # 3 overlaps


def test_wav2vec2_base_sized_clip_of_31_s_gives_the_one_pass_frame_count(tmp_path) -> None:
    """The issue's figure: 31 s at wav2vec 2.0's strides gives 1549 frames, in chunks too."""
    path = _save_tiny(tmp_path / "base-strides", seed=2, base_strides=True)
    ex = build_extractor("wav2vec2", {"model": str(path)})  # chunk_seconds 30
    wav, _ = _wav(tmp_path, 31.0, seed=3)
    chunks = ex.load(MediaItem("a", wav))
    assert len(chunks) == 2
    (feats,) = ex.embed([chunks])
    assert len(feats) == (31 * 16000 - 400) // 320 + 1 == 1549


def test_pooling(tmp_path, model_dir) -> None:
    path, _ = _wav(tmp_path, 1.0)
    frames = build_extractor("wav2vec2", {"model": str(model_dir)})
    seq = frames.embed([frames.load(MediaItem("a", path))])[0]  # 49 frames at 50 /s
    mean = build_extractor("wav2vec2", {"model": str(model_dir), "pooling": "mean"})
    np.testing.assert_allclose(mean.embed([mean.load(MediaItem("a", path))])[0],
                               seq.mean(axis=0, keepdims=True), atol=1e-6)
    rate = build_extractor("wav2vec2", {"model": str(model_dir), "frame_rate": 10.0})
    pooled = rate.embed([rate.load(MediaItem("a", path))])[0]
    naive = [seq[i : i + 5].mean(axis=0) for i in range(0, 49, 5)]  # 0.1 s = 5 frames
    np.testing.assert_allclose(pooled, np.stack(naive), atol=1e-6)
    with pytest.raises(ConfigError, match="layer 5 outside"):
        build_extractor("wav2vec2", {"model": str(model_dir), "layer": 5})


def test_missing_weights_fail_loudly(tmp_path, model_dir, monkeypatch) -> None:
    import shutil

    from safetensors.torch import load_file, save_file

    broken = tmp_path / "broken"
    shutil.copytree(model_dir, broken)
    (broken / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="cannot load wav2vec2 model"):
        build_extractor("wav2vec2", {"model": str(broken)})
    partial = tmp_path / "partial"
    shutil.copytree(model_dir, partial)
    state = load_file(str(model_dir / "model.safetensors"))
    del state["encoder.layers.1.attention.k_proj.weight"]
    save_file(state, str(partial / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"missing weights \['encoder.layers.1.attention"):
        build_extractor("wav2vec2", {"model": str(partial)})
    with pytest.raises(CheckpointError, match="not found"):
        build_extractor("wav2vec2", {"model": str(tmp_path / "nowhere")})
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(CheckpointError, match="looked at: .*Hugging Face cache.*HF_HUB_OFFLINE"):
        build_extractor("wav2vec2", {"model": "facebook/wav2vec2-base"})


def test_masked_models_pad_clips_of_any_length_into_one_pass(tmp_path) -> None:
    """A model trained with attention masks: padded batches equal each clip run alone."""
    path = _save_tiny(tmp_path / "tiny-masked", masked=True, seed=1)
    reference = Wav2Vec2Model.from_pretrained(path).eval()
    ex = build_extractor("wav2vec2", {"model": str(path), "layer": -1})
    assert ex.masked
    clips = [_wav(tmp_path, s, seed=i) for i, s in enumerate((2.0, 0.5, 1.3))]
    calls = []
    forward = ex.module.forward
    ex.module.forward = lambda *a, **k: calls.append(1) or forward(*a, **k)
    feats = ex.embed([ex.load(MediaItem(f"a{i}", p)) for i, (p, _) in enumerate(clips)])
    assert len(calls) == 1  # three lengths, one padded pass
    for got, (_, wave) in zip(feats, clips, strict=True):
        x = (wave - wave.mean()) / np.sqrt(wave.var() + 1e-7)
        with torch.no_grad():  # the clip alone: no padding, no mask
            expected = reference(torch.tensor(x)[None]).last_hidden_state[0].numpy()
        assert got.shape == expected.shape
        np.testing.assert_allclose(got, expected, atol=1e-4)


def test_unmasked_models_never_pad(tmp_path, model_dir) -> None:
    ex = build_extractor("wav2vec2", {"model": str(model_dir)})
    assert not ex.masked
    shapes = []
    hidden = ex._hidden
    ex._hidden = lambda chunks: shapes.append({len(c) for c in chunks}) or hidden(chunks)
    clips = [_wav(tmp_path, s, seed=i)[0] for i, s in enumerate((1.0, 0.5, 1.0))]
    ex.embed([ex.load(MediaItem(f"a{i}", p)) for i, p in enumerate(clips)])
    assert sorted(len(s) for s in shapes) == [1, 1] and len(shapes) == 2  # 2 lengths, 2 passes


def test_layer_minus_one_is_the_final_output_on_stable_layer_norm_models(tmp_path) -> None:
    """-1 is `last_hidden_state` (after the encoder's final LayerNorm), not hidden_states[-1];
    0 is what enters the first transformer layer."""
    path = _save_tiny(tmp_path / "stable", masked=True, seed=4)
    reference = Wav2Vec2Model.from_pretrained(path).eval()
    wav, wave = _wav(tmp_path, 1.0, seed=5)
    x = torch.tensor((wave - wave.mean()) / np.sqrt(wave.var() + 1e-7))[None]
    entering = []
    hook = reference.encoder.layers[0].register_forward_pre_hook(
        lambda module, args: entering.append(args[0][0].clone()))
    with torch.no_grad():
        out = reference(x, output_hidden_states=True)
    hook.remove()
    last, pre_norm = out.last_hidden_state[0].numpy(), out.hidden_states[-1][0].numpy()
    assert np.abs(last - pre_norm).max() > 0.1  # the two differ on these models

    def features(layer: int) -> np.ndarray:
        ex = build_extractor("wav2vec2", {"model": str(path), "layer": layer})
        return ex.embed([ex.load(MediaItem("a", wav))])[0]

    np.testing.assert_allclose(features(-1), last, atol=1e-5)
    np.testing.assert_allclose(features(2), last, atol=1e-5)  # L: the same final output
    np.testing.assert_allclose(features(-2), out.hidden_states[-2][0].numpy(), atol=1e-5)
    np.testing.assert_allclose(features(0), entering[0].numpy(), atol=1e-5)


def test_random_init_keeps_the_architecture_and_records_its_seed(tmp_path, model_dir) -> None:
    from amid.extract.extractors import expected_identity

    params = {"model": str(model_dir), "random_init": True, "seed": 3}
    a, b = build_extractor("wav2vec2", params), build_extractor("wav2vec2", params)
    assert a.model == "random-init(seed=3)" and a.identity() == expected_identity(
        "wav2vec2", params, "extract.audio.params")
    trained = Wav2Vec2Model.from_pretrained(model_dir).state_dict()
    other = build_extractor("wav2vec2", {**params, "seed": 4}).module.state_dict()
    key = "encoder.layers.0.attention.k_proj.weight"
    assert torch.equal(a.module.state_dict()[key], b.module.state_dict()[key])  # seeded
    assert not torch.equal(a.module.state_dict()[key], other[key])
    assert not torch.equal(a.module.state_dict()[key], trained[key])  # not the saved weights
    assert a.module.state_dict()[key].shape == trained[key].shape  # the saved architecture
    with pytest.raises(ConfigError, match=r"extract.audio.params.seed applies only with"):
        expected_identity("wav2vec2", {"model": str(model_dir), "seed": 3}, "extract.audio.params")


@pytest.mark.parametrize("params", [{}, {"frame_rate": 10.0}, {"pooling": "mean"}])
def test_long_recordings_stream_with_the_same_frames(tmp_path, model_dir, monkeypatch,
                                                     params) -> None:
    """Above LONG_SECONDS the clip is decoded as a stream; features equal the whole-clip path."""
    import amid.extract.extractors.long as long

    wav, _ = _wav(tmp_path, 2.3, seed=6)
    ex = build_extractor("wav2vec2", {"model": str(model_dir), "chunk_seconds": 0.5, **params})
    whole = ex.embed([ex.load(MediaItem("a", wav))])[0]
    monkeypatch.setattr(long, "LONG_SECONDS", 1.0)
    monkeypatch.setattr(long, "BLOCK_SECONDS", 0.3)  # blocks smaller than a chunk
    loaded = ex.load(MediaItem("a", wav))
    assert isinstance(loaded, long.LongAudio)
    streamed = ex.embed([loaded])[0]
    assert streamed.shape == whole.shape
    np.testing.assert_allclose(streamed, whole, atol=1e-4)


def test_random_init_needs_no_file_with_the_builtin_model(tmp_path, monkeypatch) -> None:
    """Offline, with an empty Hugging Face cache: `model: builtin:tiny` builds and extracts;
    the default model asks for its two files and names the way out, not `random_init`."""
    from amid.extract.extractors import expected_identity

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.chdir(tmp_path)
    wav, _ = _wav(tmp_path, 1.0)
    params = {"model": "builtin:tiny", "random_init": True}
    ex = build_extractor("wav2vec2", params)
    feats = ex.embed([ex.load(MediaItem("a", wav))])[0]
    # wav2vec 2.0's CNN: (16000 - 400) // 320 + 1 frames of a 1 s clip at 16 kHz
    assert feats.shape == (49, ex.feature_dim) and np.isfinite(feats).all()
    again = build_extractor("wav2vec2", params)
    np.testing.assert_array_equal(again.embed([again.load(MediaItem("a", wav))])[0], feats)
    other = build_extractor("wav2vec2", {**params, "seed": 1})
    assert not np.allclose(other.embed([other.load(MediaItem("a", wav))])[0], feats)
    identity = expected_identity("wav2vec2", params, "extract.audio.params")
    assert ex.identity() == identity and identity["params"]["seed"] == 0
    assert identity["model"] == "random-init(seed=0)"

    with pytest.raises(CheckpointError) as failed:
        build_extractor("wav2vec2", {"random_init": True})
    message = str(failed.value)
    assert "config.json" in message and "preprocessor_config.json" in message
    assert "model: builtin:tiny" in message and "`random_init: true` runs" not in message
    with pytest.raises(ConfigError, match="builtin:tiny' has no trained weights"):
        build_extractor("wav2vec2", {"model": "builtin:tiny"})
