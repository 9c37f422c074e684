"""`activitynet`: ActivityNet v1.3 (200 activity classes) from its JSON and downloaded videos.

Layout: `<root>/activity_net.v1-3.min.json` (`database.<id>.{subset,
duration, annotations[].{label, segment}}`) and `<root>/videos/` holding the
videos as downloaded, named `<id>.<ext>` or `v_<id>.<ext>` (mp4, mkv, webm,
avi), possibly in sub-folders.

Subsets: `training` -> train, `validation` -> test (the test subset has no
public labels and is left out), as in the AMID/CCL experiments.

Samples are whole videos by default, labelled with their activity (when a
video's annotations name several activities, the one with the longest total
annotated time; ties go to the alphabetically first). With
`segments=True` each annotated segment is a sample instead (`<id>_<k>`,
start/end from `segment`, clipped to the video's duration).

YouTube downloads are never complete: videos not found are left out, with a
count in the log (`missing="error"` makes that an error instead).
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from pathlib import Path
from typing import Literal

import pandas as pd

from amid.errors import ManifestError
from amid.extract.adapters.registry import AdapterOptions, adapter
from amid.extract.adapters.text import read_text

log = logging.getLogger(__name__)

SUBSETS = {"training": "train", "validation": "test"}
VIDEO_SUFFIXES = (".mp4", ".mkv", ".webm", ".avi")


def _video_index(folder: Path) -> dict[str, Path]:
    """ActivityNet id -> video file, for `<id>.ext` and `v_<id>.ext` names."""
    index: dict[str, Path] = {}
    for path in sorted(folder.rglob("*")):
        if path.suffix.lower() in VIDEO_SUFFIXES and path.is_file():
            stem = path.stem
            index.setdefault(stem[2:] if stem.startswith("v_") else stem, path)
    return index


def video_label(annotations: list[dict], where: str) -> str:
    """The activity with the longest total annotated time in one video."""
    total: dict[str, float] = defaultdict(float)
    for ann in annotations:
        if "label" not in ann:
            raise ManifestError(f"{where}: an annotation has no `label`")
        start, end = ann.get("segment", (0.0, 0.0))
        total[ann["label"]] += max(0.0, float(end) - float(start))
    return sorted(total.items(), key=lambda kv: (-kv[1], kv[0]))[0][0]


def _load_database(path: Path) -> dict[str, dict]:
    if not path.exists():
        raise ManifestError(f"activitynet: annotation file {path} not found")
    try:
        data = json.loads(read_text(path))
    except json.JSONDecodeError as exc:
        raise ManifestError(f"activitynet: {path} is not valid JSON ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("database"), dict):
        raise ManifestError(f"activitynet: {path} has no `database` mapping (v1.3 format)")
    return data["database"]


class Options(AdapterOptions):
    annotations: str = "activity_net.v1-3.min.json"  # under the root
    videos: str = "videos"  # folder of the downloaded videos, under the root
    segments: bool = False  # each annotated segment a sample, not each video
    missing: Literal["skip", "error"] = "skip"  # videos not downloaded


@adapter("activitynet", Options)
def prepare_activitynet(root: Path, opts: Options) -> pd.DataFrame:
    """Manifest of ActivityNet v1.3 training (train) and validation (test) videos."""
    annotations, videos, segments, missing = (opts.annotations, opts.videos, opts.segments,
                                              opts.missing)
    database = _load_database(root / annotations)
    folder = root / videos
    if not folder.is_dir():
        raise ManifestError(f"activitynet: video folder {folder} not found")
    index = _video_index(folder)
    rows, absent = [], []
    for vid, entry in sorted(database.items()):
        split = SUBSETS.get(entry.get("subset", ""))
        anns = entry.get("annotations") or []
        if split is None or not anns:
            continue
        path = index.get(vid)
        if path is None:
            absent.append(vid)
            continue
        rel = path.relative_to(root).as_posix()
        if not segments:
            label = video_label(anns, f"{annotations} video {vid}")
            rows.append({"sample_id": vid, "label": label, "split": split, "video_path": rel})
            continue
        duration = float(entry.get("duration") or float("inf"))
        for k, ann in enumerate(anns):
            if len(ann.get("segment") or ()) != 2:
                raise ManifestError(f"{annotations} video {vid}: annotation {k} has no segment")
            start, end = (float(t) for t in ann["segment"])
            start, end = max(0.0, start), min(end, duration)
            if end <= start:
                log.warning("activitynet: %s segment %d is empty after clipping; left out", vid, k)
                continue
            rows.append({"sample_id": f"{vid}_{k}", "label": ann["label"], "split": split,
                         "video_path": rel, "start": start, "end": end})
    if absent:
        if missing == "error":
            shown = ", ".join(absent[:10]) + (" ..." if len(absent) > 10 else "")
            raise ManifestError(
                f"activitynet: {len(absent)} video(s) not found in {folder}: {shown}"
            )
        log.warning("activitynet: %d labelled video(s) not found in %s; left out",
                    len(absent), folder)
    if not rows:
        raise ManifestError(f"activitynet: no labelled training/validation video found in {folder}")
    return pd.DataFrame(rows)
