"""The extraction runner: manifest + extractor -> one resumable HDF5 cache.

Work is committed in shards as it goes (amid.cache_writer.CacheWriter), so killing the
process loses at most one shard of work and rerunning picks up where it
stopped. A finished cache with the same identity (extractor, model, params)
is reused, and extended when the manifest gained samples; a cache made with
other parameters is re-extracted and replaced only once the new one is
complete, never mixed with new features.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from amid.cache import (
    errors_path,
    identity_hash,
    read_cache,
    read_errors,
    write_cache,
    write_errors,
)
from amid.cache_writer import CacheWriter
from amid.errors import CacheError
from amid.extract.extractors.base import Extractor, MediaError, MediaItem
from amid.manifest import Manifest

log = logging.getLogger(__name__)
BUCKET_WINDOW = 4  # batches decoded ahead and sorted by length before embedding (memory: 4 batches)
BUCKET_BY_LENGTH = True  # False: batches in arrival order (bench/extract.py compares)


@dataclass
class ExtractionReport:
    path: Path
    status: str  # "up to date" | "extended" | "extracted"
    written: int  # samples in the finished cache
    extracted: int  # samples computed by this call
    errors: int
    seconds: float


def media_items(manifest: Manifest, modality: str) -> list[MediaItem]:
    """One MediaItem per manifest row, media resolved for `modality`.

    `start`/`end` locate a sample inside its video (an IEMOCAP utterance in its
    dialog's recording). They cut the audio too when the audio is the video's
    soundtrack, but not a row's own audio file, which is the utterance already.
    """
    df = manifest.df
    items = []
    for row in range(len(df)):
        start, end = df.at[row, "start"], df.at[row, "end"]
        own_audio = modality == "audio" and bool(df.at[row, "audio_path"])
        segment = not own_audio and not np.isnan(start)
        items.append(
            MediaItem(
                sample_id=df.at[row, "sample_id"],
                path=manifest.media_path(row, modality),
                start=float(start) if segment else None,
                end=float(end) if segment and not np.isnan(end) else None,
                text=df.at[row, "text"] or None,
            )
        )
    return items


def _load(extractor: Extractor, item: MediaItem) -> tuple[MediaItem, Any, str | None]:
    try:
        return item, extractor.load(item), None
    except MediaError as exc:
        return item, None, str(exc)
    except Exception as exc:  # a decoder library's own error: record it, go on
        return item, None, f"{type(exc).__name__}: {exc}"


def _loaded(
    extractor: Extractor, items: list[MediaItem], workers: int
) -> Iterator[tuple[MediaItem, Any, str | None]]:
    if workers <= 0:
        yield from (_load(extractor, item) for item in items)
        return
    # Threads, not processes: decoders release the GIL, and the extractor
    # (with its model) is not copied per worker.
    with ThreadPoolExecutor(workers) as pool:
        yield from pool.map(lambda item: _load(extractor, item), items)


def _existing(path: Path, identity: dict[str, Any]) -> tuple[str, Any]:
    """("missing" | "same" | "other" | "broken", cache) for what is at `path` now."""
    if not path.exists():
        return "missing", None
    try:
        cache = read_cache(path)
    except CacheError as exc:
        log.warning("%s cannot be used (%s); extracting again", path, exc)
        return "broken", None
    if cache.attrs.get("identity") != identity_hash(identity):
        return "other", cache
    return "same", cache


def run_extraction(
    manifest: Manifest,
    modality: str,
    extractor: Extractor,
    out: str | Path,
    *,
    batch_size: int = 16,
    num_workers: int = 0,
    dtype: str = "float32",
    shard_size: int = 64,
    progress: bool = True,
    rank: int = 0,
    world_size: int = 1,
) -> ExtractionReport:
    """Extract `modality` for every manifest row into the cache at `out`.

    `shard_size` samples are committed at a time: a crash loses at most that much.
    With `world_size` > 1 this process takes rows rank, rank + world_size, ...
    and writes its own part file (`part_path`); `merge_parts` joins them.
    """
    out = Path(out) if world_size == 1 else part_path(out, rank, world_size)
    t0 = time.perf_counter()
    if extractor.modality != modality:
        raise CacheError(
            f"extractor {extractor.name!r} makes {extractor.modality} features, not {modality}"
        )
    identity = extractor.identity()
    items = media_items(manifest, modality)[rank::world_size]
    order = [item.sample_id for item in items]
    status, existing = _existing(out, identity)
    known_errors = read_errors(out) if status == "same" else {}
    if status == "same":
        missing = [sid for sid in order if sid not in set(existing.ids) | set(known_errors)]
        dropped = len(set(existing.ids) - set(order))
        if not missing and not dropped:
            if Path(f"{out}.parts").exists():
                # A kill between finalize's rename and its cleanup left the shards.
                with CacheWriter(out, identity, dtype=dtype, shard_size=shard_size) as writer:
                    writer.discard()
            return ExtractionReport(
                out, "up to date", len(existing), 0, len(known_errors), time.perf_counter() - t0
            )
        log.warning(
            "%s: the manifest changed since extraction: %d new id(s) to extract, "
            "%d id(s) no longer in the manifest dropped",
            out,
            len(missing),
            dropped,
        )
    elif status == "other":
        log.warning(
            "%s was made with other settings (%s); extracting again, the old file "
            "stays until the new one is complete",
            out,
            existing.attrs.get("params"),
        )

    with CacheWriter(out, identity, dtype=dtype, shard_size=shard_size) as writer:
        if status == "same":
            writer.adopt(existing)
            for sid, reason in known_errors.items():
                writer.add_error(sid, reason)
            writer.done.update(known_errors)
        todo = [item for item in items if item.sample_id not in writer.done]
        extracted = 0
        bar = _progress(len(todo), f"{modality} ({extractor.name})", progress)
        pending: list[tuple[MediaItem, Any]] = []
        for item, loaded, error in _loaded(extractor, todo, num_workers):
            if error is not None:
                writer.add_error(item.sample_id, error)
            else:
                pending.append((item, loaded))
            if len(pending) >= BUCKET_WINDOW * batch_size:
                extracted += _embed_bucketed(extractor, pending, batch_size, writer)
                pending = []
            bar.update(1)
        extracted += _embed_bucketed(extractor, pending, batch_size, writer)
        bar.close()
        path, written = writer.finalize(order)
        n_errors = len(read_errors(path))
    return ExtractionReport(
        path,
        "extended" if status == "same" else "extracted",
        written,
        extracted,
        n_errors,
        time.perf_counter() - t0,
    )


def part_path(out: str | Path, rank: int, world_size: int) -> Path:
    """The file one rank of a distributed extraction writes."""
    out = Path(out)
    return out.with_name(f"{out.stem}.part{rank:03d}-of-{world_size:03d}{out.suffix}")


def merge_parts(out: str | Path, order: list[str], world_size: int) -> Path:
    """Join the part files of `world_size` ranks into one cache, rows in `order`.

    Every part must be complete and of one identity; parts are removed only
    after the merged file is in place.
    """
    out = Path(out)
    parts = [part_path(out, r, world_size) for r in range(world_size)]
    missing = [str(p) for p in parts if not p.exists()]
    if missing:
        raise CacheError(f"cannot merge {out}: part(s) missing: {', '.join(missing)}")
    caches = [read_cache(p) for p in parts]
    hashes = {c.attrs.get("identity") for c in caches}
    if len(hashes) != 1:
        raise CacheError(f"cannot merge {out}: the parts were made with different settings")
    first = caches[0]
    identity = {
        "modality": first.attrs["modality"],
        "extractor": first.attrs["extractor"],
        "model": first.attrs["model"],
        "params": first.params,
    }
    found = {sid: (c, k) for c in caches for k, sid in enumerate(c.ids)}
    ids = [sid for sid in order if sid in found]
    errors = {sid: why for p in parts for sid, why in read_errors(p).items()}
    write_errors(out, errors.items())
    write_cache(
        out,
        ids,
        [found[s][0].sequence(found[s][1]) for s in ids],
        identity,
        dtype=str(first.features.dtype),
    )
    for p in parts:
        p.unlink()
        errors_path(p).unlink(missing_ok=True)
    return out


def _size(loaded: Any) -> int:
    """Length for bucketing: samples or frames, summed over a list of chunks (wav2vec2)."""
    if isinstance(loaded, list | tuple):
        return sum(_size(part) for part in loaded)
    try:
        return len(loaded)
    except TypeError:
        return 0


def _embed_bucketed(extractor: Extractor, pending: list[tuple[MediaItem, Any]], batch_size: int,
                    writer: CacheWriter) -> int:
    """Embed in batches of similar length: extractors batch equal lengths together
    (padding would change the features), so sorted batches keep the device busy."""
    if BUCKET_BY_LENGTH:
        pending = sorted(pending, key=lambda pair: _size(pair[1]))
    return sum(_embed(extractor, pending[lo : lo + batch_size], writer)
               for lo in range(0, len(pending), batch_size))


def _embed(extractor: Extractor, batch: list[tuple[MediaItem, Any]], writer: CacheWriter) -> int:
    if not batch:
        return 0
    try:
        with torch.inference_mode():
            features = extractor.embed([loaded for _, loaded in batch])
    except Exception:
        if len(batch) == 1:
            item = batch[0][0]
            log.exception("extractor failed on %s", item.sample_id)
            writer.add_error(item.sample_id, "extractor failed (see log)")
            return 0
        # One bad sample must not sink its batch: retry one by one.
        return sum(_embed(extractor, [pair], writer) for pair in batch)
    for (item, _), feats in zip(batch, features, strict=True):
        writer.add(item.sample_id, feats)
    return len(batch)


class _NoBar:
    def update(self, n: int) -> None: ...
    def close(self) -> None: ...


def _progress(total: int, desc: str, enabled: bool) -> Any:
    if not enabled or total == 0:
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="sample", leave=False)
