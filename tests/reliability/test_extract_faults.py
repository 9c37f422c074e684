"""Faults during `amid-extract run`: SIGKILL, a full disk, a second writer, a changed manifest."""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from amid.cache import read_cache, write_cache
from amid.cache_writer import CacheWriter
from amid.errors import CacheError
from amid.extract.cli import app
from amid.extract.extractors import build_extractor
from amid.extract.run import run_extraction
from amid.manifest import read_manifest, write_manifest

from .conftest import assert_user_error, cli, make_project

HERE = Path(__file__).resolve().parent
PIXELS = "cache/demo/visual__pixels.h5"
NAME = "visual__pixels.h5"


def _extract_here(params: Path, *args: str):
    """`amid-extract run -m visual` in this process (the real command through typer's
    runner): for the runs that make or check a cache around the one under test, whose
    process boundary is not the point. The faulted runs (a file-size limit, a second
    process against the lock, stderr's manifest message) stay real processes. It saves
    each such run the console script's start (torch's import: most of its CPU time)."""
    return CliRunner().invoke(app, ["run", "-m", "visual", "--params", str(params), *args])


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


def _after_kill(shards: range, *, shard_tmp: int | None = None, final: bool = False,
                final_tmp: bool = False) -> list[str]:
    """What a kill leaves in the cache folder: lock file, committed shards, temporaries."""
    parts = f"{NAME}.parts"
    names = [f"{NAME}.lock", parts, f"{parts}/identity.json",
             *(f"{parts}/shard-{k:06d}.h5" for k in shards)]
    if shard_tmp is not None:
        names.append(f"{parts}/.shard-{shard_tmp:06d}.h5.PID.tmp")
    if final:
        names.append(NAME)
    if final_tmp:
        names.append(f".{NAME}.PID.tmp")
    return sorted(names)


# The kill test's samples (the first N of the tiny demo's 50) and its extension's first
# half: the driver runs about twenty extractions, each one shard per sample, so their
# cost grows with N, while the shard kill points lie within the first 5 shards and the
# others (the merge, its rename, the cleanup) happen once whatever the count.
N, HALF = 20, 10
# scenario -> (what the kill leaves, what the cache is then, samples the rerun extracts);
# N samples, one per shard; the extension runs start from a finished HALF-sample cache,
# which becomes shard 0 of the extension
EXPECTED = {
    "inside the 3rd shard write": (_after_kill(range(2), shard_tmp=2), None, N - 2),
    "5th shard written, not renamed": (_after_kill(range(4), shard_tmp=4), None, N - 4),
    "inside the final merge": (_after_kill(range(N), final_tmp=True), None, 0),
    "merge written, not renamed": (_after_kill(range(N), final_tmp=True), None, 0),
    "inside the cleanup of the shards": (_after_kill(range(1, N), final=True), "full", 0),
    "extension: inside the 2nd shard write": (_after_kill(range(2), shard_tmp=2, final=True),
                                              "half", N - HALF - 1),
    "extension: inside the final merge": (_after_kill(range(1 + N - HALF), final=True,
                                                      final_tmp=True), "half", 0),
}


