"""A researcher's own data: the csv adapter's table, segments, encodings, symlinks.

Issue 12 item 4 and issue 14 items 4 and 9 (and the symlink rule). Causes: the
csv adapter's table was resolved from the working directory under an option
named like the manifest it writes; `start`/`end` were ignored for a row's own
audio file; IEMOCAP text was decoded with replacement characters; media
paths were checked lexically only.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import media_gen as gen  # tests/extract/fixtures, on pytest's pythonpath
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from amid.cache import read_cache
from amid.errors import ManifestError
from amid.extract.adapters.registry import ADAPTERS
from amid.extract.cli import app
from amid.extract.extractors import build_extractor
from amid.extract.run import media_items, run_extraction
from amid.manifest import SPLITS, read_manifest, write_manifest

runner = CliRunner()
DOCS = Path(__file__).resolve().parents[2] / "docs" / "data.md"


def _dataset(root: Path) -> Path:
    """Two tones in one wav (440 Hz for 1 s, then 880 Hz for 1 s) and a table of samples."""
    wave = np.concatenate([gen.tone(1.0, 16000, 440.0), gen.tone(1.0, 16000, 880.0)])
    gen.write_wav(root / "media" / "two_tones.wav", wave, 16000)
    gen.write_wav(root / "media" / "first.wav", wave[:16000], 16000)
    gen.write_wav(root / "media" / "second.wav", wave[16000:], 16000)
    table = pd.DataFrame({
        "sample_id": ["low", "high"], "label": ["a", "b"], "split": ["train", "test"],
        "audio_path": ["media/two_tones.wav"] * 2, "start": [0.0, 1.0], "end": [1.0, 2.0],
    })
    table.to_csv(root / "samples.csv", index=False)
    return root / "samples.csv"


def test_csv_table_is_found_relative_to_the_dataset_root(tmp_path, monkeypatch):
    root = tmp_path / "data"
    _dataset(root)
    monkeypatch.chdir(tmp_path)  # not the root: a working-directory lookup would miss it
    out = tmp_path / "manifests" / "mine.csv"
    result = runner.invoke(app, ["prepare", "csv", "--root", str(root), "-o", str(out),
                                 "--option", "table=samples.csv", "-p", "none.yaml"])
    assert result.exit_code == 0, result.output
    assert read_manifest(out, root).ids == ["low", "high"]
    # an absolute table path works too
    result = runner.invoke(app, ["prepare", "csv", "--root", str(root), "-o", str(out),
                                 "--option", f"table={root / 'samples.csv'}", "-p", "none.yaml"])
    assert result.exit_code == 0, result.output


def test_csv_table_errors_name_the_absolute_path_and_the_renamed_option(tmp_path, monkeypatch):
    root = tmp_path / "data"
    _dataset(root)
    monkeypatch.chdir(tmp_path)
    args = ["prepare", "csv", "--root", "data", "-o", "m.csv", "-p", "none.yaml"]
    missing = runner.invoke(app, [*args, "--option", "table=nope.csv"])
    assert missing.exit_code == 2
    assert (f"amid-extract: error: csv adapter: table {root / 'nope.csv'} does not exist"
            in missing.output)
    old = runner.invoke(app, [*args, "--option", "manifest=samples.csv"])
    assert old.exit_code == 2 and old.output.count("\n") == 1
    assert ("amid-extract: error: --option: the 'csv' adapter's option `manifest` is now "
            "called `table`") in old.output
    typo = runner.invoke(app, [*args, "--option", "tabel=samples.csv"])
    assert typo.exit_code == 2
    assert "unknown option(s) tabel for the 'csv' adapter; its options: table" in typo.output


def test_docs_name_every_split_value_and_the_csv_option():
    text = DOCS.read_text()
    for split in SPLITS:
        assert f"`{split}`" in text
    assert "`table`" in text and "`audio_start`" in text


def test_segments_cut_a_rows_own_audio_file(tmp_path):
    root = tmp_path / "data"
    manifest = read_manifest(_dataset(root), root)
    extractor = build_extractor("logmel", {"pooling": "stats"})
    report = run_extraction(manifest, "audio", extractor, tmp_path / "a.h5", progress=False)
    cache = read_cache(report.path)
    # independent expectation: the two halves as files of their own
    halves = pd.DataFrame({"sample_id": ["low", "high"], "label": ["a", "b"],
                           "split": ["train", "test"],
                           "audio_path": ["media/first.wav", "media/second.wav"]})
    write_manifest(halves, tmp_path / "halves.csv")
    separate = run_extraction(read_manifest(tmp_path / "halves.csv", root), "audio", extractor,
                              tmp_path / "b.h5", progress=False)
    expected = read_cache(separate.path)
    assert not np.allclose(cache.sequence(0), cache.sequence(1))
    np.testing.assert_allclose(cache.features, expected.features, atol=1e-5)


def test_audio_start_end_give_the_audio_its_own_time_line(tmp_path):
    """IEMOCAP-style rows: the video segment in the dialog, the utterance wav whole."""
    root = tmp_path / "data"
    _dataset(root)
    gen.write_video(root / "media" / "dialog.avi", n_frames=30, rate=10)
    df = pd.DataFrame({"sample_id": ["u1"], "label": ["a"], "split": ["train"],
                       "audio_path": ["media/first.wav"], "video_path": ["media/dialog.avi"],
                       "start": [1.5], "end": [2.5], "audio_start": [0.0], "audio_end": [""]})
    write_manifest(df, tmp_path / "m.csv")
    manifest = read_manifest(tmp_path / "m.csv", root)
    (audio,), (video,) = media_items(manifest, "audio"), media_items(manifest, "visual")
    assert (audio.start, audio.end) == (0.0, None)
    assert (video.start, video.end) == (1.5, 2.5)
    df["audio_end"] = ["-1.0"]
    write_manifest(df, tmp_path / "bad.csv")
    with pytest.raises(ManifestError, match=r"need 0 <= audio_start < audio_end on line\(s\) 2"):
        read_manifest(tmp_path / "bad.csv", root)


def _iemocap(root: Path, transcript: bytes) -> None:
    base = root / "Session1" / "dialog"
    (base / "EmoEvaluation").mkdir(parents=True)
    (base / "EmoEvaluation" / "Ses01F_impro01.txt").write_text(
        "[6.2901 - 8.2357]\tSes01F_impro01_F000\tneu\t[2.5000, 2.5000, 2.5000]\n")
    (base / "transcriptions").mkdir()
    (base / "transcriptions" / "Ses01F_impro01.txt").write_bytes(transcript)
    gen.write_wav(root / "Session1" / "sentences" / "wav" / "Ses01F_impro01" /
                  "Ses01F_impro01_F000.wav", gen.tone(0.3, 16000), 16000)


def test_latin1_transcripts_are_decoded_with_a_warning_naming_the_file(tmp_path, caplog):
    text = "Café crème naïve"
    line = f"Ses01F_impro01_F000 [006.2901-008.2357]: {text}\n"
    _iemocap(tmp_path / "latin", line.encode("latin-1"))
    with caplog.at_level(logging.WARNING):
        df = ADAPTERS.get("iemocap")(tmp_path / "latin")
    assert df["text"].tolist() == [text] and "\ufffd" not in df["text"][0]
    transcript = tmp_path / "latin/Session1/dialog/transcriptions/Ses01F_impro01.txt"
    assert f"{transcript} is not UTF-8 (byte 44); read as latin-1" in caplog.text
    caplog.clear()
    _iemocap(tmp_path / "utf8", line.encode("utf-8"))
    with caplog.at_level(logging.WARNING):
        assert ADAPTERS.get("iemocap")(tmp_path / "utf8")["text"].tolist() == [text]
    assert "not UTF-8" not in caplog.text
    # the utterance wav is the utterance: the audio ignores the dialog-video segment
    row = df.iloc[0]
    assert (row["start"], row["end"], row["audio_start"]) == (6.2901, 8.2357, 0.0)


def test_symlinks_out_of_the_root_are_refused_like_dotdot(tmp_path):
    root = tmp_path / "data"
    _dataset(root)
    outside = tmp_path / "elsewhere.wav"
    gen.write_wav(outside, gen.tone(0.5, 16000), 16000)
    os.symlink(outside, root / "media" / "link.wav")
    os.symlink(root / "media" / "first.wav", root / "media" / "inside.wav")  # stays inside
    df = pd.DataFrame({"sample_id": ["a", "b", "c"], "label": ["x"] * 3, "split": ["train"] * 3,
                       "audio_path": ["media/inside.wav", "media/two_tones.wav",
                                      "media/link.wav"]})
    write_manifest(df, tmp_path / "m.csv")
    with pytest.raises(ManifestError) as err:
        read_manifest(tmp_path / "m.csv", root)
    assert str(err.value) == (
        f"{tmp_path / 'm.csv'}: `audio_path` on line(s) 4 leads outside the dataset root "
        f"{root} through a symlink (media/link.wav -> {outside}); put the media under the "
        "root, or make the root a folder that contains them")
    write_manifest(df.iloc[:2], tmp_path / "ok.csv")
    assert read_manifest(tmp_path / "ok.csv", root).ids == ["a", "b"]
