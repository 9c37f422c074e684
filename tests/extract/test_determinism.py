"""Identical features give identical files; a changed input re-extracts exactly what changed.

Issue 13 item 2 and issue 14 item 3. Causes: every cache carried a creation
timestamp and HDF5 object times (so DVC saw a new output after every
re-extraction), the merge laid chunks out in the order it filled them, and a
sample's identity in the cache was its id alone (a changed transcript or
media file kept the old features).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

from amid.cache import read_cache, read_errors, write_cache
from amid.extract.extractors import build_extractor
from amid.extract.run import run_extraction
from amid.manifest import read_manifest, write_manifest


def _copy(small_demo: Path, where: Path, rows: int = 30, broken: bool = True) -> Path:
    """A copy of part of the demo (one video broken, for an errors sidecar); its manifest."""
    shutil.copytree(small_demo, where)
    df = pd.read_csv(where / "manifest.csv", dtype=str, keep_default_na=False).iloc[:rows]
    if broken:
        (where / df.video_path[3]).write_bytes(b"RIFF\x00\x00junk" * 10)
    write_manifest(df, where / "manifest.csv")
    return where / "manifest.csv"


def _extract(manifest: Path, modality: str, name: str, params: dict, out: Path, **kwargs):
    return run_extraction(read_manifest(manifest, manifest.parent), modality,
                          build_extractor(name, params), out, progress=False, **kwargs)


def _bytes(path: Path) -> tuple[bytes, bytes]:
    sidecar = Path(f"{path}.errors.csv")
    return path.read_bytes(), sidecar.read_bytes() if sidecar.exists() else b""


@pytest.mark.parametrize(("modality", "name", "params"), [
    ("visual", "pixels", {"grid": 4}), ("audio", "logmel", {}), ("text", "hashing", {}),
])
def test_same_features_same_bytes(tmp_path, small_demo, modality, name, params):
    one = _copy(small_demo, tmp_path / "a")
    two = _copy(small_demo, tmp_path / "b")
    first = _extract(one, modality, name, params, tmp_path / "x" / "c.h5", shard_size=4)
    # another folder, another shard size (so other shards are merged), another process time
    second = _extract(two, modality, name, params, tmp_path / "y" / "c.h5", shard_size=7)
    assert _bytes(first.path) == _bytes(second.path)
    if modality == "visual":
        assert b"RIFF" not in _bytes(first.path)[1] and read_errors(first.path)
    # in place, after deleting the cache
    before = _bytes(first.path)
    first.path.unlink()
    again = _extract(one, modality, name, params, first.path)
    assert again.extracted > 0 and _bytes(again.path) == before
    # nothing inside depends on the time of writing
    with h5py.File(first.path, "r") as f:
        assert "created" not in f.attrs
        for obj in (f, *(f[k] for k in f)):  # HDF5 object times: 0 means not recorded
            info = h5py.h5o.get_info(obj.id)
            assert (info.ctime, info.mtime, info.atime, info.btime) == (0, 0, 0, 0), obj.name


def test_a_cache_rewritten_with_the_same_features_keeps_its_bytes(tmp_path):
    seqs = [np.arange(6, dtype=np.float32).reshape(3, 2), np.ones((1, 2), np.float32)]
    identity = {"modality": "audio", "extractor": "x", "model": "none", "params": {"a": 1}}
    write_cache(tmp_path / "c.h5", ["p", "q"], seqs, identity, sources=["0" * 16, "1" * 16])
    before = (tmp_path / "c.h5").read_bytes()
    os.utime(tmp_path / "c.h5", (0, 0))
    write_cache(tmp_path / "c.h5", ["p", "q"], seqs, identity, sources=["0" * 16, "1" * 16])
    assert (tmp_path / "c.h5").read_bytes() == before


def test_touching_media_changes_nothing_editing_them_re_extracts_them(tmp_path, small_demo):
    manifest = _copy(small_demo, tmp_path / "d", broken=False)
    root = manifest.parent
    out = tmp_path / "v.h5"
    _extract(manifest, "visual", "pixels", {}, out)
    before = out.read_bytes()
    df = pd.read_csv(manifest, dtype=str, keep_default_na=False)
    for path in df.video_path:  # a copy or a touch: new times, same bytes
        os.utime(root / path, (1, 1))
    report = _extract(manifest, "visual", "pixels", {}, out)
    assert report.status == "up to date" and out.read_bytes() == before
    # one file re-encoded in place: that sample, and only it, is extracted again
    shutil.copy(root / df.video_path[5], root / df.video_path[2])
    report = _extract(manifest, "visual", "pixels", {}, out)
    assert (report.status, report.extracted) == ("extended", 1)
    cache = read_cache(out)
    np.testing.assert_array_equal(cache.sequence(2), cache.sequence(5))


def test_changed_text_and_audio_path_re_extract_exactly_those_samples(tmp_path, small_demo):
    manifest = _copy(small_demo, tmp_path / "d", broken=False)
    text_cache, audio_cache = tmp_path / "t.h5", tmp_path / "a.h5"
    _extract(manifest, "text", "hashing", {}, text_cache)
    _extract(manifest, "audio", "logmel", {}, audio_cache)
    df = pd.read_csv(manifest, dtype=str, keep_default_na=False)
    df["text"] = "a different transcript for " + df["sample_id"]
    df.loc[7, "audio_path"] = df.audio_path[0]
    write_manifest(df, manifest)
    text = _extract(manifest, "text", "hashing", {}, text_cache)
    audio = _extract(manifest, "audio", "logmel", {}, audio_cache)
    assert (text.status, text.extracted) == ("extended", 30)
    assert (audio.status, audio.extracted) == ("extended", 1)
    # the results equal fresh extractions of the edited manifest (bytes and all)
    assert text_cache.read_bytes() == _extract(manifest, "text", "hashing", {},
                                               tmp_path / "t2.h5").path.read_bytes()
    assert audio_cache.read_bytes() == _extract(manifest, "audio", "logmel", {},
                                                tmp_path / "a2.h5").path.read_bytes()
    # the audio edit does not touch the text cache and the text edit not the audio one
    again = _extract(manifest, "audio", "logmel", {}, audio_cache)
    assert again.status == "up to date"


def test_a_cache_without_source_fingerprints_is_read_and_then_re_extracted(tmp_path, small_demo):
    manifest = _copy(small_demo, tmp_path / "d", rows=10, broken=False)
    out = tmp_path / "t.h5"
    report = _extract(manifest, "text", "hashing", {}, out)
    old = read_cache(out)
    # the same cache as an earlier version wrote it: no /sources
    write_cache(out, old.ids, [old.sequence(k) for k in range(len(old))],
                {**build_extractor("hashing", {}).identity()})
    assert read_cache(out).sources is None and read_cache(out).ids == old.ids  # v1 reader
    again = _extract(manifest, "text", "hashing", {}, out)
    assert (again.status, again.extracted) == ("extended", report.extracted)
    assert read_cache(out).sources == old.sources
