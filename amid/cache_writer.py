"""Resumable, crash-safe writing of one feature cache (`CacheWriter`; the format: `amid.cache`).

An extraction commits its work as small shard files in `<file>.parts/`, each
written to a temporary name and renamed, so a SIGKILL at any moment loses at
most the samples not yet in a shard. A lock file makes it one writer per cache.
`finalize` merges the shards, in manifest order, into the final file. Each
sample carries its source fingerprint (`amid.samples`) into the shards and the
final `/sources`, so a resumed run can tell a committed sample made from other
media from one it can keep. Crash-test points (`amid.faults`): `shard-writing`/
`shard-written`, `final-writing`/`final-written`, `cleanup` (removing shards).
"""

from __future__ import annotations

import glob
import json
import logging
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from amid.cache import (
    SOURCES,
    FeatureCache,
    attr_value,
    read_cache,
    write_cache,
    write_cache_streaming,
    write_errors,
)
from amid.errors import CacheError
from amid.faults import fault_point
from amid.identity import IDENTITY_KEYS, identity_hash
from amid.locking import ExclusiveLock
from amid.storage import write_text

log = logging.getLogger(__name__)


class CacheWriter:
    """The writer of one cache. Usage::

        with CacheWriter(path, identity, libraries=extractor.LIBRARIES) as w:
            todo = [i for i in ids if w.sources.get(i) != source_of[i]]
            for sid, feats in ...: w.add(sid, feats, source)   # or w.add_error(sid, why, source)
            w.finalize(order=ids)
    """

    def __init__(self, path: str | Path, identity: dict[str, Any], *, dtype: str = "float32",
                 shard_size: int = 64, libraries: Sequence[str] = ()) -> None:
        self.path = Path(path)
        self.identity = {k: identity[k] for k in IDENTITY_KEYS}
        self.libraries = tuple(libraries)  # whose versions the cache records
        self.dtype = dtype
        self.shard_size = shard_size
        self.parts = Path(f"{self.path}.parts")
        self._lock: ExclusiveLock | None = None
        self._buffer: list[tuple[str, np.ndarray, str]] = []
        self._errors: dict[str, tuple[str, str]] = {}  # id -> (reason, source)
        self.done: set[str] = set()
        self.sources: dict[str, str] = {}  # id -> source fingerprint of its committed features

    def __enter__(self) -> CacheWriter:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:  # e.g. cache_dir names a file
            raise CacheError(f"cannot create the cache folder {self.path.parent}: {exc}") from None
        try:
            busy = CacheError(f"{self.path} is being written by another extraction (lock "
                              f"{self.path}.lock); wait for it to finish")
            self._lock = ExclusiveLock(f"{self.path}.lock", busy).__enter__()
        except OSError as exc:  # a read-only folder: the lock file cannot be made
            raise CacheError(f"cannot write {self.path}.lock: {exc.strerror or exc}") from None
        try:
            self._resume()
        except BaseException as exc:
            self._lock.__exit__(None, None, None)
            if isinstance(exc, OSError):
                raise CacheError(f"cannot write in {self.parts}: {exc.strerror or exc}") from None
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is None or exc[0] is KeyboardInterrupt:
            self._flush()  # keep what was computed, even on Ctrl-C
        self._lock.__exit__(*exc)

    def _shards(self) -> list[Path]:
        return sorted(self.parts.glob("shard-*.h5"))

    def _resume(self) -> None:
        self.parts.mkdir(exist_ok=True)
        # Temporaries of killed writers (shards, the final file, the sidecar);
        # we hold the lock, so none of them is being written now.
        strays = [*self.parts.glob(".*.tmp"),
                  *self.path.parent.glob(f".{glob.escape(self.path.name)}.*.tmp")]
        for stray in strays:
            stray.unlink(missing_ok=True)
        marker = self.parts / "identity.json"
        if marker.exists() and json.loads(marker.read_text()) != self.identity:
            # The features would differ: never extend old work with new settings.
            shutil.rmtree(self.parts)
            self.parts.mkdir()
        write_text(marker, json.dumps(self.identity, sort_keys=True), CacheError)
        # Each shard carries its own identity: a kill during finalize's cleanup can leave
        # shards without the marker, and they must not join a cache of other settings.
        want = identity_hash(self.identity)
        for shard in self._shards():
            try:
                with h5py.File(shard, "r") as f:
                    same = attr_value(f.attrs.get("identity")) == want
                    ids = list(f["ids"].asstr()[...]) if same else []
                    sources = ([s.decode("ascii") for s in f[SOURCES][...]]
                               if same and SOURCES in f else [""] * len(ids))
            except (OSError, KeyError) as exc:
                log.warning("%s cannot be read (%s); its samples are extracted again", shard, exc)
                same = False
            if not same:
                shard.unlink()
                continue
            self.done.update(ids)
            # shards in order: a later one supersedes an earlier copy of a sample
            self.sources.update(zip(ids, sources, strict=True))

    def discard(self) -> None:
        """Remove the shards (left by a kill after the final file was in place)."""
        self._remove_parts()
        self.done.clear()
        self.sources.clear()

    def adopt(self, existing: FeatureCache, keep: set[str] | None = None) -> None:
        """Start from a finished cache of the same identity (to extend or update it): its
        samples in `keep` (default: all) that no shard holds yet (an interrupted run's)."""
        sources = existing.sources or [""] * len(existing.ids)
        chosen = [k for k, sid in enumerate(existing.ids)
                  if sid not in self.done and (keep is None or sid in keep)]
        if not chosen:
            return
        ids, kept = [existing.ids[k] for k in chosen], [sources[k] for k in chosen]
        self._write_shard(ids, [existing.sequence(k) for k in chosen], kept)
        self.done.update(ids)
        self.sources.update(zip(ids, kept, strict=True))

    def _write_shard(self, ids: Sequence[str], seqs: Sequence[np.ndarray],
                     sources: Sequence[str], fault: str = "") -> None:
        write_cache(self._next_shard(), ids, seqs,
                    {**self.identity, "feature_dim": seqs[0].shape[1]}, dtype=self.dtype,
                    sources=sources, fault=fault, libraries=self.libraries)

    def _next_shard(self) -> Path:
        # After the highest number, not the count: shards may be missing from
        # the middle, and a rename onto an existing shard would lose its samples.
        numbers = [int(p.stem.split("-")[1]) for p in self._shards()]
        return self.parts / f"shard-{max(numbers, default=-1) + 1:06d}.h5"

    def add(self, sample_id: str, features: np.ndarray, source: str = "") -> None:
        features = np.asarray(features, dtype=np.float32)
        if features.ndim != 2 or not len(features):
            raise ValueError(f"{sample_id}: features must be (T >= 1, dim), got {features.shape}")
        if not np.isfinite(features).all():
            self.add_error(sample_id, "extractor produced NaN or infinite features", source)
            return
        self._buffer.append((sample_id, features, source))
        self._errors.pop(sample_id, None)
        self.done.add(sample_id)
        self.sources[sample_id] = source
        if len(self._buffer) >= self.shard_size:
            self._flush()

    def add_error(self, sample_id: str, reason: str, source: str = "") -> None:
        self._errors[sample_id] = (reason, source)

    def _flush(self) -> None:
        if not self._buffer:
            return
        self._write_shard(*zip(*self._buffer, strict=True), fault="shard")
        self._buffer.clear()

    def finalize(self, order: Sequence[str]) -> tuple[Path, int]:
        """Merge the shards in `order` (manifest order) into the final file; ids not in
        `order` are dropped. Returns the path and the number of samples written."""
        self._flush()
        # Only ids and offsets first: the features are copied shard by shard
        # below, so merging needs one shard in memory, not the whole cache.
        where: dict[str, tuple[Path, int, int]] = {}  # id -> (shard, start, stop)
        dim = None
        for shard in self._shards():  # in order: a later copy of a sample supersedes
            with h5py.File(shard, "r") as f:
                dim = int(f["features"].shape[1])
                offsets = f["offsets"][...]
                for k, sid in enumerate(f["ids"].asstr()[...]):
                    where[sid] = (shard, int(offsets[k]), int(offsets[k + 1]))
        ids = [sid for sid in order if sid in where]
        wanted = set(order)
        errors = [(s, why, src) for s, (why, src) in self._errors.items()
                  if s not in where and s in wanted]
        if not ids:
            # The sidecar is not written (a previous good cache keeps its own), so
            # the reasons go into the message itself.
            shown = "; ".join(f"{s}: {why}" for s, why, _ in sorted(errors)[:3])
            more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
            raise CacheError(f"{self.path}: no sample could be extracted ({len(errors)} "
                             f"error(s){': ' + shown + more if errors else ''})")
        position = {sid: k for k, sid in enumerate(ids)}
        by_shard: dict[Path, list[str]] = {}
        for sid in ids:
            by_shard.setdefault(where[sid][0], []).append(sid)

        def fill(data: h5py.Dataset, out_offsets: np.ndarray) -> None:
            for n, (shard, members) in enumerate(by_shard.items()):
                features = read_cache(shard).features  # validates the shard, too
                for sid in members:
                    k, (_, lo, hi) = position[sid], where[sid]
                    data[out_offsets[k] : out_offsets[k + 1]] = features[lo:hi]
                if n == 0:
                    fault_point("final-writing")

        lengths = [where[s][2] - where[s][1] for s in ids]
        write_cache_streaming(self.path, ids, lengths, {**self.identity, "feature_dim": dim},
                              fill, dtype=self.dtype, fault="final", libraries=self.libraries,
                              sources=[self.sources.get(s, "") for s in ids])
        # after the cache: a failed cache write keeps the old cache and its sidecar together
        write_errors(self.path, errors)
        self._remove_parts()
        return self.path, len(ids)

    def _remove_parts(self) -> None:
        """Delete the shards, then their folder; a kill part-way leaves loadable shards."""
        for k, shard in enumerate(self._shards()):
            shard.unlink(missing_ok=True)
            if k == 0:
                fault_point("cleanup")
        shutil.rmtree(self.parts, ignore_errors=True)
