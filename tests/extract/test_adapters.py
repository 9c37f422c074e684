"""The ucf51, activitynet and iemocap adapters on small fake trees in the published
layouts (real file formats, tiny generated media), and UCF51 against the real archive."""

from __future__ import annotations

import json
import logging
import tarfile
from pathlib import Path, PurePosixPath

import media_gen as gen  # tests/extract/fixtures, on pytest's pythonpath
import numpy as np
import pytest
from repo_data import UCF51_ARCHIVE as ARCHIVE  # tests/extract/fixtures, on the pythonpath

from amid.errors import ManifestError
from amid.extract.adapters import activitynet, iemocap, ucf51  # noqa: F401  (registration)
from amid.extract.adapters.registry import ADAPTERS
from amid.manifest import read_manifest, write_manifest


def _round_trip(df, root: Path, tmp_path: Path):
    """The adapter's table is a valid manifest whose media exist under root."""
    return read_manifest(write_manifest(df, tmp_path / "manifest.csv"), root).df


# --------------------------------------------------------------------- UCF51


@pytest.fixture(scope="module")
def archive_stems() -> dict[str, list[str]]:
    """class folder -> file stems, as in the published UCF51 feature archive."""
    out: dict[str, list[str]] = {}
    with tarfile.open(ARCHIVE) as tar:
        for name in tar.getnames():
            path = PurePosixPath(name)
            if path.suffix == ".npy" and not path.name.startswith("._"):
                out.setdefault(path.parent.name, []).append(path.stem)
    return out


def test_ucf51_classes_and_split_agree_with_the_archive(tmp_path, archive_stems) -> None:
    assert sorted(archive_stems) == sorted(ucf51.UCF51_CLASSES)
    assert len(ucf51.UCF51_CLASSES) == 51
    # the archive's videos, laid out as UCF-101 (empty files: this run does not probe audio)
    for label, stems in archive_stems.items():
        folder = tmp_path / "UCF-101" / label
        folder.mkdir(parents=True)
        for stem in stems:
            (folder / f"{stem}.avi").touch()
    (tmp_path / "UCF-101" / "YoYo").mkdir()  # a class without sound: not in UCF51
    (tmp_path / "UCF-101" / "YoYo" / "v_YoYo_g01_c01.avi").touch()
    df = ADAPTERS.get("ucf51")(tmp_path, with_audio=False)
    assert len(df) == 6837 and df["label"].nunique() == 51
    assert (df["split"] == "train").sum() == 4893 and (df["split"] == "test").sum() == 1944
    # groups 01-07 are test (read from the file names independently of the adapter)
    groups = df["sample_id"].str.extract(r"_g(\d\d)_")[0].astype(int)
    assert ((groups <= 7) == (df["split"] == "test")).all()
    row = df[df["sample_id"] == "v_HandStandPushups_g05_c01"].iloc[0]
    assert row["label"] == "HandstandPushups"
    assert row["video_path"] == "UCF-101/HandstandPushups/v_HandStandPushups_g05_c01.avi"


def _ucf_tree(root: Path) -> None:
    tone = gen.tone(0.5, 16000)[None]
    videos = {
        "Archery": [(1, 1, True), (7, 2, True), (8, 1, True), (25, 3, True), (9, 1, False)],
        "HandstandPushups": [(2, 1, True), (12, 4, True)],
        "YoYo": [(1, 1, True)],  # not one of the 51
    }
    for label, entries in videos.items():
        for g, c, sound in entries:
            name = "HandStandPushups" if label == "HandstandPushups" else label
            gen.write_video(root / "UCF-101" / label / f"v_{name}_g{g:02d}_c{c:02d}.avi",
                            n_frames=3, rate=10, size=(16, 16),
                            audio=tone if sound else None, audio_rate=16000, audio_codec="mp3")


def _ucf_lists(root: Path, df_videos: list[Path]) -> None:
    lists = root / "ucfTrainTestlist"
    lists.mkdir()
    (lists / "classInd.txt").write_text("1 Archery\n2 HandstandPushups\n3 YoYo\n")
    train, test = [], []
    for video in df_videos:
        entry = f"{video.parent.name}/{video.name}"
        group = int(video.stem.split("_g")[1][:2])
        (test if group <= 7 else train).append(entry)
    cls = {"Archery": 1, "HandstandPushups": 2, "YoYo": 3}
    (lists / "trainlist01.txt").write_text(
        "".join(f"{e} {cls[e.split('/')[0]]}\r\n" for e in train))
    (lists / "testlist01.txt").write_text("".join(f"{e}\r\n" for e in test))


