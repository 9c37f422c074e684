"""Issue 23, training on nothing without a word: degenerate features, one class, a cache
the manifest no longer describes.

- 5: the normalisation floored any std below 1e-6 to 1, an absolute floor: features of
  a small scale (every std ~1e-8) became ~0 and the student trained on nothing. A
  dimension is constant now only next to its own level and the features' typical
  spread (`data.constant_dims`); all dimensions constant is an error naming the cache,
  some a warning naming them.
- 6: one class among the training samples scored 1.0 by construction.
- 6b: a cache extracted from other transcripts than the manifest gives now was trained
  on; its `/sources` are compared with the manifest's, as extraction compares them.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import amid.cache as C
from amid.config import load_config
from amid.distill.features import feature_stats
from amid.distill.train import data_from_config
from amid.errors import CacheError, ManifestError
from amid.manifest import read_manifest, write_manifest
from amid.samples import media_items, sample_sources

from .conftest import make_train_project

CPU = torch.device("cpu")


def _rewrite(path: Path, scale: float | None = None, zero_dims: tuple[int, ...] = ()) -> None:
    """The cache at `path` again with its features scaled, or some dimensions zeroed."""
    cache = C.read_cache(path)
    seqs = []
    for k in range(len(cache.ids)):
        x = cache.sequence(k).astype(np.float64)
        if scale is not None:
            x = x * scale
        x[:, list(zero_dims)] = 0.0
        seqs.append(x.astype(np.float32))
    C.write_cache(path, cache.ids, seqs, {**C.identity_of(cache.attrs),
                                          "feature_dim": cache.feature_dim})


def _visual(root: Path) -> Path:
    return C.cache_path(root / "cache", "synth", "visual", "synthetic")


def test_features_of_a_small_scale_are_normalised_by_their_own_spread(tmp_path):
    params = make_train_project(tmp_path)
    cfg = load_config(params)
    plain = data_from_config(cfg, CPU).target["visual"]
    _rewrite(_visual(tmp_path), scale=1e-8)
    small = data_from_config(cfg, CPU).target["visual"]
    # the statistics scale with the features (before: std floored to 1, every value ~0)
    np.testing.assert_allclose(small.std, plain.std * 1e-8, rtol=1e-4)
    # so the normalised inputs the encoder reads are the same, computed independently
    # here from the raw training frames with numpy
    frames = np.concatenate([C.read_cache(_visual(tmp_path)).sequence(k)
                             for k in range(len(small.x))]).astype(np.float64)
    assert np.all(small.std < 1e-6) and np.all(frames.std(axis=0) > 0)
    valid = torch.arange(small.x.shape[1])[None, :] < small.lengths[:, None]
    z = ((small.x - torch.from_numpy(small.mean)) / torch.from_numpy(small.std))[valid]
    z_plain = ((plain.x - torch.from_numpy(plain.mean)) / torch.from_numpy(plain.std))[valid]
    torch.testing.assert_close(z, z_plain, atol=1e-3, rtol=1e-3)
    assert float(z.std()) > 0.5  # not a student trained on zeros


def test_all_zero_features_are_an_error_naming_the_cache(tmp_path):
    params = make_train_project(tmp_path)
    _rewrite(_visual(tmp_path), scale=0.0)
    with pytest.raises(CacheError, match=r"visual__synthetic\.h5.*every one of its 6 feature "
                                         r"dimensions is constant"):
        data_from_config(load_config(params), CPU)


def test_some_constant_dimensions_are_a_warning_naming_them(tmp_path, caplog):
    params = make_train_project(tmp_path)
    _rewrite(_visual(tmp_path), zero_dims=(1, 4))
    with caplog.at_level(logging.WARNING, logger="amid.distill"):
        data = data_from_config(load_config(params), CPU)
    assert "2 of 6 feature dimensions are constant" in caplog.text
    assert "dims [1, 4]" in caplog.text and "visual__synthetic.h5" in caplog.text
    assert data.target["visual"].std[1] == 1.0  # left at 0 after normalisation


def test_constant_dimension_rule_is_relative_to_the_level():
    """A constant of 1000 with float32 rounding noise is constant; a spread of 1e-8 around
    zero, when every dimension is that small, is not."""
    rng = np.random.default_rng(0)
    x = np.stack([1000 + rng.normal(size=50) * 1e-7, rng.normal(size=50) * 1e-8,
                  rng.normal(size=50) * 1e-8], axis=1).astype(np.float32)
    xt = torch.from_numpy(x)[:, None, :]  # 50 samples of one step
    _, std = feature_stats(xt, torch.ones(50, dtype=torch.int64), torch.arange(50),
                           Path("toy.h5"), [str(k) for k in range(50)])
    assert std[0] == 1.0  # constant: normalised to 0
    np.testing.assert_allclose(std[1:], x[:, 1:].astype(np.float64).std(axis=0), rtol=1e-3)


def test_a_single_class_in_training_is_refused(tmp_path):
    params = make_train_project(tmp_path)
    manifest = pd.read_csv(tmp_path / "manifest.csv", keep_default_na=False)
    manifest["label"] = "class0"
    write_manifest(manifest, tmp_path / "manifest.csv")
    with pytest.raises(ManifestError, match=r"manifest\.csv: the training samples hold only 1 "
                                            r"class \(class0\); a classifier needs at least two"):
        data_from_config(load_config(params), CPU)


def test_a_cache_of_other_transcripts_than_the_manifest_is_refused(tmp_path):
    params = make_train_project(tmp_path)
    path = tmp_path / "manifest.csv"
    df = pd.read_csv(path, keep_default_na=False)
    df["text"] = [f"transcript of {sid}" for sid in df["sample_id"]]
    write_manifest(df, path)
    text = C.cache_path(tmp_path / "cache", "synth", "text", "synthetic")
    cache = C.read_cache(text)
    manifest = read_manifest(path, tmp_path, check_media=False)
    sources = sample_sources(media_items(manifest, "text"), "text", manifest.root)
    C.write_cache(text, cache.ids, [cache.sequence(k) for k in range(len(cache.ids))],
                  {**C.identity_of(cache.attrs), "feature_dim": cache.feature_dim},
                  sources=[sources[sid] for sid in cache.ids])
    cfg = load_config(params)
    data_from_config(cfg, CPU)  # extracted from what the manifest gives: trains
    df["text"] = [f"another transcript of {sid}" for sid in df["sample_id"]]
    write_manifest(df, path)
    with pytest.raises(CacheError, match=rf"text__synthetic\.h5: {len(df)} sample\(s\) were "
                                         r"extracted from other transcripts than .*manifest\.csv"
                                         r".*amid-extract run -m text"):
        data_from_config(cfg, CPU)
