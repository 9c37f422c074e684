"""The extraction runner: manifest + extractor -> one resumable HDF5 cache.

Work is committed in shards as it goes (amid.cache_writer.CacheWriter), so killing the
process loses at most one shard of work and rerunning picks up where it
stopped. A finished cache with the same identity (extractor, model, params)
is reused: samples whose source fingerprint (media path and content, segment,
text: `amid.samples`) is unchanged are kept, new or changed ones are
extracted, and ids gone from the manifest are dropped. A cache made with
other parameters is re-extracted and replaced only once the new one is
complete, never mixed with new features.

The extractor may be given as a function that builds it: then the identity is
given too, and the model is loaded only when there is work to do (an
up-to-date cache loads nothing).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from amid.cache import read_cache, read_error_sources, read_errors
from amid.cache_writer import CacheWriter
from amid.errors import CacheError
from amid.extract.extractors.base import Extractor, MediaError, MediaItem, libraries_of
from amid.extract.parts import merge_parts, part_path  # noqa: F401  (re-exported)
from amid.extract.progress import Progress
from amid.identity import identity_hash
from amid.manifest import Manifest
from amid.samples import media_items, sample_sources

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


def portable(reason: str, root: Path) -> str:
    """An error reason without the dataset's location (decoders quote absolute paths), so
    the sidecar's bytes do not depend on where the dataset lies."""
    for prefix in {str(root.absolute()), str(root)} - {"", "."}:
        reason = reason.replace(prefix.rstrip("/") + "/", "")
    return reason


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


@dataclass
class _Plan:
    """What an existing cache of the same identity still holds good, and what changed."""

    keep: set[str]  # samples whose features stay
    errors: dict[str, tuple[str, str]]  # recorded errors that stay: id -> (reason, source)
    new: int
    changed: list[str]
    dropped: int


def _plan(existing: Any, out: Path, order: list[str], sources: dict[str, str]) -> _Plan:
    cached = dict(zip(existing.ids, existing.sources or [None] * len(existing.ids),
                      strict=True))
    reasons, failed = read_errors(out), read_error_sources(out)
    keep = {sid for sid in order if sid in cached and cached[sid] == sources[sid]}
    errors = {sid: (reasons[sid], failed[sid]) for sid in order
              if sid not in cached and sid in failed and failed[sid] == sources[sid]}
    known = set(cached) | set(failed)
    changed = [sid for sid in order if sid in known and sid not in keep and sid not in errors]
    new = sum(1 for sid in order if sid not in known)
    return _Plan(keep, errors, new, changed, len(set(cached) - set(order)))


def run_extraction(
    manifest: Manifest,
    modality: str,
    extractor: Extractor | Callable[[], Extractor],
    out: str | Path,
    *,
    identity: dict[str, Any] | None = None,
    batch_size: int = 16,
    num_workers: int = 0,
    dtype: str = "float32",
    shard_size: int = 64,
    progress: bool | str = True,
    rank: int = 0,
    world_size: int = 1,
) -> ExtractionReport:
    """Extract `modality` for every manifest row into the cache at `out`.

    `extractor` is an Extractor, or a function that builds one; with a function,
    `identity` (what `extractor.identity()` will return; see
    `amid.extract.extractors.expected_identity`) is required, and the function
    is called only when some sample needs extracting. `shard_size` samples
    are committed at a time: a crash loses at most that much. `progress`:
    True (a bar on a terminal, periodic log lines otherwise), False, or a
    `Progress` mode. With `world_size` > 1 this process takes rows rank,
    rank + world_size, ... and writes its own part file (`part_path`).
    """
    out = Path(out) if world_size == 1 else part_path(out, rank, world_size)
    t0 = time.perf_counter()
    built = extractor if isinstance(extractor, Extractor) else None
    if identity is None:
        if built is None:
            raise TypeError("run_extraction: pass `identity` with an extractor factory")
        identity = built.identity()
    if identity["modality"] != modality:
        raise CacheError(f"extractor {identity['extractor']!r} makes {identity['modality']} "
                         f"features, not {modality}")
    # the libraries whose versions the cache records: the extractor's own
    libraries = type(built).LIBRARIES if built is not None else libraries_of(
        identity["extractor"])
    items = media_items(manifest, modality)[rank::world_size]
    order = [item.sample_id for item in items]
    sources = sample_sources(items, modality, manifest.root)
    status, existing = _existing(out, identity)
    plan = _plan(existing, out, order, sources) if status == "same" else None
    if plan is not None:
        if not plan.new and not plan.changed and not plan.dropped:
            if Path(f"{out}.parts").exists():
                # A kill between finalize's rename and its cleanup left the shards.
                with CacheWriter(out, identity, dtype=dtype, shard_size=shard_size,
                                 libraries=libraries) as writer:
                    writer.discard()
            return ExtractionReport(out, "up to date", len(existing), 0, len(plan.errors),
                                    time.perf_counter() - t0)
        if existing.sources is None:
            log.warning("%s has no source fingerprints (written by an earlier version); "
                        "extracting again to record what each sample is made from", out)
        else:
            log.warning(
                "%s: the manifest changed since extraction: %d new id(s) to extract, %d "
                "sample(s) whose media or text changed%s, %d id(s) no longer in the manifest "
                "dropped", out, plan.new, len(plan.changed),
                f" (first: {plan.changed[0]!r})" if plan.changed else "", plan.dropped,
            )
    elif status == "other":
        log.warning(
            "%s was made with other settings (%s); extracting again, the old file "
            "stays until the new one is complete",
            out,
            existing.attrs.get("params"),
        )

    with CacheWriter(out, identity, dtype=dtype, shard_size=shard_size,
                     libraries=libraries) as writer:
        if plan is not None:
            writer.adopt(existing, keep=plan.keep)
            for sid, (reason, source) in plan.errors.items():
                writer.add_error(sid, reason, source)
        skip = set(plan.errors) if plan is not None else set()
        todo = [item for item in items if item.sample_id not in skip
                and writer.sources.get(item.sample_id) != sources[item.sample_id]]
        extracted = 0
        if todo:
            if built is None:
                built = extractor()  # only now: an up-to-date cache never loads the model
            if built.identity() != identity:  # a bug (they must agree): keep the traceback
                raise RuntimeError(f"extractor identity {built.identity()} differs from the "
                                   f"expected {identity}")
            mode = progress if isinstance(progress, str) else "auto" if progress else "off"
            bar = Progress(len(todo), f"{modality} ({identity['extractor']})", mode)
            extracted = _extract(built, todo, sources, writer, bar, batch_size, num_workers,
                                 manifest.root)
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


