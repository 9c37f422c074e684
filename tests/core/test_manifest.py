"""Manifest validation: every manifest rule of docs/data.md fails with the file and line named."""

from __future__ import annotations

import pandas as pd
import pytest

from amid.errors import ManifestError
from amid.manifest import read_manifest, write_manifest


def _csv(tmp_path, rows, columns=None, name="m.csv"):
    df = pd.DataFrame(rows, columns=columns)
    path = tmp_path / name
    df.to_csv(path, index=False)
    return path


def _media(tmp_path, *names):
    for name in names:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")


GOOD = [
    {"sample_id": "a", "label": "cat", "split": "train", "audio_path": "a.wav"},
    {"sample_id": "b", "label": "dog", "split": "test", "audio_path": "b.wav"},
]


def test_good_manifest_loads_with_all_columns(tmp_path):
    _media(tmp_path, "a.wav", "b.wav")
    m = read_manifest(_csv(tmp_path, GOOD), tmp_path)
    assert m.ids == ["a", "b"] and m.classes == ["cat", "dog"]
    assert m.label_indices().tolist() == [0, 1]
    assert m.media_path(0, "audio") == tmp_path / "a.wav"
    assert m.split_mask("test").tolist() == [False, True]
    assert "text" in m.df.columns and "video_path" in m.df.columns


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        (
            [GOOD[0], {**GOOD[1], "sample_id": "a"}],
            r"duplicate sample_id \['a'\] on line\(s\) 2, 3",
        ),
        (
            [GOOD[0], {**GOOD[1], "split": "dev"}],
            r"unknown split value\(s\) \['dev'\] on line\(s\) 3",
        ),
        ([GOOD[0], {**GOOD[1], "label": ""}], r"label missing on line\(s\) 3"),
        ([GOOD[0], {**GOOD[1], "audio_path": "/abs/b.wav"}], "absolute on line"),
        ([GOOD[0], {**GOOD[1], "audio_path": "../b.wav"}], "escapes the dataset root"),
        ([GOOD[0], {**GOOD[1], "split": "", "fold": ""}], "neither split nor fold on line"),
        ([GOOD[0], {**GOOD[1], "start": 2, "end": 1}], "need 0 <= start < end on line"),
        ([GOOD[0], {**GOOD[1], "fold": "x"}], "`fold` must be an integer"),
    ],
)
def test_bad_rows_are_named(tmp_path, rows, message):
    _media(tmp_path, "a.wav", "b.wav")
    with pytest.raises(ManifestError, match=message):
        read_manifest(_csv(tmp_path, rows), tmp_path)


def test_missing_media_are_listed_with_a_count(tmp_path):
    rows = [
        {"sample_id": f"s{i}", "label": "x", "split": "train", "audio_path": f"{i}.wav"}
        for i in range(12)
    ]
    _media(tmp_path, "0.wav")
    with pytest.raises(ManifestError) as info:
        read_manifest(_csv(tmp_path, rows), tmp_path)
    text = str(info.value)
    assert "11 media file(s) in `audio_path` not found" in text
    assert "line 3:" in text and "... and 1 more" in text


def test_file_level_problems(tmp_path):
    with pytest.raises(ManifestError, match="does not exist"):
        read_manifest(tmp_path / "none.csv")
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(ManifestError, match="is empty"):
        read_manifest(empty)
    header = tmp_path / "header.csv"
    header.write_text("sample_id,label,split\n")
    with pytest.raises(ManifestError, match="no samples"):
        read_manifest(header)
    latin = tmp_path / "latin.csv"
    latin.write_bytes("sample_id,label,split\na,caf\xe9,train\n".encode("latin-1"))
    with pytest.raises(ManifestError, match="not UTF-8"):
        read_manifest(latin)
    with pytest.raises(ManifestError, match="missing column"):
        read_manifest(_csv(tmp_path, [{"id": "a", "label": "x"}]))


def test_folds_make_leave_one_out_splits(tmp_path):
    rows = [{"sample_id": f"s{i}", "label": "x", "fold": 1 + i % 3} for i in range(6)]
    m = read_manifest(_csv(tmp_path, rows), tmp_path)
    assert m.split_mask("test", fold=2).tolist() == [False, True, False, False, True, False]
    assert m.split_mask("train", fold=2).sum() == 4
    with pytest.raises(ManifestError, match="fold 7 does not exist; folds: \\[1, 2, 3\\]"):
        m.split_mask("test", fold=7)


def test_write_then_read_round_trips(tmp_path):
    _media(tmp_path, "a.wav", "b.wav")
    m = read_manifest(_csv(tmp_path, GOOD), tmp_path)
    out = write_manifest(m.df, tmp_path / "again.csv")
    again = read_manifest(out, tmp_path)
    pd.testing.assert_frame_equal(again.df, m.df)
