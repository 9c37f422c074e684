"""Samples as every stage sees them, and what each one's features are made from.

A `MediaItem` is one manifest row resolved for a modality (`media_items`). Its
fingerprint (`sample_sources`, recorded in a cache's `/sources`) lets
`amid-extract run` re-extract exactly the samples whose input changed, and
`amid-train` refuse a cache made from other inputs. It covers a text sample's
transcript; an audio or visual sample's media path relative to the root (moving
the dataset changes nothing), the file's content fingerprint and the segment.

The content fingerprint reads bytes, never timestamps (a copy or a `touch`
must not trigger hours of re-extraction): the size and a SHA-256 of the first
and last 64 KiB. An edit that keeps the size and touches neither end goes
unnoticed; media files keep their header and index at the ends, so a re-encode
changes them. A frame folder: its image names and sizes, its first and last image.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from amid.manifest import Manifest

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png"})  # frames of a frame folder


@dataclass(frozen=True)
class MediaItem:
    """One sample as an extractor sees it (paths already resolved against the root)."""

    sample_id: str
    path: Path | None = None
    start: float | None = None
    end: float | None = None
    text: str | None = None


def _bound(value: Any) -> float | None:
    return None if value is None or np.isnan(value) else float(value)


def media_items(manifest: Manifest, modality: str) -> list[MediaItem]:
    """One MediaItem per manifest row, media resolved for `modality`.

    `start`/`end` locate a sample inside its media (video, its soundtrack, or the
    row's audio file); an audio file on another time line than its video (IEMOCAP's
    utterance wavs) has its own bounds in `audio_start`/`audio_end` (empty: its ends).
    """
    df = manifest.df
    items = []
    for row in range(len(df)):
        start, end = _bound(df.at[row, "start"]), _bound(df.at[row, "end"])
        if modality == "audio" and df.at[row, "audio_path"]:
            a, b = (_bound(df.at[row, c]) if c in df.columns else None
                    for c in ("audio_start", "audio_end"))
            if a is not None or b is not None:
                start, end = a, b
        items.append(MediaItem(df.at[row, "sample_id"], manifest.media_path(row, modality),
                               start, end, df.at[row, "text"] or None))
    return items


EDGE = 64 * 1024  # bytes read at each end of a file


def _file(path: Path) -> str:
    digest = hashlib.sha256()
    size = path.stat().st_size
    with open(path, "rb") as fh:
        digest.update(fh.read(EDGE))
        if size > EDGE:
            fh.seek(max(EDGE, size - EDGE))
            digest.update(fh.read(EDGE))
    return f"{size}:{digest.hexdigest()[:32]}"


@lru_cache(maxsize=65536)
def content_fingerprint(path: str) -> str:
    """Size and edge hash of a file, or of a frame folder; `missing`/`unreadable` otherwise.
    Memoised: many rows can share one recording (IEMOCAP's utterances in a dialog video)."""
    p = Path(path)
    try:
        if p.is_dir():
            images = sorted(q for q in p.iterdir() if q.suffix.lower() in IMAGE_SUFFIXES)
            listing = [(q.name, q.stat().st_size) for q in images]
            ends = [_file(q) for q in (images[:1] + images[-1:])]
            text = json.dumps([listing, ends])
            return "dir:" + hashlib.sha256(text.encode()).hexdigest()[:32]
        return _file(p) if p.exists() else "missing"
    except OSError as exc:  # the load will fail too, and say why
        return f"unreadable:{exc.errno}"


def sample_source(item: MediaItem, modality: str, root: Path) -> str:
    """The fingerprint of one sample's input for `modality`."""
    if modality == "text":
        record: dict = {"text": item.text or ""}
    else:
        relative = "" if item.path is None else os.path.relpath(item.path, root)
        record = {"path": Path(relative).as_posix() if relative else "",
                  "content": "" if item.path is None else content_fingerprint(str(item.path)),
                  "start": item.start, "end": item.end}
    text = json.dumps(record, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def sample_sources(items: Iterable[MediaItem], modality: str, root: Path,
                   workers: int = 4) -> dict[str, str]:
    """sample id -> fingerprint for every item; files are read by a few threads. The
    memo is cleared first: a file may have changed since the last call."""
    content_fingerprint.cache_clear()
    items = list(items)
    if modality == "text" or workers <= 1 or len(items) < 64:
        return {it.sample_id: sample_source(it, modality, root) for it in items}
    with ThreadPoolExecutor(workers) as pool:
        found = pool.map(lambda it: sample_source(it, modality, root), items)
        return {it.sample_id: fp for it, fp in zip(items, found, strict=True)}
