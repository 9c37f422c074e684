"""Faults during `amid-extract run`: SIGKILL, a full disk, a second writer, a changed manifest."""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

from amid.cache import read_cache, write_cache
from amid.cache_writer import CacheWriter
from amid.errors import CacheError
from amid.extract.extractors import build_extractor
from amid.extract.run import run_extraction
from amid.manifest import read_manifest, write_manifest

from .conftest import assert_user_error, cli, make_project

HERE = Path(__file__).resolve().parent
PIXELS = "cache/demo/visual__pixels.h5"


def _reference(demo: Path, tmp_path: Path, manifest: Path | None = None):
    """The cache an uninterrupted in-process run makes (the expectation)."""
    report = run_extraction(
        read_manifest(manifest or tmp_path / "manifest.csv", demo),
        "visual",
        build_extractor("pixels", {"grid": 8}),
        tmp_path / "reference.h5",
        progress=False,
    )
    return read_cache(report.path)


@pytest.mark.slow
def test_many_sigkills_lose_nothing_and_leave_only_readable_files(tmp_path, tiny_demo):
    params = make_project(tmp_path, tiny_demo)
    half = pd.read_csv(tmp_path / "manifest.csv", dtype=str, keep_default_na=False).iloc[:25]
    write_manifest(half, tmp_path / "half.csv")
    text = params.read_text().replace(str(tmp_path / "manifest.csv"), str(tmp_path / "half.csv"))
    (tmp_path / "params_half.yaml").write_text(text)
    out = subprocess.run(
        [sys.executable, str(HERE / "kill_driver.py"), str(tmp_path), "7", "24"],
        capture_output=True, text=True, timeout=240,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["problems"] == []
    assert report["kills"] >= 24 and report["rounds"] >= 3
    # the kills landed inside writes, not only between them
    assert report["during_shard_write"] >= 1
    assert report["during_final_write"] + report["during_cleanup"] >= 1
    # and the driver's last round matches an independent in-process run
    reference = _reference(tiny_demo, tmp_path)
    final = read_cache(tmp_path / PIXELS)
    assert final.ids == reference.ids
    np.testing.assert_array_equal(final.features, reference.features)


def test_interrupted_cleanup_leftovers_are_neither_lost_nor_mixed(tmp_path, tiny_demo):
    """A kill during finalize's rmtree leaves some shards, possibly without the identity marker."""
    manifest = read_manifest(tiny_demo / "manifest.csv", tiny_demo)
    ex = build_extractor("pixels", {"grid": 8})
    out = tmp_path / "v.h5"
    real_rmtree = shutil.rmtree
    # finalize's cleanup "killed" after removing the marker and every other shard
    def partial_rmtree(path, ignore_errors=False):
        for k, shard in enumerate(sorted(Path(path).glob("shard-*.h5"))):
            if k % 2 == 0:
                shard.unlink()
        (Path(path) / "identity.json").unlink()

    shutil.rmtree = partial_rmtree
    try:
        run_extraction(manifest, "visual", ex, out, shard_size=4, progress=False)
    finally:
        shutil.rmtree = real_rmtree
    assert Path(f"{out}.parts").exists()
    # rerun: up to date, and the leftovers are cleaned
    again = run_extraction(manifest, "visual", ex, out, shard_size=4, progress=False)
    assert again.status == "up to date" and not Path(f"{out}.parts").exists()

    # now with leftovers again, other settings: the old shards must not enter the new cache
    shutil.rmtree = partial_rmtree
    try:
        run_extraction(manifest, "visual", ex, tmp_path / "w.h5", shard_size=4, progress=False)
    finally:
        shutil.rmtree = real_rmtree
    # same feature width, other features: a mix would pass every shape check
    other = build_extractor("pixels", {"grid": 8, "max_frames": 3})
    report = run_extraction(manifest, "visual", other, tmp_path / "w.h5", progress=False)
    assert report.extracted == 50
    direct = run_extraction(manifest, "visual", other, tmp_path / "direct.h5", progress=False)
    np.testing.assert_array_equal(read_cache(tmp_path / "w.h5").features,
                                  read_cache(direct.path).features)


def test_extension_over_leftover_shards_keeps_every_sample(tmp_path, tiny_demo):
    """Shards missing from the middle: new shards must not be renamed onto surviving ones."""
    full = read_manifest(tiny_demo / "manifest.csv", tiny_demo)
    write_manifest(full.df.iloc[:30], tmp_path / "part.csv")
    part = read_manifest(tmp_path / "part.csv", tiny_demo)
    ex = build_extractor("pixels", {"grid": 8})
    out = tmp_path / "v.h5"
    real_rmtree = shutil.rmtree

    def partial_rmtree(path, ignore_errors=False):  # keeps shards 3 and 5 of 0..7
        for k, shard in enumerate(sorted(Path(path).glob("shard-*.h5"))):
            if k not in (3, 5):
                shard.unlink()

    shutil.rmtree = partial_rmtree
    try:
        run_extraction(part, "visual", ex, out, shard_size=4, progress=False)
    finally:
        shutil.rmtree = real_rmtree
    report = run_extraction(full, "visual", ex, out, shard_size=4, progress=False)
    assert report.status == "extended" and report.extracted == 20  # only the new ids
    direct = run_extraction(full, "visual", ex, tmp_path / "direct.h5", progress=False)
    cache, expected = read_cache(out), read_cache(direct.path)
    assert cache.ids == expected.ids
    np.testing.assert_array_equal(cache.features, expected.features)


def test_unreadable_shard_is_redone_not_fatal(tmp_path):
    identity = {"modality": "v", "extractor": "x", "model": "none", "params": {}}
    out = tmp_path / "c.h5"
    with CacheWriter(out, identity, shard_size=1) as w:
        w.add("a", np.ones((2, 3)))
        w.add("b", np.ones((2, 3)))
    shard = sorted(Path(f"{out}.parts").glob("shard-*.h5"))[0]
    shard.write_bytes(shard.read_bytes()[:100])  # a machine crash, not a process kill
    with CacheWriter(out, identity, shard_size=1) as w:
        assert w.done == {"b"}


def _fsize_limit(limit: int):
    def apply() -> None:
        # SIGXFSZ ignored: the write fails with EFBIG instead of killing the process
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


@pytest.mark.slow
def test_disk_full_during_extraction_keeps_last_good_cache_and_shards(tmp_path, tiny_demo):
    params = make_project(tmp_path, tiny_demo)
    first = cli("amid-extract", "run", "-m", "visual", "--params", str(params), "--quiet",
                cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    good = read_cache(tmp_path / PIXELS)
    # other settings: a bigger cache, re-extracted; the final file exceeds the limit
    grid = ["--set", "extract.visual.params.grid=32"]
    full = cli("amid-extract", "run", "-m", "visual", "--params", str(params), "--quiet",
               "--shard-size", "8", *grid, cwd=tmp_path, preexec=_fsize_limit(600_000))
    assert_user_error(full, "cannot write", "visual__pixels.h5", "disk full")
    kept = read_cache(tmp_path / PIXELS)  # the last good cache, intact
    np.testing.assert_array_equal(kept.features, good.features)
    shards = sorted(Path(f"{tmp_path / PIXELS}.parts").glob("shard-*.h5"))
    assert len(shards) == 7  # every committed shard is kept and loads
    assert sum(len(read_cache(s)) for s in shards) == 50
    assert not [p for p in (tmp_path / "cache/demo").rglob("*.tmp")]
    again = cli("amid-extract", "run", "-m", "visual", "--params", str(params), "--quiet", *grid,
                cwd=tmp_path)
    assert again.returncode == 0 and "(0 extracted now)" in again.stdout, again.stdout
    assert read_cache(tmp_path / PIXELS).feature_dim == 32 * 32


def test_disk_full_in_a_shard_write_is_a_cache_error(tmp_path, monkeypatch):
    import errno

    import amid.storage as storage_module

    def full(path, nbytes):
        raise OSError(errno.ENOSPC, "No space left on device")

    identity = {"modality": "v", "extractor": "x", "model": "none", "params": {}}
    with (
        pytest.raises(CacheError, match="No space left on device.*disk full"),
        CacheWriter(tmp_path / "c.h5", identity, shard_size=1) as w,
    ):
        w.add("a", np.ones((2, 3)))
        monkeypatch.setattr(storage_module, "reserve_space", full)
        w.add("b", np.ones((2, 3)))
    assert [p.name for p in Path(f"{tmp_path / 'c.h5'}.parts").iterdir()
            if p.suffix == ".h5"] == ["shard-000000.h5"]


@pytest.mark.slow
def test_second_extraction_of_the_same_cache_is_refused(tmp_path, tiny_demo):
    params = make_project(tmp_path, tiny_demo)
    parts = Path(f"{tmp_path / PIXELS}.parts")
    first = subprocess.Popen(
        [sys.executable, "-m", "amid.extract.cli", "run", "-m", "visual", "--params", str(params),
         "--shard-size", "1", "--quiet"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    deadline = time.time() + 60
    while not (parts / "shard-000001.h5").exists() and time.time() < deadline:
        time.sleep(0.005)
    # slow the first writer down so it is surely still writing
    os.kill(first.pid, signal.SIGSTOP)
    try:
        second = cli("amid-extract", "run", "-m", "visual", "--params", str(params), "--quiet",
                     cwd=tmp_path)
    finally:
        os.kill(first.pid, signal.SIGCONT)
    assert_user_error(second, "being written by another extraction", "visual__pixels.h5")
    stdout, stderr = first.communicate(timeout=120)
    assert first.returncode == 0, stderr
    cache = read_cache(tmp_path / PIXELS)
    assert len(cache.ids) == len(set(cache.ids)) == 50


@pytest.mark.slow
def test_changed_manifest_is_explained_and_only_missing_ids_are_extracted(tmp_path, tiny_demo):
    params = make_project(tmp_path, tiny_demo)
    df = pd.read_csv(tmp_path / "manifest.csv", dtype=str, keep_default_na=False)
    write_manifest(df.iloc[:40], tmp_path / "manifest.csv")
    first = cli("amid-extract", "run", "-m", "visual", "--params", str(params), cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    # ids added (the last 10) and removed (the first 5); labels changed everywhere
    changed = df.iloc[5:].copy()
    changed["label"] = changed["label"].str.upper()
    write_manifest(changed, tmp_path / "manifest.csv")
    second = cli("amid-extract", "run", "-m", "visual", "--params", str(params), cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    assert "the manifest changed since extraction: 10 new id(s) to extract, 5 id(s)" in (
        second.stderr)
    assert "extended; 45 samples (10 extracted now)" in second.stdout
    cache = read_cache(tmp_path / PIXELS)
    assert cache.ids == changed["sample_id"].tolist()
    # labels live in the manifest, not the cache: a label change alone is a no-op
    changed["label"] = changed["label"].str.lower()
    write_manifest(changed, tmp_path / "manifest.csv")
    third = cli("amid-extract", "run", "-m", "visual", "--params", str(params), cwd=tmp_path)
    assert "up to date; 45 samples (0 extracted now)" in third.stdout, third.stdout
    reference = _reference(tiny_demo, tmp_path)
    np.testing.assert_array_equal(read_cache(tmp_path / PIXELS).features, reference.features)


def test_cache_dir_that_is_a_file_is_a_user_error(tmp_path, tiny_demo):
    params = make_project(tmp_path, tiny_demo)
    (tmp_path / "cache").write_text("not a folder")
    out = cli("amid-extract", "run", "-m", "text", "--params", str(params), cwd=tmp_path)
    assert_user_error(out, "cannot create the cache folder")


def test_every_h5_written_by_write_cache_is_complete_or_absent(tmp_path, monkeypatch):
    """An exception mid-write (any kind) leaves neither the target nor a temporary."""
    identity = {"modality": "v", "extractor": "x", "model": "none", "params": {}}
    write_cache(tmp_path / "c.h5", ["a"], [np.ones((1, 2))], identity)
    real = h5py.File.create_dataset

    def boom(self, name, *args, **kwargs):
        if name == "features":
            raise KeyboardInterrupt
        return real(self, name, *args, **kwargs)

    monkeypatch.setattr(h5py.File, "create_dataset", boom)
    with pytest.raises(KeyboardInterrupt):
        write_cache(tmp_path / "c.h5", ["b"], [np.zeros((1, 2))], identity)
    assert read_cache(tmp_path / "c.h5").ids == ["a"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.h5"]
