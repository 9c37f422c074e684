"""The extraction runner through the CLI: resume after SIGKILL, identity, extension, errors."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from repo_data import DEMO_PARAMS  # tests/extract/fixtures, on pytest's pythonpath
from typer.testing import CliRunner

from amid.cache import read_cache, read_errors
from amid.extract.cli import app
from amid.extract.extractors import build_extractor
from amid.extract.run import run_extraction
from amid.manifest import read_manifest, write_manifest

ROOT = Path(__file__).resolve().parents[2]


def _project(tmp_path: Path, demo: Path, rows: int | None = None, **extract_overrides) -> Path:
    """params.yaml for `demo` with the manifest's first `rows` samples (all by default): the
    console-script tests take fewer, as nothing they check depends on how many there are,
    while each sample costs every one of their runs its decoding."""
    params = yaml.safe_load(DEMO_PARAMS.read_text())
    params["dataset"].update(
        root=str(demo), manifest=str(tmp_path / "manifest.csv"), cache_dir=str(tmp_path / "cache")
    )
    for modality, values in extract_overrides.items():
        params["extract"][modality].update(values)
    df = pd.read_csv(demo / "manifest.csv", dtype=str, keep_default_na=False)
    write_manifest(df if rows is None else df.iloc[:rows], tmp_path / "manifest.csv")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    return tmp_path / "params.yaml"


def _uninterrupted_pixels(tmp_path: Path, demo: Path):
    """The visual cache of one plain in-process extraction: what every other path must equal."""
    report = run_extraction(read_manifest(tmp_path / "manifest.csv", demo), "visual",
                            build_extractor("pixels", {"grid": 8}), tmp_path / "reference.h5",
                            progress=False)
    return read_cache(report.path)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _here(*args: str):
    """The same command in this process (typer's runner), for runs whose process boundary
    is not what is tested: each console script spends seconds of CPU importing torch."""
    return CliRunner().invoke(app, list(args))


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "amid.extract.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.slow
def test_sigkill_mid_extraction_then_resume_equals_uninterrupted(tmp_path, small_demo):
    """Killed while its 4th shard of 4 samples is written but not yet renamed into place
    (a fault point, not a timed kill: the same moment on any machine), three shards are
    committed and the rerun extracts only the other 12 of 24."""
    params = _project(tmp_path, small_demo, rows=24)
    cache = tmp_path / "cache/demo/visual__pixels.h5"
    parts = Path(f"{cache}.parts")
    proc = subprocess.run(
        [sys.executable, "-m", "amid.extract.cli", "run", "-m", "visual", "--params",
         str(params), "--shard-size", "4", "--quiet"],
        cwd=tmp_path, capture_output=True, env={**os.environ, "AMID_FAULT": "shard-written:4"},
    )
    assert proc.returncode == -signal.SIGKILL
    assert not cache.exists()
    assert len(list(parts.glob("shard-*.h5"))) == 3
    out = _here("run", "-m", "visual", "--params", str(params))  # the kill was the process's
    assert out.exit_code == 0, out.output
    resumed = read_cache(cache)

    reference = _uninterrupted_pixels(tmp_path, small_demo)
    assert resumed.ids == reference.ids and len(set(resumed.ids)) == 24
    np.testing.assert_array_equal(resumed.offsets, reference.offsets)
    np.testing.assert_array_equal(resumed.features, reference.features)
    assert f"{24 - 4 * 3} extracted now" in out.stdout


def test_rerun_is_a_no_op_and_new_params_make_new_features(tmp_path, small_demo):
    params = _project(tmp_path, small_demo, rows=20)
    first = _here("run", "-m", "audio", "--params", str(params))
    assert first.exit_code == 0, first.output
    again = _here("run", "-m", "audio", "--params", str(params))
    assert "up to date" in again.stdout
    path = tmp_path / "cache/demo/audio__logmel.h5"
    before = read_cache(path)
    changed = _here("run", "-m", "audio", "--params", str(params),
                    "--set", "extract.audio.params.n_mels=20")
    assert changed.exit_code == 0 and "extracted; 20 samples (20 extracted now)" in changed.stdout
    after = read_cache(path)
    assert before.feature_dim == 80 and after.feature_dim == 40
    assert after.params["n_mels"] == 20


def test_new_manifest_rows_extend_the_cache(tmp_path, small_demo):
    manifest = read_manifest(small_demo / "manifest.csv", small_demo)
    ex = build_extractor("hashing", {})
    half = manifest.df.iloc[:50]
    write_manifest(half, tmp_path / "half.csv")
    run_extraction(
        read_manifest(tmp_path / "half.csv", small_demo),
        "text",
        ex,
        tmp_path / "t.h5",
        progress=False,
    )
    report = run_extraction(manifest, "text", ex, tmp_path / "t.h5", progress=False)
    assert report.status == "extended" and report.extracted == 50
    cache = read_cache(tmp_path / "t.h5")
    assert cache.ids == manifest.ids
    direct = run_extraction(manifest, "text", ex, tmp_path / "direct.h5", progress=False)
    np.testing.assert_array_equal(cache.features, read_cache(direct.path).features)


def test_undecodable_media_go_to_the_sidecar_and_the_rest_is_extracted(tmp_path, small_demo):
    root = tmp_path / "root"
    shutil.copytree(small_demo, root)
    df = pd.read_csv(root / "manifest.csv", dtype=str, keep_default_na=False)
    broken, empty = df.video_path[0], df.video_path[1]
    (root / broken).write_bytes(b"RIFF\x00\x00junk" * 10)
    (root / empty).write_bytes(b"")
    report = run_extraction(
        read_manifest(root / "manifest.csv", root),
        "visual",
        build_extractor("pixels", {}),
        tmp_path / "v.h5",
        progress=False,
    )
    assert report.written == 98 and report.errors == 2
    errors = read_errors(tmp_path / "v.h5")
    assert set(errors) == {df.sample_id[0], df.sample_id[1]}
    assert "empty" in errors[df.sample_id[1]]


def test_bad_config_is_one_line_not_a_traceback(tmp_path, small_demo):
    params = _project(tmp_path, small_demo)
    out = _cli(
        "run",
        "-m",
        "visual",
        "--params",
        str(params),
        "--set",
        "extract.visual.params.grd=4",
        cwd=tmp_path,
    )
    assert out.returncode == 2
    assert "unknown parameter(s) grd" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.slow
def test_torchrun_two_ranks_split_and_merge_into_the_single_process_cache(tmp_path, small_demo):
    params = _project(tmp_path, small_demo, rows=20)
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            "2",
            "--master_port",
            str(_free_port()),
            "-m",
            "amid.extract.cli",
            "run",
            "-m",
            "visual",
            "--params",
            str(params),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.count(": extracted; 10 samples") == 2  # each rank its half
    assert "merged 2 parts" in out.stdout
    merged = read_cache(tmp_path / "cache/demo/visual__pixels.h5")
    assert not list((tmp_path / "cache/demo").glob("*.part*"))
    reference = _uninterrupted_pixels(tmp_path, small_demo)
    assert merged.ids == reference.ids
    np.testing.assert_array_equal(merged.features, reference.features)


def test_bucketing_sorts_by_samples_summed_over_chunks() -> None:
    """wav2vec2 loads a list of chunks: its length is the audio's, not the chunk count."""
    size = build_extractor("pixels", {}).size  # the default Extractor.size
    assert size([np.zeros(480_000), np.zeros(16_000)]) == 496_000
    assert size([np.zeros(1000)]) < size([np.zeros(2000)])
    assert size(torch.zeros(7, 3, 8, 8)) == 7  # frames of a video
    assert size(object()) == 0
