"""Source fingerprints: what each sample's features are made from, as 16 hex digits.

A cache records one fingerprint per sample (`/sources`, amid.cache), so that
`amid-extract run` re-extracts exactly the samples whose input changed, even
when the manifest keeps their ids. The fingerprint covers:

- audio and visual samples: the media path as the manifest names it
  (relative to the dataset root, so moving the whole dataset changes
  nothing), the file's content fingerprint, and the segment bounds used;
- text samples: the transcript.

The content fingerprint is cheap and reads bytes, never timestamps (a copy
or a `touch` must not trigger hours of re-extraction): the file size and a
SHA-256 of its first and last 64 KiB. An edit that keeps the size and
touches neither end goes unnoticed; in media files the container header and
index sit at the ends, so a re-encode changes them. A frame folder
fingerprints its image names and sizes plus its first and last image.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from pathlib import Path

from amid.extract.extractors.base import MediaItem
from amid.extract.media import IMAGE_SUFFIXES

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

    Memoised per path within a process: many rows can share one recording
    (IEMOCAP utterances in a dialog video).
    """
    p = Path(path)
    try:
        if p.is_dir():
            images = sorted(q for q in p.iterdir() if q.suffix.lower() in IMAGE_SUFFIXES)
            listing = [(q.name, q.stat().st_size) for q in images]
            ends = [_file(q) for q in (images[:1] + images[-1:])]
            text = json.dumps([listing, ends])
            return "dir:" + hashlib.sha256(text.encode()).hexdigest()[:32]
        if not p.exists():
            return "missing"
        return _file(p)
    except OSError as exc:  # the load will fail too, and say why
        return f"unreadable:{exc.errno}"


def sample_source(item: MediaItem, modality: str, root: Path) -> str:
    """The fingerprint of one sample's input for `modality`."""
    if modality == "text":
        record: dict = {"text": item.text or ""}
    else:
        relative = "" if item.path is None else os.path.relpath(item.path, root)
        record = {
            "path": Path(relative).as_posix() if relative else "",
            "content": "" if item.path is None else content_fingerprint(str(item.path)),
            "start": item.start,
            "end": item.end,
        }
    text = json.dumps(record, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def sample_sources(items: Iterable[MediaItem], modality: str, root: Path,
                   workers: int = 4) -> dict[str, str]:
    """sample id -> fingerprint for every item; files are read by a few threads.

    The cache is cleared first: a file may have changed since the last call in
    this process.
    """
    content_fingerprint.cache_clear()
    items = list(items)
    if modality == "text" or workers <= 1 or len(items) < 64:
        return {it.sample_id: sample_source(it, modality, root) for it in items}
    with ThreadPoolExecutor(workers) as pool:
        found = pool.map(lambda it: sample_source(it, modality, root), items)
        return {it.sample_id: fp for it, fp in zip(items, found, strict=True)}
