"""Distributed extraction: each rank writes its own part file; `merge_parts` joins them."""

from __future__ import annotations

from pathlib import Path

from amid.cache import errors_path, read_cache, read_error_sources, read_errors, write_cache
from amid.cache import write_errors as _write_errors
from amid.errors import CacheError
from amid.extract.extractors.base import libraries_of


def part_path(out: str | Path, rank: int, world_size: int) -> Path:
    """The file one rank of a distributed extraction writes."""
    out = Path(out)
    return out.with_name(f"{out.stem}.part{rank:03d}-of-{world_size:03d}{out.suffix}")


def merge_parts(out: str | Path, order: list[str], world_size: int) -> Path:
    """Join the part files of `world_size` ranks into one cache, rows in `order`.

    Every part must be complete and of one identity; parts are removed only
    after the merged file (and its errors sidecar) is in place.
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
    errors = [(sid, why, read_error_sources(p).get(sid, ""))
              for p in parts for sid, why in read_errors(p).items()]
    with_sources = all(c.sources is not None for c in caches)
    write_cache(
        out,
        ids,
        [found[s][0].sequence(found[s][1]) for s in ids],
        identity,
        dtype=str(first.features.dtype),
        sources=[found[s][0].sources[found[s][1]] for s in ids] if with_sources else None,
        libraries=libraries_of(identity["extractor"]),
    )
    _write_errors(out, errors)
    for p in parts:
        p.unlink()
        errors_path(p).unlink(missing_ok=True)
    return out
