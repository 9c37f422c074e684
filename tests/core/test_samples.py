"""Samples and their source fingerprints (amid/samples.py), which extraction records and
training compares: what changes a fingerprint and what must not."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from amid.manifest import Manifest
from amid.samples import MediaItem, content_fingerprint, media_items, sample_sources


def _manifest(root: Path, **columns) -> Manifest:
    n = len(columns["sample_id"])
    df = pd.DataFrame({"label": ["a"] * n, "split": ["train"] * n, "text": [""] * n,
                       "video_path": [""] * n, "audio_path": [""] * n,
                       "start": [np.nan] * n, "end": [np.nan] * n, **columns})
    return Manifest(df, root / "manifest.csv", root)


def test_media_items_resolve_paths_and_the_audio_files_own_segment(tmp_path):
    m = _manifest(tmp_path, sample_id=["u1", "u2"], video_path=["dialog.mp4", "dialog.mp4"],
                  audio_path=["u1.wav", ""], start=[10.0, 20.0], end=[12.0, np.nan],
                  audio_start=[np.nan, np.nan], audio_end=[1.5, np.nan], text=["hi", ""])
    visual = media_items(m, "visual")
    assert visual[0] == MediaItem("u1", tmp_path / "dialog.mp4", 10.0, 12.0, "hi")
    assert visual[1] == MediaItem("u2", tmp_path / "dialog.mp4", 20.0, None, None)
    audio = media_items(m, "audio")
    # u1's own wav runs on its own time line: its bounds replace the video's
    assert (audio[0].path, audio[0].start, audio[0].end) == (tmp_path / "u1.wav", None, 1.5)
    # u2 has no audio file: the video's soundtrack, at the video's bounds
    assert (audio[1].path, audio[1].start, audio[1].end) == (tmp_path / "dialog.mp4", 20.0, None)


def _media(folder: Path, n: int, size: int = 200_000) -> list[MediaItem]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    items = []
    for k in range(n):
        path = folder / f"clip{k}.bin"
        path.write_bytes(rng.bytes(size))
        items.append(MediaItem(f"s{k}", path, 0.0, 1.0))
    return items


def test_fingerprints_follow_content_and_segment_not_location_or_time(tmp_path):
    root = tmp_path / "data"
    items = _media(root / "media", 3)
    before = sample_sources(items, "visual", root)
    assert len(set(before.values())) == 3
    # the whole dataset moved elsewhere: paths relative to the root, the same fingerprints
    moved = tmp_path / "elsewhere"
    shutil.copytree(root, moved)
    there = [MediaItem(it.sample_id, moved / it.path.relative_to(root), it.start, it.end)
             for it in items]
    assert sample_sources(there, "visual", moved) == before
    # a touch (new times, same bytes) changes nothing; the last byte, the segment do
    p = items[0].path
    p.touch()
    assert sample_sources(items, "visual", root) == before
    data = bytearray(p.read_bytes())
    data[-1] ^= 0xFF
    p.write_bytes(bytes(data))
    after = sample_sources(items, "visual", root)
    assert after["s0"] != before["s0"] and after["s1"] == before["s1"]
    later = [MediaItem("s1", items[1].path, 0.5, 1.0)]
    assert sample_sources(later, "visual", root)["s1"] != before["s1"]


def test_text_samples_are_their_transcript_and_missing_files_say_so(tmp_path):
    a = sample_sources([MediaItem("t", text="hello")], "text", tmp_path)
    assert a != sample_sources([MediaItem("t", text="hello!")], "text", tmp_path)
    assert a == sample_sources([MediaItem("t", tmp_path / "x", text="hello")], "text", tmp_path)
    assert content_fingerprint(str(tmp_path / "absent.wav")) == "missing"


def test_threads_give_what_one_thread_gives(tmp_path):
    items = _media(tmp_path / "media", 70, size=1000)  # >= 64 items: read by 4 threads
    assert sample_sources(items, "audio", tmp_path, workers=4) == sample_sources(
        items, "audio", tmp_path, workers=1)
