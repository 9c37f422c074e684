"""Resumable, crash-safe writing of one feature cache (`CacheWriter`).

An extraction commits its work as small shard files in `<file>.parts/`, each
written to a temporary name and renamed, so a SIGKILL at any moment loses at
most the samples not yet in a shard; every shard that exists loads. A lock
file makes it one writer per cache. `finalize` merges the shards, in manifest
order, into the final file (again temporary name, then rename). The format
itself is `amid.cache`.
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
    _IDENTITY_KEYS,
    FeatureCache,
    attr_value,
    errors_path,
    identity_hash,
    read_cache,
    write_cache,
    write_cache_streaming,
    write_errors,
)
from amid.errors import CacheError
from amid.locking import ExclusiveLock

log = logging.getLogger(__name__)


class CacheWriter:
    """Resumable, crash-safe writer for one cache; one writer per file (a lock says so).

    Usage::

        with CacheWriter(path, identity) as w:
            todo = [i for i in ids if i not in w.done]
            for sid, feats in ...: w.add(sid, feats)      # or w.add_error(sid, reason)
            w.finalize(order=ids)
    """

    def __init__(
        self,
        path: str | Path,
        identity: dict[str, Any],
        *,
        dtype: str = "float32",
        shard_size: int = 64,
    ) -> None:
        self.path = Path(path)
        self.identity = {k: identity[k] for k in _IDENTITY_KEYS}
        self.dtype = dtype
        self.shard_size = shard_size
        self.parts = Path(f"{self.path}.parts")
        self._lock: ExclusiveLock | None = None
        self._buffer: list[tuple[str, np.ndarray]] = []
        self._errors: dict[str, str] = {}
        self.done: set[str] = set()

    # -- lifecycle
    def __enter__(self) -> CacheWriter:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:  # e.g. cache_dir names a file
            raise CacheError(f"cannot create the cache folder {self.path.parent}: {exc}") from None
        self._lock = ExclusiveLock(
            f"{self.path}.lock",
            CacheError(f"{self.path} is being written by another extraction (lock "
                       f"{self.path}.lock); wait for it to finish"),
        ).__enter__()
        self._resume()
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
        marker.write_text(json.dumps(self.identity, sort_keys=True))
        # Each shard carries its own identity: a kill during finalize's cleanup
        # can leave shards without the marker, and they must not be mixed into
        # a cache of other settings.
        want = identity_hash(self.identity)
        for shard in self._shards():
            try:
                with h5py.File(shard, "r") as f:
                    same = attr_value(f.attrs.get("identity")) == want
                    ids = list(f["ids"].asstr()[...]) if same else []
            except (OSError, KeyError) as exc:
                log.warning("%s cannot be read (%s); its samples are extracted again", shard, exc)
                same = False
            if not same:
                shard.unlink()
                continue
            self.done.update(ids)

    def discard(self) -> None:
        """Remove the shard folder (left by a kill after the final file was in place)."""
        shutil.rmtree(self.parts, ignore_errors=True)
        self.done.clear()

    def adopt(self, existing: FeatureCache) -> None:
        """Start from a finished cache of the same identity (to extend it with new ids).

        Only ids no shard holds yet are added: an interrupted extension already
        holds them all, and shards left by an interrupted cleanup hold some.
        """
        keep = [k for k, sid in enumerate(existing.ids) if sid not in self.done]
        if not keep:
            return
        write_cache(
            self._next_shard(),
            [existing.ids[k] for k in keep],
            [existing.sequence(k) for k in keep],
            {**self.identity, "feature_dim": existing.feature_dim},
            dtype=self.dtype,
        )
        self.done.update(existing.ids[k] for k in keep)

    def _next_shard(self) -> Path:
        # After the highest number, not the count: shards may be missing from
        # the middle, and a rename onto an existing shard would lose its samples.
        numbers = [int(p.stem.split("-")[1]) for p in self._shards()]
        return self.parts / f"shard-{max(numbers, default=-1) + 1:06d}.h5"

    # -- adding work
    def add(self, sample_id: str, features: np.ndarray) -> None:
        features = np.asarray(features, dtype=np.float32)
        if features.ndim != 2 or not len(features):
            raise ValueError(f"{sample_id}: features must be (T >= 1, dim), got {features.shape}")
        if not np.isfinite(features).all():
            self.add_error(sample_id, "extractor produced NaN or infinite features")
            return
        self._buffer.append((sample_id, features))
        self.done.add(sample_id)
        if len(self._buffer) >= self.shard_size:
            self._flush()

    def add_error(self, sample_id: str, reason: str) -> None:
        self._errors[sample_id] = reason

    def _flush(self) -> None:
        if not self._buffer:
            return
        ids, seqs = zip(*self._buffer, strict=True)
        identity = {**self.identity, "feature_dim": seqs[0].shape[1]}
        write_cache(self._next_shard(), ids, seqs, identity, dtype=self.dtype)
        self._buffer.clear()

    def finalize(self, order: Sequence[str]) -> tuple[Path, int]:
        """Merge the shards in `order` (manifest order) into the final file.

        Returns the path and the number of samples written. Ids in the shards but
        not in `order` are dropped (the manifest no longer has them).
        """
        self._flush()
        # Only ids and offsets first: the features are copied shard by shard
        # below, so merging needs one shard in memory, not the whole cache.
        where: dict[str, tuple[Path, int, int]] = {}  # id -> (shard, start, stop)
        dim = None
        for shard in self._shards():
            with h5py.File(shard, "r") as f:
                dim = int(f["features"].shape[1])
                offsets = f["offsets"][...]
                for k, sid in enumerate(f["ids"].asstr()[...]):
                    where[sid] = (shard, int(offsets[k]), int(offsets[k + 1]))
        ids = [sid for sid in order if sid in where]
        if not ids:
            raise CacheError(
                f"{self.path}: no sample could be extracted ({len(self._errors)} errors; "
                f"see {errors_path(self.path)})"
            )
        write_errors(self.path, ((s, r) for s, r in self._errors.items() if s not in where))
        position = {sid: k for k, sid in enumerate(ids)}
        by_shard: dict[Path, list[str]] = {}
        for sid in ids:
            by_shard.setdefault(where[sid][0], []).append(sid)

        def fill(data: h5py.Dataset, out_offsets: np.ndarray) -> None:
            for shard, members in by_shard.items():
                features = read_cache(shard).features  # validates the shard, too
                for sid in members:
                    _, lo, hi = where[sid]
                    k = position[sid]
                    data[out_offsets[k] : out_offsets[k + 1]] = features[lo:hi]

        lengths = [where[s][2] - where[s][1] for s in ids]
        identity = {**self.identity, "feature_dim": dim}
        write_cache_streaming(self.path, ids, lengths, identity, fill, dtype=self.dtype)
        shutil.rmtree(self.parts, ignore_errors=True)
        return self.path, len(ids)
