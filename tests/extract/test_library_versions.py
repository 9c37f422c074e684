"""A cache records the versions of h5py, numpy and the libraries its extractor uses, and no
others (issue 22): its bytes change with a library that can change its features, never with
one it does not use, so a pixels cache survives a new timm or transformers."""

from __future__ import annotations

import importlib.metadata
import json
from pathlib import Path

import pytest

from amid.cache import _library_versions, read_cache
from amid.extract.extractors import build_extractor
from amid.extract.run import merge_parts, run_extraction
from amid.manifest import read_manifest

# What each demo extractor uses, read off its code: the writer (h5py), numpy, the media
# decoders of its modality and its own model code.
USES = {
    "pixels": {"h5py", "numpy", "av", "torchvision", "torch"},
    "logmel": {"h5py", "numpy", "av", "soundfile", "torch", "torchaudio"},
    "hashing": {"h5py", "numpy", "scikit-learn"},
}
MODALITY = {"pixels": "visual", "logmel": "audio", "hashing": "text"}


@pytest.fixture
def fresh_versions():
    """The version lookup is cached per process: start and end each test without it."""
    _library_versions.cache_clear()
    yield
    _library_versions.cache_clear()


def _extract(demo: Path, name: str, out: Path, **kwargs) -> Path:
    manifest = read_manifest(demo / "manifest.csv", demo)
    run_extraction(manifest, MODALITY[name], build_extractor(name, {}), out, progress=False,
                   **kwargs)
    return out


def _recorded(path: Path) -> dict[str, str]:
    return json.loads(read_cache(path).attrs["library_versions"])


@pytest.mark.parametrize("name", sorted(USES))
def test_a_cache_records_its_extractors_libraries_only(tmp_path, small_demo, name,
                                                       fresh_versions):
    recorded = _recorded(_extract(small_demo, name, tmp_path / f"{name}.h5"))
    assert recorded == {lib: importlib.metadata.version(lib) for lib in USES[name]}


def test_other_libraries_leave_the_bytes_alone(tmp_path, small_demo, monkeypatch,
                                               fresh_versions):
    before = _extract(small_demo, "pixels", tmp_path / "a" / "v.h5").read_bytes()
    real = importlib.metadata.version

    def pretend(changed: set[str]):
        monkeypatch.setattr(importlib.metadata, "version",
                            lambda lib: "99.0" if lib in changed else real(lib))
        _library_versions.cache_clear()

    pretend({"timm", "transformers", "tokenizers", "scikit-learn", "amid"})
    same = _extract(small_demo, "pixels", tmp_path / "b" / "v.h5").read_bytes()
    assert same == before
    pretend({"torch"})  # one pixels does use: the cache says so
    other = _extract(small_demo, "pixels", tmp_path / "c" / "v.h5")
    assert other.read_bytes() != before and _recorded(other)["torch"] == "99.0"


def test_merged_parts_record_what_one_process_records(tmp_path, small_demo, fresh_versions):
    whole = _extract(small_demo, "hashing", tmp_path / "whole" / "t.h5")
    out = tmp_path / "parts" / "t.h5"
    for rank in range(2):
        _extract(small_demo, "hashing", out, rank=rank, world_size=2)
    order = read_manifest(small_demo / "manifest.csv", small_demo).df["sample_id"].tolist()
    merge_parts(out, order, 2)
    assert _recorded(out) == _recorded(whole)
    assert set(_recorded(out)) == USES["hashing"]
