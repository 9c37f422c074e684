"""The HDF5 feature cache, format version 1 (docs/data.md).

One file per (dataset, modality, extractor): `/ids` (n,) UTF-8 strings,
`/offsets` (n+1,) int64 with offsets[0] = 0, `/features` (total_steps, dim)
float16/float32; sample k is rows offsets[k]:offsets[k+1]. Root attributes
carry the provenance (`format_version`, `modality`, `extractor`, `model`,
`params` as JSON, `feature_dim`, `complete`, library versions). An optional
`/sources` (n,) holds each sample's source fingerprint (`amid.samples`), so a
changed input is re-extracted; readers that do not know it ignore it.

A cache's bytes are a function of its contents: no timestamps (no `created`
attribute, HDF5 object times off), attributes in a fixed order, feature chunks
allocated at creation. Re-extracting identical features gives an identical
file, and DVC skips everything downstream. A finished file only appears via
`amid.storage`'s atomic replace; an extraction in progress writes shards
(`amid.cache_writer`).
"""

from __future__ import annotations

import contextlib
import functools
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

# the errors sidecar and the identity record live in their own modules; their
# functions stay importable from here
from amid.cache_errors import (  # noqa: F401
    errors_path,
    read_error_sources,
    read_errors,
    write_errors,
)
from amid.errors import CacheError
from amid.faults import fault_point
from amid.identity import (  # noqa: F401
    canonical_params,
    identity_differences,
    identity_hash,
    identity_of,
)
from amid.storage import hdf5_estimate, replace_atomically

FORMAT_VERSION = 1
_REQUIRED = ("ids", "offsets", "features")
SOURCES = "sources"  # optional per-sample source fingerprints (fixed-length ASCII)
_SOURCE_LEN = 16  # hex digits of a source fingerprint


def cache_path(cache_dir: str | Path, dataset: str, modality: str, extractor: str) -> Path:
    return Path(cache_dir) / dataset / f"{modality}__{extractor}.h5"


# Every cache records these versions: h5py writes the file, numpy holds the features.
# The extractor adds its own (`Extractor.LIBRARIES`); nothing else, so a cache's bytes
# change only with a library that can change them (not with amid's own version either).
BASE_LIBRARIES = ("h5py", "numpy")


@functools.cache
def _library_versions(libraries: tuple[str, ...] = ()) -> str:
    # cached: the metadata lookups cost ~13 ms, paid on every shard otherwise
    import importlib.metadata as md

    versions = {}
    for name in sorted({*BASE_LIBRARIES, *libraries}):
        with contextlib.suppress(md.PackageNotFoundError):
            versions[name] = md.version(name)
    return json.dumps(versions, sort_keys=True)


@dataclass
class FeatureCache:
    """A whole cache in memory: sample k's sequence is `features[offsets[k]:offsets[k+1]]`."""

    path: Path
    ids: list[str]
    offsets: np.ndarray
    features: np.ndarray
    attrs: dict[str, Any] = field(default_factory=dict)
    # per-sample source fingerprints (`/sources`); None for caches written without them
    sources: list[str] | None = None

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def feature_dim(self) -> int:
        return int(self.features.shape[1])

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    @property
    def params(self) -> dict[str, Any]:
        return json.loads(self.attrs.get("params", "{}"))

    def sequence(self, k: int) -> np.ndarray:
        return self.features[self.offsets[k] : self.offsets[k + 1]]

    def index(self) -> dict[str, int]:
        return {sid: k for k, sid in enumerate(self.ids)}


def attr_value(value: Any) -> Any:
    """An HDF5 attribute as plain Python (bytes decoded, NumPy scalars unwrapped)."""
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, np.generic):
        return value.item()
    return value


@contextlib.contextmanager
def _open(path: Path, require_complete: bool) -> Iterator[tuple[h5py.File, dict[str, Any]]]:
    """The open file and its attributes, its version, datasets and completeness checked."""
    if not path.exists():
        raise CacheError(f"feature cache {path} does not exist (run `amid-extract run` first)")
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise CacheError(f"{path} is not a readable HDF5 file ({exc})") from None
    with f:
        attrs = {k: attr_value(v) for k, v in f.attrs.items()}
        version = attrs.get("format_version")
        if version != FORMAT_VERSION:
            raise CacheError(f"{path}: format_version is {version!r}; this reader understands "
                             f"only {FORMAT_VERSION} (a cache from another version of the format)")
        missing = [name for name in _REQUIRED if name not in f]
        if missing:
            raise CacheError(f"{path}: missing dataset(s) {', '.join('/' + m for m in missing)}")
        if require_complete and not bool(attrs.get("complete", False)):
            raise CacheError(f"{path}: complete = false (an extraction did not finish); rerun "
                             "`amid-extract run`")
        yield f, attrs