def test_ucf51_fake_tree_audio_probe_and_official_lists(tmp_path) -> None:
    _ucf_tree(tmp_path)
    by_rule = ucf51.prepare_ucf51(tmp_path)
    # YoYo is not UCF51; v_Archery_g09_c01 has no audio stream
    assert sorted(by_rule["sample_id"]) == sorted([
        "v_Archery_g01_c01", "v_Archery_g07_c02", "v_Archery_g08_c01", "v_Archery_g25_c03",
        "v_HandStandPushups_g02_c01", "v_HandStandPushups_g12_c04"])
    split = dict(zip(by_rule["sample_id"], by_rule["split"], strict=True))
    assert split["v_Archery_g07_c02"] == "test" and split["v_Archery_g08_c01"] == "train"
    assert split["v_HandStandPushups_g12_c04"] == "train"
    assert len(ucf51.prepare_ucf51(tmp_path, with_audio=False)) == 7
    # split 2: groups 08-14 are test
    assert ucf51.prepare_ucf51(tmp_path, split=2).set_index("sample_id").loc[
        "v_HandStandPushups_g12_c04", "split"] == "test"
    # the official lists, when present, give the same split
    _ucf_lists(tmp_path, sorted((tmp_path / "UCF-101").rglob("*.avi")))
    by_list = ucf51.prepare_ucf51(tmp_path)
    assert by_list.equals(by_rule)
    df = _round_trip(by_list, tmp_path, tmp_path)
    assert (df["audio_path"] == "").all() and df["fold"].isna().all()
    # a video in neither list is an error naming it
    gen.write_video(tmp_path / "UCF-101" / "Archery" / "v_Archery_g03_c09.avi", n_frames=2,
                    size=(16, 16), audio=gen.tone(0.2, 16000)[None], audio_rate=16000)
    with pytest.raises(ManifestError, match="v_Archery_g03_c09.avi is in neither"):
        ucf51.prepare_ucf51(tmp_path)
    with pytest.raises(ManifestError, match="not found"):
        ucf51.prepare_ucf51(tmp_path / "nowhere")


def test_ucf51_logs_every_missing_and_every_other_class_folder(tmp_path, caplog,
                                                              archive_stems) -> None:
    """A partial copy: three of the 51 classes and two other folders. The warning names all
    48 missing classes, the info line both folders left out, each on one line."""
    present = ["Archery", "Typing", "YoYo", "Yo-Yo"]  # YoYo: not UCF51; Yo-Yo: misspelt
    for label in present:
        (tmp_path / "UCF-101" / label).mkdir(parents=True)
        (tmp_path / "UCF-101" / label / f"v_{label}_g01_c01.avi").touch()
    (tmp_path / "UCF-101" / "Bowling").mkdir()  # an empty folder of the 51 is not missing
    with caplog.at_level(logging.INFO, logger=ucf51.__name__):
        df = ucf51.prepare_ucf51(tmp_path, with_audio=False)
    assert sorted(df["label"]) == ["Archery", "Typing"]
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "\n" not in warning and warning.startswith("ucf51: 48 of the 51 class folders")
    named = warning.split(": ", 2)[2].split(", ")
    # the expectation from the published archive's class folders, not the adapter's tuple
    assert named == sorted(set(archive_stems) - {"Archery", "Typing", "Bowling"})
    (info,) = [r.getMessage() for r in caplog.records if "not among the 51" in r.getMessage()]
    assert info.endswith("2 class folder(s) not among the 51 left out: Yo-Yo, YoYo")


# --------------------------------------------------------------------- ActivityNet


