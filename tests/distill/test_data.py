"""Loading caches + manifest into dense device tensors (amid.distill.data)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from amid.cache import cache_path, read_cache, write_cache
from amid.distill.features import pad_sequences, subsample_steps
from amid.distill.train import data_from_config
from amid.errors import CacheError, ManifestError
from amid.manifest import write_manifest

from .conftest import make_dataset


def test_pad_sequences_matches_a_naive_loop(tmp_path):
    rng = np.random.default_rng(1)
    seqs = [rng.normal(size=(t, 3)).astype(np.float32) for t in (2, 5, 1, 4)]
    path = write_cache(tmp_path / "c.h5", ["a", "b", "c", "d"], seqs,
                       {"modality": "visual", "extractor": "x", "model": "m", "params": {}})
    cache = read_cache(path)
    rows = np.array([3, -1, 1, 0])
    x, lengths = pad_sequences(cache, rows)
    assert x.shape == (4, 5, 3)
    assert lengths.tolist() == [4, 1, 5, 2]
    expect = np.zeros((4, 5, 3), np.float32)
    for i, r in enumerate(rows):
        if r >= 0:
            expect[i, : len(seqs[r])] = seqs[r]
    np.testing.assert_array_equal(x, expect)


def test_long_sequences_are_subsampled_evenly(tmp_path):
    seq = np.arange(10, dtype=np.float32)[:, None]
    path = write_cache(tmp_path / "c.h5", ["a", "b"], [seq, seq[:2]],
                       {"modality": "audio", "extractor": "x", "model": "m", "params": {}})
    x, lengths = pad_sequences(read_cache(path), np.array([0, 1]), max_steps=4)
    assert lengths.tolist() == [4, 2]
    assert x[0, :, 0].tolist() == [0.0, 3.0, 6.0, 9.0]  # linspace(0, 9, 4) rounded
    assert x[1, :, 0].tolist() == [0.0, 1.0, 0.0, 0.0]
    assert subsample_steps(3, 5).tolist() == [0, 1, 2]


def test_alignment_splits_labels_and_missing_aux(tmp_path):
    syn = make_dataset(tmp_path, missing_aux=7)
    data = data_from_config(syn.cfg, torch.device("cpu"))
    assert data.ids == syn.ids  # manifest order
    assert data.classes == ["class0", "class1", "class2", "class3"]
    np.testing.assert_array_equal(data.labels.numpy(), syn.labels)
    for split in ("train", "val", "test"):
        expect = [i for i, s in enumerate(syn.splits) if s == split]
        assert data.splits[split].tolist() == expect
    present = data.aux_present.numpy()
    assert present.sum() == len(syn.ids) - 7 and not present[:7].any()
    assert data.auxiliary["audio"].lengths[:7].tolist() == [1] * 7
    # the normalisation statistics come from the training split's valid frames only
    cache = read_cache(cache_path(tmp_path / "cache", "synth", "visual", "synthetic"))
    train = [k for k, s in enumerate(syn.splits) if s == "train"]
    frames = np.concatenate([cache.sequence(k) for k in train])
    np.testing.assert_allclose(data.target["visual"].mean, frames.mean(0), rtol=1e-5, atol=1e-6)
    # a batch is an index slice
    b = data.batch(torch.tensor([5, 0]))
    x, lengths = b.target["visual"]
    assert torch.equal(x[1, : lengths[1]], torch.from_numpy(cache.sequence(0)))
    assert b.teacher_rows is not None  # some auxiliary features are missing
    # the rows with every auxiliary modality, counted from the fixture (rows 0..6 lack them)
    b = data.batch(torch.tensor([5, 9, 0, 12]))
    assert b.teacher_rows.tolist() == [k for k, r in enumerate([5, 9, 0, 12]) if r >= 7]
    # a stack's batch (M, B) does not select them (the members would differ; no host sync)
    stacked = data.batch(torch.tensor([[5, 9], [0, 12]]), pair_rows=False)
    assert stacked.teacher_rows is None and stacked.labels.shape == (2, 2)


def test_samples_missing_from_a_target_cache_are_dropped(tmp_path):
    syn = make_dataset(tmp_path)
    path = cache_path(tmp_path / "cache", "synth", "visual", "synthetic")
    cache = read_cache(path)
    keep = list(range(3, len(cache.ids)))
    write_cache(path, [cache.ids[k] for k in keep], [cache.sequence(k) for k in keep],
                {"modality": "visual", "extractor": "synthetic", "model": "none", "params": {}})
    data = data_from_config(syn.cfg, torch.device("cpu"))
    assert data.ids == syn.ids[3:]
    assert data.dropped == {"visual": 3}
    assert bool(data.aux_present.all())


def test_a_cache_lacking_most_ids_is_an_error(tmp_path):
    syn = make_dataset(tmp_path)
    path = cache_path(tmp_path / "cache", "synth", "audio", "synthetic")
    write_cache(path, ["other1", "other2"], [np.zeros((1, 8), np.float32)] * 2,
                {"modality": "audio", "extractor": "synthetic", "model": "none", "params": {}})
    with pytest.raises(CacheError, match="audio__synthetic.h5: holds only 0 of"):
        data_from_config(syn.cfg, torch.device("cpu"))


def test_a_class_only_in_test_is_an_error(tmp_path):
    syn = make_dataset(tmp_path)
    df = pd.read_csv(tmp_path / "manifest.csv", dtype=str, keep_default_na=False)
    df.loc[df["label"] == "class2", "split"] = "test"
    write_manifest(df, tmp_path / "manifest.csv")
    with pytest.raises(ManifestError, match=r"\['class2'\] have no training sample.*only in test"):
        data_from_config(syn.cfg, torch.device("cpu"))


def test_blockwise_padding_and_statistics_equal_the_whole_array_way(tmp_path, monkeypatch):
    """Blocks of a few values (many blocks per sample) give the naive results exactly."""
    from amid.distill import features

    syn = make_dataset(tmp_path, visual_len=(2, 9))
    monkeypatch.setattr(features, "_BLOCK", 50)  # 4 steps of 12-d visual frames per block
    data = data_from_config(syn.cfg, torch.device("cpu"))
    cache = read_cache(cache_path(syn.root / "cache", "synth", "visual", "synthetic"))
    index = {sid: k for k, sid in enumerate(cache.ids)}
    rows = [index[sid] for sid in data.ids]
    v = data.target["visual"]
    for k, r in enumerate(rows):  # each padded row is the cached sequence, then zeros
        seq = cache.sequence(r)
        n = int(v.lengths[k])
        assert n == len(seq)
        np.testing.assert_array_equal(v.x[k, :n].numpy(), seq)
        assert not v.x[k, n:].any()
    train = data.splits["train"].numpy()
    frames = np.concatenate([cache.sequence(rows[k]) for k in train]).astype(np.float64)
    np.testing.assert_allclose(v.mean, frames.mean(axis=0), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(v.std, frames.std(axis=0), rtol=1e-6)


def test_read_ids_reads_the_ids_alone(tmp_path):
    from amid.cache import read_ids

    syn = make_dataset(tmp_path)
    path = cache_path(syn.root / "cache", "synth", "audio", "synthetic")
    assert read_ids(path) == read_cache(path).ids
    with pytest.raises(CacheError, match="not-there"):
        read_ids(tmp_path / "not-there.h5")