def read_cache(path: str | Path, *, require_complete: bool = True) -> FeatureCache:
    """Load a whole cache into memory, checking every invariant of the format (docs/data.md)."""
    path = Path(path)
    with _open(path, require_complete) as (f, attrs):
        _check_shapes(path, f)
        ids = _ids(f)
        offsets = np.asarray(f["offsets"][...], dtype=np.int64)
        features = np.asarray(f["features"][...])
        sources = ([x.decode("ascii") if isinstance(x, bytes) else str(x) for x in f[SOURCES][...]]
                   if SOURCES in f else None)
    if features.dtype not in (np.float16, np.float32):
        raise CacheError(f"{path}: /features must be float16 or float32, is {features.dtype}")
    if np.any(np.diff(offsets) < 0):
        raise CacheError(f"{path}: /offsets must be non-decreasing and end at {features.shape[0]}")
    if "feature_dim" in attrs and int(attrs["feature_dim"]) != features.shape[1]:
        raise CacheError(f"{path}: feature_dim attribute {attrs['feature_dim']} != /features "
                         f"width {features.shape[1]}")
    if len(set(ids)) != len(ids):
        raise CacheError(f"{path}: /ids has duplicates")
    # in blocks of ~4M values: a whole-array isfinite would add a quarter of the cache
    block = max(1, (1 << 22) // max(1, features.shape[1]))
    if not all(np.isfinite(features[lo : lo + block]).all()
               for lo in range(0, len(features), block)):
        bad = np.flatnonzero(~np.isfinite(features).all(axis=1))
        sample = ids[int(np.searchsorted(offsets, bad[0], side="right") - 1)]
        raise CacheError(f"{path}: {len(bad)} feature rows are NaN or infinite (first in "
                         f"{sample!r})")
    return FeatureCache(path=path, ids=ids, offsets=offsets, features=features, attrs=attrs,
                        sources=sources)


def _ids(f: h5py.File) -> list[str]:
    if f["ids"].dtype.kind == "O":
        return list(f["ids"].asstr()[...])
    return [x.decode() if isinstance(x, bytes) else str(x) for x in f["ids"][...]]


def read_ids(path: str | Path) -> list[str]:
    """The sample ids of a complete cache, without reading its features."""
    path = Path(path)
    with _open(path, require_complete=True) as (f, _):
        ids = _ids(f)
    if len(set(ids)) != len(ids):
        raise CacheError(f"{path}: /ids has duplicates")
    return ids


def read_info(path: str | Path) -> dict[str, Any]:
    """Attributes and sizes of a cache, its layout checked without reading a feature;
    an unfinished cache (`complete = false`) is still described."""
    path = Path(path)
    with _open(path, require_complete=False) as (f, attrs):
        _check_shapes(path, f)
        for name in (*_REQUIRED, SOURCES):
            if name in f:
                attrs[f"/{name}"] = f"{f[name].shape} {f[name].dtype}"
    attrs["errors"] = len(read_errors(path))
    return attrs


def _check_shapes(path: Path, f: h5py.File) -> None:
    """`read_cache`'s layout rules that need no feature values."""
    n, features, offsets = len(f["ids"]), f["features"], f["offsets"]
    if len(features.shape) != 2:
        raise CacheError(f"{path}: /features must be 2-D (steps, dim), has shape {features.shape}")
    if offsets.shape != (n + 1,) or int(offsets[0]) != 0:
        raise CacheError(f"{path}: /offsets must have n+1 = {n + 1} entries starting at 0")
    if int(offsets[-1]) != features.shape[0]:
        raise CacheError(f"{path}: /offsets must be non-decreasing and end at {features.shape[0]}")
    if SOURCES in f and len(f[SOURCES]) != n:
        raise CacheError(f"{path}: /{SOURCES} has {len(f[SOURCES])} entries for {n} ids")


def write_cache(path: str | Path, ids: Sequence[str], sequences: Sequence[np.ndarray],
                identity: dict[str, Any], **options: Any) -> Path:
    """Write a whole cache atomically. `identity` holds `modality`, `extractor`, `model` and
    `params` (a dict); `options` are `write_cache_streaming`'s."""
    path = Path(path)
    if len(ids) != len(sequences):
        raise ValueError(f"{len(ids)} ids but {len(sequences)} sequences")
    dim = int(identity.get("feature_dim") or (sequences[0].shape[1] if sequences else 0))
    for sid, seq in zip(ids, sequences, strict=True):
        if seq.ndim != 2 or seq.shape[1] != dim:
            raise CacheError(f"{path}: sample {sid!r} has shape {seq.shape}, expected (T, {dim})")

    def fill(data: h5py.Dataset, offsets: np.ndarray) -> None:
        if len(data):
            data[...] = np.concatenate(sequences).astype(data.dtype, copy=False)

    return write_cache_streaming(path, ids, [len(s) for s in sequences],
                                 {**identity, "feature_dim": dim}, fill, **options)


def write_cache_streaming(
    path: str | Path, ids: Sequence[str], lengths: Sequence[int], identity: dict[str, Any],
    fill: Callable[[h5py.Dataset, np.ndarray], None], *, dtype: str = "float32",
    complete: bool = True, sources: Sequence[str] | None = None, fault: str = "",
    libraries: Sequence[str] = (),
) -> Path:
    """Write a cache whose features `fill(features_dataset, offsets)` writes piece by piece,
    so a merge's memory does not grow with the cache.

    `identity` must carry `feature_dim`; `sources` (one fingerprint per id) becomes
    `/sources`; `libraries` (the extractor's) join `BASE_LIBRARIES`. `fault` names the
    crash-test points (`<fault>-writing`: inside, `<fault>-written`: before the rename).
    """
    path = Path(path)
    dim = int(identity["feature_dim"])
    offsets = np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)]).astype(np.int64)
    if sources is not None and len(sources) != len(ids):
        raise ValueError(f"{len(ids)} ids but {len(sources)} sources")
    total = int(offsets[-1])
    id_bytes = sum(len(i.encode()) for i in ids)
    size = hdf5_estimate(total * dim * np.dtype(dtype).itemsize + offsets.nbytes, len(ids),
                         id_bytes + _SOURCE_LEN * len(ids))
    with replace_atomically(path, CacheError, reserve=size, fsync=True) as tmp:
        with h5py.File(tmp, "w") as f:
            # track_times=False everywhere: HDF5 would stamp each object with the
            # time of writing, and identical features must give identical bytes.
            f.create_dataset("ids", data=list(ids), dtype=h5py.string_dtype("utf-8"),
                             track_times=False)
            f.create_dataset("offsets", data=offsets, track_times=False)
            if sources is not None:
                f.create_dataset(SOURCES, data=np.array(list(sources), dtype=f"S{_SOURCE_LEN}"),
                                 track_times=False)
            data = f.create_dataset(
                "features", shape=(total, dim), dtype=dtype, track_times=False,
                chunks=(max(1, min(total, 4096)), max(dim, 1)) if total and dim else None,
                dcpl=_early_allocation() if total and dim else None,
            )
            fill(data, offsets)
            if fault:
                fault_point(f"{fault}-writing")
            model = identity.get("model", "none")
            params = identity.get("params", {})
            attrs = {
                "format_version": FORMAT_VERSION,
                "modality": identity["modality"],
                "extractor": identity["extractor"],
                "model": model,
                "params": canonical_params(params),
                "identity": identity_hash({**identity, "params": params, "model": model}),
                "feature_dim": dim,
                "complete": bool(complete),
                "library_versions": _library_versions(tuple(libraries)),
            }
            for key, value in attrs.items():  # one fixed order: the bytes depend on it
                f.attrs[key] = value
        if fault:
            fault_point(f"{fault}-written")
    return path


def _early_allocation() -> h5py.h5p.PropDCID:
    """Chunks allocated at creation, in index order: otherwise a chunk takes its place when
    first written, and a merge filling shard by shard lays the same features out anew."""
    dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    dcpl.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)
    dcpl.set_obj_track_times(False)  # h5py's track_times= does not reach a dcpl given to it
    return dcpl