def _activitynet_tree(root: Path) -> None:
    database = {
        "aaa": {"subset": "training", "duration": 20.0, "annotations": [
            {"label": "Long jump", "segment": [1.0, 5.0]},
            {"label": "Long jump", "segment": [8.0, 25.0]}]},  # past the end: clipped
        "bbb": {"subset": "training", "duration": 30.0, "annotations": [
            {"label": "Shoveling snow", "segment": [0.0, 4.0]},
            {"label": "Walking the dog", "segment": [10.0, 20.0]}]},  # longest wins
        "ccc": {"subset": "validation", "duration": 10.0, "annotations": [
            {"label": "Long jump", "segment": [2.0, 3.5]}]},
        "ddd": {"subset": "testing", "duration": 10.0, "annotations": []},
        "eee": {"subset": "training", "duration": 10.0, "annotations": [
            {"label": "Long jump", "segment": [0.0, 1.0]}]},  # not downloaded
    }
    (root / "activity_net.v1-3.min.json").write_text(
        json.dumps({"version": "VERSION 1.3", "taxonomy": [], "database": database}))
    for name in ("v_aaa.mp4", "bbb.mkv", "sub/v_ccc.mp4", "v_ddd.mp4"):
        gen.write_video(root / "videos" / name, n_frames=3, size=(16, 16), codec="h264")


def test_activitynet_videos_labels_and_subsets(tmp_path) -> None:
    _activitynet_tree(tmp_path)
    df = ADAPTERS.get("activitynet")(tmp_path).set_index("sample_id")
    assert sorted(df.index) == ["aaa", "bbb", "ccc"]  # ddd: test subset, eee: missing
    assert df.loc["bbb", "label"] == "Walking the dog"
    assert df.loc["aaa", "split"] == "train" and df.loc["ccc", "split"] == "test"
    assert df.loc["ccc", "video_path"] == "videos/sub/v_ccc.mp4"
    assert df.loc["bbb", "video_path"] == "videos/bbb.mkv"
    _round_trip(df.reset_index(), tmp_path, tmp_path)
    with pytest.raises(ManifestError, match="1 video"):
        activitynet.prepare_activitynet(tmp_path, missing="error")


def test_activitynet_segments(tmp_path) -> None:
    _activitynet_tree(tmp_path)
    df = activitynet.prepare_activitynet(tmp_path, segments=True).set_index("sample_id")
    assert sorted(df.index) == ["aaa_0", "aaa_1", "bbb_0", "bbb_1", "ccc_0"]
    assert (df.loc["aaa_1", "start"], df.loc["aaa_1", "end"]) == (8.0, 20.0)  # clipped
    assert df.loc["bbb_0", "label"] == "Shoveling snow"
    assert df.loc["ccc_0", ["start", "end"]].tolist() == [2.0, 3.5]
    manifest = _round_trip(df.reset_index(), tmp_path, tmp_path)
    assert manifest["start"].notna().all()


def test_activitynet_bad_json(tmp_path) -> None:
    (tmp_path / "videos").mkdir()
    (tmp_path / "activity_net.v1-3.min.json").write_text("{not json")
    with pytest.raises(ManifestError, match="not valid JSON"):
        activitynet.prepare_activitynet(tmp_path)


# --------------------------------------------------------------------- IEMOCAP

_EVAL = """% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]

[6.2901 - 8.2357]\t{d}_F000\tneu\t[2.5000, 2.5000, 2.5000]
C-E2:\tNeutral;\t()
C-E4:\tNeutral;\t()
A-E3:\tval 3; act 2; dom  2;\t()

[10.0100 - 11.3925]\t{d}_F001\texc\t[3.5000, 3.5000, 3.0000]
C-E2:\tExcited;\t()

[14.8872 - 18.0175]\t{d}_M000\tfru\t[2.0000, 3.5000, 3.5000]

[19.2900 - 20.7875]\t{d}_M001\thap\t[4.0000, 3.0000, 3.0000]

[21.0000 - 23.5000]\t{d}_M002\tang\t[1.5000, 4.0000, 4.0000]

[24.0000 - 25.2500]\t{d}_F002\tsad\t[1.5000, 2.0000, 2.0000]

[26.0000 - 27.0000]\t{d}_F003\txxx\t[2.5000, 2.5000, 2.5000]
"""