def _extract(extractor: Extractor, todo: list[MediaItem], sources: dict[str, str],
             writer: CacheWriter, bar: Progress, batch_size: int, workers: int,
             root: Path) -> int:
    extracted = 0
    pending: list[tuple[MediaItem, Any]] = []
    for item, loaded, error in _loaded(extractor, todo, workers):
        if error is not None:
            writer.add_error(item.sample_id, portable(error, root), sources[item.sample_id])
            bar.update(1)
        else:
            pending.append((item, loaded))
        if len(pending) >= BUCKET_WINDOW * batch_size:
            extracted += _embed_bucketed(extractor, pending, batch_size, writer, sources, bar)
            pending = []
    return extracted + _embed_bucketed(extractor, pending, batch_size, writer, sources, bar)


def _embed_bucketed(extractor: Extractor, pending: list[tuple[MediaItem, Any]], batch_size: int,
                    writer: CacheWriter, sources: dict[str, str], bar: Progress) -> int:
    """Embed in batches of similar length: extractors batch equal lengths together
    (padding would change the features), so sorted batches keep the device busy."""
    if BUCKET_BY_LENGTH:
        pending = sorted(pending, key=lambda pair: extractor.size(pair[1]))
    done = 0
    for lo in range(0, len(pending), batch_size):
        batch = pending[lo : lo + batch_size]
        done += _embed(extractor, batch, writer, sources)
        bar.update(len(batch))  # embedded or failed: either way no longer to do
    return done


def _embed(extractor: Extractor, batch: list[tuple[MediaItem, Any]], writer: CacheWriter,
           sources: dict[str, str]) -> int:
    if not batch:
        return 0
    try:
        with torch.inference_mode():
            features = extractor.embed([loaded for _, loaded in batch])
    except Exception as exc:
        if len(batch) == 1:
            item = batch[0][0]
            if isinstance(exc, MediaError):  # a streamed clip failed to decode part-way
                writer.add_error(item.sample_id, exc.args[0] if exc.args else str(exc),
                                 sources[item.sample_id])
                return 0
            log.exception("extractor failed on %s", item.sample_id)
            writer.add_error(item.sample_id, f"extractor failed: {type(exc).__name__}: "
                             f"{str(exc).splitlines()[0] if str(exc) else ''}",
                             sources[item.sample_id])
            return 0
        # One bad sample must not sink its batch: retry one by one.
        return sum(_embed(extractor, [pair], writer, sources) for pair in batch)
    for (item, _), feats in zip(batch, features, strict=True):
        writer.add(item.sample_id, feats, sources[item.sample_id])
    return len(batch)
