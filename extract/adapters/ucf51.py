"""`ucf51`: UCF-101 restricted to the 51 classes whose videos have sound (docs/data.md).

Layout (as released): `<root>/UCF-101/<Class>/v_<Class>_gXX_cYY.avi` and
`<root>/ucfTrainTestlist/{classInd,trainlist0K,testlist0K}.txt`. The 51
classes are the folder names of the published CNN14 features of UCF51
(`ucf51_cnn14_emb512.tar.gz`, CCL code, Chen et al. CVPR 2021), embedded
below so the manifest never depends on that archive being present.

Split K (default 1) comes from the official lists when they are there, else
from the rule they follow: groups 7(K-1)+1 .. 7K are test, the others train.
Videos are taken from the class folders; with `with_audio` (default) only
those whose file has an audio stream are kept (a header probe, no decoding),
which is how the 6,837 videos of the published features were chosen:
4,893 train and 1,944 test in split 1. Sample ids are the file stems
(`v_HandStandPushups_g08_c01`; note UCF-101's own spelling differs from the
folder name for that class), the same ids `import-ucf51` writes.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Literal

import pandas as pd

from amid.errors import ManifestError
from amid.extract.adapters.registry import AdapterOptions, adapter
from amid.extract.adapters.text import read_text

log = logging.getLogger(__name__)

UCF51_CLASSES = (
    "ApplyEyeMakeup", "ApplyLipstick", "Archery", "BabyCrawling", "BalanceBeam",
    "BandMarching", "BasketballDunk", "BlowDryHair", "BlowingCandles", "BodyWeightSquats",
    "Bowling", "BoxingPunchingBag", "BoxingSpeedBag", "BrushingTeeth", "CliffDiving",
    "CricketBowling", "CricketShot", "CuttingInKitchen", "FieldHockeyPenalty",
    "FloorGymnastics", "FrisbeeCatch", "FrontCrawl", "Haircut", "HammerThrow", "Hammering",
    "HandstandPushups", "HandstandWalking", "HeadMassage", "IceDancing", "Knitting",
    "LongJump", "MoppingFloor", "ParallelBars", "PlayingCello", "PlayingDaf", "PlayingDhol",
    "PlayingFlute", "PlayingSitar", "Rafting", "ShavingBeard", "Shotput", "SkyDiving",
    "SoccerPenalty", "StillRings", "SumoWrestling", "Surfing", "TableTennisShot", "Typing",
    "UnevenBars", "WallPushups", "WritingOnBoard",
)
VIDEO_SUFFIXES = (".avi", ".mp4", ".mkv")
_GROUP = re.compile(r"_g(\d+)_c\d+$")


def group_of(stem: str) -> int:
    """The actor group (1-25) in a UCF-101 file name such as v_Archery_g07_c03."""
    match = _GROUP.search(stem)
    if not match:
        raise ManifestError(f"{stem}: not a UCF-101 file name (v_<Class>_gXX_cYY)")
    return int(match.group(1))


def split_of(stem: str, split: int = 1) -> str:
    """train/test of a video under official split `split` (test groups 7(K-1)+1 .. 7K)."""
    lo = 7 * (split - 1) + 1
    return "test" if lo <= group_of(stem) <= lo + 6 else "train"


def has_audio(path: Path) -> bool:
    import av

    try:
        with av.open(str(path)) as container:
            return bool(container.streams.audio)
    except (av.FFmpegError, OSError, ValueError):
        return False


def _read_list(path: Path) -> set[str]:
    """Entries `Class/v_..._gXX_cYY.avi [label]` of an official list, as lowercase stems."""
    stems = set()
    for line in read_text(path).splitlines():
        if line.strip():
            stems.add(Path(line.split()[0].replace("\\", "/")).stem.lower())
    return stems


class Options(AdapterOptions):
    split: Literal[1, 2, 3] = 1  # the official split K
    with_audio: bool = True  # only videos with an audio stream
    videos: str = "UCF-101"  # folder of the class folders, under the root
    lists: str = "ucfTrainTestlist"  # folder of the official lists, under the root


@adapter("ucf51", Options)
def prepare_ucf51(root: Path, opts: Options) -> pd.DataFrame:
    """Manifest of UCF51 (split `split`), media paths relative to `root`."""
    split, with_audio, videos, lists = opts.split, opts.with_audio, opts.videos, opts.lists
    video_dir = root / videos
    if not video_dir.is_dir():
        raise ManifestError(
            f"ucf51: {video_dir} not found (expected <root>/{videos}/<Class>/*.avi)"
        )
    train_list, test_list = (root / lists / f"{k}list0{split}.txt" for k in ("train", "test"))
    official = train_list.exists() and test_list.exists()
    train_ids = _read_list(train_list) if official else set()
    test_ids = _read_list(test_list) if official else set()
    listed = train_ids | test_ids
    rows, silent, missing_classes = [], 0, []
    for label in UCF51_CLASSES:
        folder = video_dir / label
        if not folder.is_dir():
            missing_classes.append(label)
            continue
        for path in sorted(p for p in folder.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES):
            if with_audio and not has_audio(path):
                silent += 1
                continue
            if official:
                key = path.stem.lower()
                if key not in listed:
                    raise ManifestError(
                        f"ucf51: {path.relative_to(root)} is in neither {train_list.name} "
                        f"nor {test_list.name}"
                    )
                subset = "test" if key in test_ids else "train"
            else:
                subset = split_of(path.stem, split)
            rows.append({"sample_id": path.stem, "label": label, "split": subset,
                         "video_path": path.relative_to(root).as_posix()})
    # Every name, on one line: a partial copy (or a misspelt folder) shows at once which.
    if missing_classes:
        log.warning("ucf51: %d of the 51 class folders are missing under %s: %s",
                    len(missing_classes), video_dir, ", ".join(missing_classes))
    others = sorted(p.name for p in video_dir.iterdir()
                    if p.is_dir() and p.name not in UCF51_CLASSES)
    if others:
        log.info("ucf51: %d class folder(s) not among the 51 left out: %s", len(others),
                 ", ".join(others))
    if silent:
        log.info("ucf51: %d video(s) without an audio stream left out", silent)
    if not rows:
        raise ManifestError(f"ucf51: no videos of the 51 classes under {video_dir}")
    return pd.DataFrame(rows)
