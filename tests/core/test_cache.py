"""The HDF5 cache format v1: round trips, foreign writers, refusals, crash-safe resume."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from amid.cache import (
    errors_path,
    identity_hash,
    read_cache,
    read_errors,
    write_cache,
)
from amid.cache_writer import CacheWriter
from amid.errors import CacheError

IDENTITY = {"modality": "audio", "extractor": "toy", "model": "none", "params": {"sr": 16000}}


def _seqs(rng: np.random.Generator, lengths: list[int], dim: int = 3) -> list[np.ndarray]:
    return [rng.normal(size=(n, dim)).astype(np.float32) for n in lengths]


def test_round_trip_keeps_order_offsets_and_values(tmp_path):
    rng = np.random.default_rng(0)
    seqs = _seqs(rng, [2, 1, 4])
    path = write_cache(tmp_path / "c.h5", ["b", "a", "c"], seqs, IDENTITY)
    cache = read_cache(path)
    assert cache.ids == ["b", "a", "c"]
    assert cache.offsets.tolist() == [0, 2, 3, 7]
    for k, seq in enumerate(seqs):
        np.testing.assert_array_equal(cache.sequence(k), seq)
    assert cache.attrs["format_version"] == 1
    assert cache.attrs["complete"] is True or cache.attrs["complete"] == 1
    assert cache.params == {"sr": 16000}
    assert cache.attrs["identity"] == identity_hash(IDENTITY)


def _foreign(path, *, version=1, complete=True, drop=None, features=None):
    """A cache written with plain h5py, following docs/data.md's format to the letter."""
    feats = features if features is not None else np.arange(12, dtype=np.float16).reshape(6, 2)
    with h5py.File(path, "w") as f:
        if drop != "ids":
            f.create_dataset("ids", data=["x", "y", "z"], dtype=h5py.string_dtype("utf-8"))
        if drop != "offsets":
            f.create_dataset("offsets", data=np.array([0, 1, 3, 6], dtype=np.int64))
        if drop != "features":
            f.create_dataset("features", data=feats, chunks=(2, 2))
        f.attrs.update(
            {
                "format_version": version,
                "modality": "visual",
                "extractor": "other",
                "model": "hub/id",
                "params": "{}",
                "feature_dim": 2,
                "complete": complete,
                "created": "2026-01-01",
            }
        )
    return path


def test_reads_a_cache_written_by_another_program(tmp_path):
    cache = read_cache(_foreign(tmp_path / "f.h5"))
    assert cache.ids == ["x", "y", "z"]
    assert cache.features.dtype == np.float16
    np.testing.assert_array_equal(cache.sequence(2), np.arange(6, 12).reshape(3, 2))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"version": 2}, "format_version is 2"),
        ({"complete": False}, "complete = false"),
        ({"drop": "offsets"}, "/offsets"),
        ({"drop": "ids"}, "/ids"),
        (
            {
                "features": np.array(
                    [[0, 1], [2, np.nan], [1, 1], [1, 1], [1, 1], [1, 1]], dtype=np.float32
                )
            },
            "NaN or infinite (first in 'y')",
        ),
    ],
)
def test_refuses_bad_caches_saying_why(tmp_path, kwargs, message):
    path = _foreign(tmp_path / "bad.h5", **kwargs)
    with pytest.raises(CacheError, match=message.replace("(", r"\(").replace(")", r"\)")):
        read_cache(path)


def test_refuses_missing_and_non_hdf5_files(tmp_path):
    with pytest.raises(CacheError, match="does not exist"):
        read_cache(tmp_path / "nope.h5")
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"not hdf5 at all")
    with pytest.raises(CacheError, match="not a readable HDF5 file"):
        read_cache(junk)


def test_writer_resumes_from_committed_shards(tmp_path):
    rng = np.random.default_rng(1)
    ids = [f"s{i}" for i in range(10)]
    seqs = dict(zip(ids, _seqs(rng, [1 + i % 3 for i in range(10)]), strict=True))
    path = tmp_path / "c.h5"
    with CacheWriter(path, IDENTITY, shard_size=3) as w:
        for sid in ids[:7]:
            w.add(sid, seqs[sid])
        w._buffer.clear()  # simulate a crash: the 7th sample was never committed
    assert not path.exists()
    with CacheWriter(path, IDENTITY, shard_size=3) as w:
        assert w.done == set(ids[:6])
        for sid in ids:
            if sid not in w.done:
                w.add(sid, seqs[sid])
        w.add_error("broken", "corrupt file")
        w.finalize(order=ids[::-1] + ["broken"])
    cache = read_cache(path)
    assert cache.ids == ids[::-1]
    for k, sid in enumerate(cache.ids):
        np.testing.assert_array_equal(cache.sequence(k), seqs[sid])
    assert read_errors(path) == {"broken": "corrupt file"}
    assert errors_path(path).exists()
    assert not (tmp_path / "c.h5.parts").exists()


def test_changed_identity_discards_old_shards(tmp_path):
    path = tmp_path / "c.h5"
    with CacheWriter(path, IDENTITY, shard_size=1) as w:
        w.add("a", np.ones((1, 3)))
    other = {**IDENTITY, "params": {"sr": 32000}}
    with CacheWriter(path, other) as w:
        assert w.done == set()


def test_second_writer_is_refused(tmp_path):
    path = tmp_path / "c.h5"
    with CacheWriter(path, IDENTITY), pytest.raises(CacheError, match="another extraction"):
        CacheWriter(path, IDENTITY).__enter__()


def test_nonfinite_features_become_errors_not_rows(tmp_path):
    path = tmp_path / "c.h5"
    with CacheWriter(path, IDENTITY) as w:
        w.add("ok", np.zeros((2, 3)))
        w.add("bad", np.full((2, 3), np.inf))
        w.finalize(order=["ok", "bad"])
    assert read_cache(path).ids == ["ok"]
    assert "NaN or infinite" in read_errors(path)["bad"]
