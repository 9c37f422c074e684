"""Prediction on new clips in one command (issue 12 item 7): media -> manifest -> caches -> CSV.

The expectation is computed another way: each clip decoded and embedded by the
extractor directly (no manifest, runner or cache), then the student run on that
one sequence alone.
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from amid.cache import identity_of, read_cache, read_info
from amid.errors import ManifestError
from amid.evaluate.cli import app, predict_app
from amid.extract.demo import write_video
from amid.extract.extractors import MediaItem, build_extractor
from amid.manifest import read_manifest

runner = CliRunner()
CLIPS = {"walk/a": 1, "walk/b": 2, "run/c": 3}  # sample id -> seed of its noise frames


def _clips(folder: Path) -> dict[str, Path]:
    paths = {}
    for sid, seed in CLIPS.items():
        frames = np.random.default_rng(seed).integers(0, 256, (8, 32, 32, 3), dtype=np.uint8)
        path = folder / f"{sid}.avi"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_video(path, frames, fps=8)  # 1 s: two frames at the run's fps 2
        paths[sid] = path
    return paths


def _expected(model, paths: dict[str, Path], params: dict) -> dict[str, np.ndarray]:
    extractor = build_extractor("pixels", params)
    out = {}
    for sid, path in paths.items():
        (feats,) = extractor.embed([extractor.load(MediaItem(sid, path))])
        with torch.no_grad():
            logits = model({"visual": (torch.from_numpy(feats)[None],
                                       torch.tensor([len(feats)]))})[1]
        out[sid] = logits.softmax(1)[0].numpy()
    return out


@pytest.fixture
def run(tmp_path: Path, fake):
    run = tmp_path / "runs" / "amid"
    model = fake.make_pixels_run(run)
    return run, model


def test_a_folder_of_new_clips_to_predictions_in_one_command(tmp_path, run, fake):
    run_dir, model = run
    media = tmp_path / "new"
    paths = _clips(media)
    (media / "README.txt").write_text("not a clip")  # text is not the student's modality
    out = tmp_path / "preds.csv"
    result = runner.invoke(predict_app, [str(run_dir), "--media", str(media), "-o", str(out)])
    assert result.exit_code == 0, result.output
    table = pd.read_csv(out)
    assert table["sample_id"].tolist() == sorted(CLIPS)  # path order, stems as ids
    assert list(table.columns) == ["sample_id", "predicted", "prob_cat", "prob_dog", "prob_eel"]
    want = _expected(model, paths, fake.PIXELS)
    for _, row in table.iterrows():
        probs = row.filter(like="prob_").to_numpy(dtype=float)
        np.testing.assert_allclose(probs, want[row["sample_id"]], atol=1e-5)
        assert row["predicted"] == ["cat", "dog", "eel"][int(np.argmax(want[row["sample_id"]]))]
    with h5py.File(out.with_suffix(".h5"), "r") as f:
        assert list(f["predicted"].asstr()[...]) == table["predicted"].tolist()
        assert "label" not in f
    assert not list(tmp_path.glob("**/*.h5.parts"))


def test_a_csv_with_some_labels_keeps_its_caches_and_gives_label_beside_predicted(
        tmp_path, run, fake):
    run_dir, model = run
    root = tmp_path / "data"
    paths = _clips(root)
    csv = tmp_path / "new.csv"
    csv.write_text("sample_id,label,video_path\n"
                   "a,dog,walk/a.avi\nb,,walk/b.avi\nc,cat,run/c.avi\n")  # no split, one unlabeled
    caches = tmp_path / "cache" / "new"
    args = [str(run_dir), "-m", str(csv), "--root", str(root), "--cache-dir", str(caches),
            "-o", str(tmp_path / "p.csv")]
    result = runner.invoke(app, ["predict", *args])
    assert result.exit_code == 0, result.output
    table = pd.read_csv(tmp_path / "p.csv", keep_default_na=False)
    assert list(table.columns[:3]) == ["sample_id", "predicted", "label"]
    assert table["label"].tolist() == ["dog", "", "cat"]
    want = _expected(model, {"a": paths["walk/a"], "b": paths["walk/b"], "c": paths["run/c"]},
                     fake.PIXELS)
    np.testing.assert_allclose(table.filter(like="prob_").to_numpy(),
                               np.stack([want[s] for s in "abc"]), atol=1e-5)
    # the kept cache was made with exactly the training caches' identity ...
    cache = caches / "visual__pixels.h5"
    assert identity_of(read_info(cache)) == fake.pixels_identity()
    stamp = cache.stat().st_mtime_ns
    again = runner.invoke(app, ["predict", *args])  # ... and is reused by a rerun
    assert again.exit_code == 0 and cache.stat().st_mtime_ns == stamp
    assert read_cache(cache).ids == ["a", "b", "c"]


def test_an_undecodable_clip_is_named_and_the_others_predicted(tmp_path, run):
    run_dir, _ = run
    media = tmp_path / "new"
    _clips(media)
    (media / "broken.avi").write_bytes(b"RIFF not a video")
    result = runner.invoke(predict_app, [str(run_dir), "-m", str(media), "-o",
                                         str(tmp_path / "p.csv")])
    assert result.exit_code == 0, result.output
    # (FFmpeg may log its own line about the file too, depending on av's log level)
    warning = [ln for ln in result.output.splitlines() if "could not be decoded" in ln]
    assert len(warning) == 1 and "1 of 4 sample(s) could not be decoded" in warning[0]
    assert "broken (visual: cannot decode video broken.avi" in warning[0]
    assert pd.read_csv(tmp_path / "p.csv")["sample_id"].tolist() == sorted(CLIPS)


def test_media_errors_are_one_line(tmp_path, run):
    run_dir, _ = run
    (tmp_path / "empty").mkdir()
    for args, message in (
        (["-m", str(tmp_path / "empty")], "no media file for the student's modalities (visual)"),
        (["-m", str(tmp_path / "x.mp3")], "does not exist"),
        (["-m", str(tmp_path / "empty"), "-c", "visual=x.h5"], "give --media or --cache"),
        (["--cache-dir", str(tmp_path)], "apply to --media only"),
    ):
        result = runner.invoke(predict_app, [str(run_dir), *args])
        assert result.exit_code == 2 and "Traceback" not in result.output, result.output
        assert result.output.startswith("amid-predict: error: ") and message in result.output


def test_unlabeled_rows_are_allowed_only_where_labels_are_not_needed(tmp_path):
    csv = tmp_path / "m.csv"
    csv.write_text("sample_id,label,split,text\nx,,,hello\n")
    assert read_manifest(csv, require_labels=False).df["label"].tolist() == [""]
    with pytest.raises(ManifestError, match="label missing on line"):
        read_manifest(csv)


def test_predict_without_inputs_record_uses_config_json(tmp_path, fake):
    """An older run (no `inputs` in student.json): the extractor comes from config.json."""
    run_dir = tmp_path / "runs" / "old"
    model = fake.make_pixels_run(run_dir, inputs=False)
    media = tmp_path / "new"
    paths = _clips(media)
    result = runner.invoke(predict_app, [str(run_dir), "-m", str(media), "-o",
                                         str(tmp_path / "p.csv")])
    assert result.exit_code == 0, result.output
    table = pd.read_csv(tmp_path / "p.csv")
    want = _expected(model, paths, fake.PIXELS)
    np.testing.assert_allclose(table.filter(like="prob_").to_numpy(),
                               np.stack([want[s] for s in table["sample_id"]]), atol=1e-5)
    assert json.loads((run_dir / "config.json").read_text())["config"]["extract"]