@pytest.mark.slow
def test_kills_at_exact_points_leave_exactly_the_committed_work(tmp_path, tiny_demo):
    """SIGKILL inside each write of the extraction (amid.faults points, not timing): exactly
    the committed shards survive, every file left opens, the previous cache is untouched,
    and the rerun extracts only what was lost and ends byte-identical to an unbroken run."""
    params = make_project(tmp_path, tiny_demo)
    df = pd.read_csv(tmp_path / "manifest.csv", dtype=str, keep_default_na=False)
    write_manifest(df.iloc[:N], tmp_path / "manifest.csv")
    write_manifest(df.iloc[:HALF], tmp_path / "half.csv")
    text = params.read_text().replace(str(tmp_path / "manifest.csv"), str(tmp_path / "half.csv"))
    (tmp_path / "params_half.yaml").write_text(text)
    out = subprocess.run(
        [sys.executable, str(HERE / "kill_driver.py"), str(tmp_path)],
        capture_output=True, text=True, timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert [s["scenario"] for s in report["scenarios"]] == list(EXPECTED)
    for got in report["scenarios"]:
        left, cache, rerun = EXPECTED[got["scenario"]]
        where = got["scenario"]
        assert got["outcome"] == "killed", where
        assert sorted(got["after_kill"]) == left, where
        assert got["unreadable"] == [], where
        assert got["final_is_reference"] == (cache == "full"), where
        assert got["final_is_half"] == (cache == "half"), where
        assert got["resume"] == "ok" and got["resumed_extracted"] == rerun, where
        assert got["after_resume"] == [NAME], where  # no shard, lock or temporary left
        assert got["resumed_is_reference"], where
    # and the uninterrupted cache the driver compared with is an independent in-process run's
    reference = _reference(tiny_demo, tmp_path)
    final = read_cache(tmp_path / PIXELS)
    assert final.ids == reference.ids
    np.testing.assert_array_equal(final.features, reference.features)


def test_interrupted_cleanup_leftovers_are_neither_lost_nor_mixed(tmp_path, tiny_demo):
    """A kill during finalize's rmtree leaves some shards, possibly without the identity marker."""
    manifest = read_manifest(tiny_demo / "manifest.csv", tiny_demo)
    ex = build_extractor("pixels", {"grid": 8})
    out = tmp_path / "v.h5"
    real_cleanup = CacheWriter._remove_parts

    # finalize's cleanup "killed" after removing the marker and every other shard
    def partial_cleanup(self):
        for k, shard in enumerate(sorted(self.parts.glob("shard-*.h5"))):
            if k % 2 == 0:
                shard.unlink()
        (self.parts / "identity.json").unlink()

    CacheWriter._remove_parts = partial_cleanup
    try:
        run_extraction(manifest, "visual", ex, out, shard_size=4, progress=False)
    finally:
        CacheWriter._remove_parts = real_cleanup
    assert Path(f"{out}.parts").exists()
    # rerun: up to date, and the leftovers are cleaned
    again = run_extraction(manifest, "visual", ex, out, shard_size=4, progress=False)
    assert again.status == "up to date" and not Path(f"{out}.parts").exists()

    # now with leftovers again, other settings: the old shards must not enter the new cache
    CacheWriter._remove_parts = partial_cleanup
    try:
        run_extraction(manifest, "visual", ex, tmp_path / "w.h5", shard_size=4, progress=False)
    finally:
        CacheWriter._remove_parts = real_cleanup
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
    real_cleanup = CacheWriter._remove_parts

    def partial_cleanup(self):  # keeps shards 3 and 5 of 0..7
        for k, shard in enumerate(sorted(self.parts.glob("shard-*.h5"))):
            if k not in (3, 5):
                shard.unlink()

    CacheWriter._remove_parts = partial_cleanup
    try:
        run_extraction(part, "visual", ex, out, shard_size=4, progress=False)
    finally:
        CacheWriter._remove_parts = real_cleanup
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
    first = _extract_here(params)
    assert first.exit_code == 0, first.output
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
    again = _extract_here(params, *grid)
    assert again.exit_code == 0 and "(0 extracted now)" in again.stdout, again.output
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
    """While one writer holds the cache (its lock, here held by this process: no timing),
    a second `amid-extract run` is refused; once it is released, the run completes."""
    params = make_project(tmp_path, tiny_demo)
    identity = build_extractor("pixels", {"grid": 8}).identity()
    with CacheWriter(tmp_path / PIXELS, identity) as holder:
        holder.add("a-sample-of-the-first-writer", np.ones((1, 64)))
        second = cli("amid-extract", "run", "-m", "visual", "--params", str(params), "--quiet",
                     cwd=tmp_path)
        assert_user_error(second, "being written by another extraction", "visual__pixels.h5")
        assert not (tmp_path / PIXELS).exists()
    again = _extract_here(params)
    assert again.exit_code == 0, again.output
    cache = read_cache(tmp_path / PIXELS)
    assert cache.ids == _reference(tiny_demo, tmp_path).ids  # the sample not in the manifest
    assert "(50 extracted now)" in again.stdout                # is dropped, nothing else kept


@pytest.mark.slow
def test_changed_manifest_is_explained_and_only_missing_ids_are_extracted(tmp_path, tiny_demo):
    params = make_project(tmp_path, tiny_demo)
    df = pd.read_csv(tmp_path / "manifest.csv", dtype=str, keep_default_na=False)
    write_manifest(df.iloc[:40], tmp_path / "manifest.csv")
    first = _extract_here(params)
    assert first.exit_code == 0, first.output
    # ids added (the last 10) and removed (the first 5); labels changed everywhere
    changed = df.iloc[5:].copy()
    changed["label"] = changed["label"].str.upper()
    write_manifest(changed, tmp_path / "manifest.csv")
    second = cli("amid-extract", "run", "-m", "visual", "--params", str(params), cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    assert ("the manifest changed since extraction: 10 new id(s) to extract, 0 sample(s) whose "
            "media or text changed, 5 id(s) no longer in the manifest dropped") in second.stderr
    assert "extended; 45 samples (10 extracted now)" in second.stdout
    cache = read_cache(tmp_path / PIXELS)
    assert cache.ids == changed["sample_id"].tolist()
    # labels live in the manifest, not the cache: a label change alone is a no-op
    changed["label"] = changed["label"].str.lower()
    write_manifest(changed, tmp_path / "manifest.csv")
    third = _extract_here(params)
    assert "up to date; 45 samples (0 extracted now)" in third.stdout, third.output
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