def _iemocap_tree(root: Path) -> None:
    for session, dialog, video in ((1, "Ses01F_impro01", True), (2, "Ses02M_script01_1", False)):
        base = root / f"Session{session}"
        evaluation = base / "dialog" / "EmoEvaluation" / f"{dialog}.txt"
        evaluation.parent.mkdir(parents=True)
        evaluation.write_text(_EVAL.format(d=dialog))
        (evaluation.parent / "Categorical").mkdir()  # sub-folders are not dialogs
        (evaluation.parent / f"._{dialog}.txt").write_bytes(b"\x00\x05\x16\x07")
        transcript = base / "dialog" / "transcriptions" / f"{dialog}.txt"
        transcript.parent.mkdir(parents=True)
        transcript.write_text(
            f"{dialog}_F000 [006.2901-008.2357]: Excuse me.\n"
            f"{dialog}_F001 [010.0100-011.3925]: Yeah, I got in!\n"
            f"M: [BREATHING]\n"
            f"{dialog}_M002 [021.0000-023.5000]: That's not fair.\n")
        for k, utt in enumerate(("F000", "F001", "M000", "M001", "M002", "F002", "F003")):
            gen.write_wav(base / "sentences" / "wav" / dialog / f"{dialog}_{utt}.wav",
                          gen.tone(0.3, 16000, 200.0 + 50 * k), 16000, subtype="PCM_16")
        if video:
            gen.write_video(base / "dialog" / "avi" / "DivX" / f"{dialog}.avi", n_frames=4,
                            size=(16, 32), audio=gen.tone(0.4, 16000)[None], audio_rate=16000,
                            audio_codec="mp3")


def test_iemocap_labels_folds_segments_text(tmp_path) -> None:
    _iemocap_tree(tmp_path)
    df = ADAPTERS.get("iemocap")(tmp_path)
    assert len(df) == 10  # 5 of the 7 utterances per dialog (fru and xxx left out)
    rows = df.set_index("sample_id")
    s1 = "Ses01F_impro01"
    assert rows.loc[f"{s1}_F001", "label"] == "happy"  # excited merged into happy
    assert rows.loc[f"{s1}_M001", "label"] == "happy"
    assert rows.loc[f"{s1}_M002", "label"] == "angry"
    assert rows.loc[f"{s1}_F002", "label"] == "sad"
    assert rows.loc[f"{s1}_F000", "label"] == "neutral"
    assert sorted(df["label"].unique()) == ["angry", "happy", "neutral", "sad"]
    assert rows.loc[f"{s1}_F000", ["start", "end"]].tolist() == [6.2901, 8.2357]
    assert rows.loc[f"{s1}_F001", "text"] == "Yeah, I got in!"
    assert rows.loc[f"{s1}_M001", "text"] == ""  # no transcription line
    assert rows.loc[f"{s1}_F000", "audio_path"] == f"Session1/sentences/wav/{s1}/{s1}_F000.wav"
    assert rows.loc[f"{s1}_F000", "video_path"] == f"Session1/dialog/avi/DivX/{s1}.avi"
    assert rows.loc["Ses02M_script01_1_F000", "video_path"] == ""  # no dialog video
    assert rows.loc[f"{s1}_F000", "fold"] == 1 and rows.loc["Ses02M_script01_1_F000", "fold"] == 2
    manifest = _round_trip(df, tmp_path, tmp_path)
    assert (manifest["split"] == "").all()
    assert manifest["fold"].tolist() == [1] * 5 + [2] * 5
    without = iemocap.prepare_iemocap(tmp_path, merge_excited=False)
    assert len(without) == 8 and f"{s1}_F001" not in set(without["sample_id"])


def test_iemocap_errors(tmp_path) -> None:
    with pytest.raises(ManifestError, match="no Session1..Session5"):
        iemocap.prepare_iemocap(tmp_path)
    bad = tmp_path / "Session3" / "dialog" / "EmoEvaluation" / "Ses03F_impro01.txt"
    bad.parent.mkdir(parents=True)
    bad.write_text("[6.29 8.23]\tSes03F_impro01_F000\tneu\n")
    with pytest.raises(ManifestError, match=r"Ses03F_impro01.txt:1: cannot parse"):
        iemocap.prepare_iemocap(tmp_path)


def test_adapters_registered() -> None:
    assert {"ucf51", "activitynet", "iemocap"} <= set(ADAPTERS.names())
    assert np.array_equal(sorted(ucf51.UCF51_CLASSES), list(ucf51.UCF51_CLASSES))
