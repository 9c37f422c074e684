"""Published feature sets turned into feature caches (docs/data.md), usable as they are.

`import_ucf51_cnn14`: the 512-d PANNs CNN14 audio embeddings of UCF51
released with the CCL code (`ucf51_cnn14_emb512.tar.gz`: one float32 `.npy`
of shape (512,) per video, `<dir>/<Class>/v_<Class>_gXX_cYY.npy`) become
`audio__cnn14-emb512.h5`, one clip-level vector (T = 1) per video, ids the
file stems (the ids the `ucf51` adapter gives). macOS `._*` resource-fork
entries in the archive are skipped. The archive's SHA-256 goes into the
cache's params, so a different release never passes for this one.

Nothing is allocated on the archive's word: a member larger than a `.npy` of
the expected shape could be, or whose `.npy` header declares another shape,
is refused with one line naming it before its bytes are read (a 2.9 MB
archive can otherwise expand to gigabytes), and so is an archive with more
members than any release of these features has.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path, PurePosixPath

import numpy as np

from amid.cache import write_cache
from amid.errors import CacheError

UCF51_CNN14_EXTRACTOR = "cnn14-emb512"
UCF51_CNN14_DIM = 512
MAX_MEMBERS = 1_000_000  # UCF51's release has ~14k (with macOS `._` files)
_NPY_HEADER = 4096  # bytes of .npy header allowed beyond the data (version 1-3 headers)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_npy_archive(archive: str | Path, dim: int) -> dict[str, np.ndarray]:
    """sample id (file stem) -> (dim,) float32, for every real `.npy` in a tar archive."""
    archive = Path(archive)
    if not archive.is_file():
        raise CacheError(f"archive {archive} not found")
    features: dict[str, np.ndarray] = {}
    limit = dim * 8 + _NPY_HEADER  # float64 is the widest dtype a feature file has
    try:
        with tarfile.open(archive, "r:*") as tar:
            for count, member in enumerate(tar):
                if count >= MAX_MEMBERS:
                    raise CacheError(f"{archive}: more than {MAX_MEMBERS} members; not a "
                                     "release of per-video feature files")
                tar.members.clear()  # tarfile keeps every header seen: memory per member
                name = PurePosixPath(member.name)
                if not member.isfile() or name.suffix != ".npy" or name.name.startswith("._"):
                    continue
                if member.size > limit:
                    raise CacheError(f"{archive}: {member.name} declares {member.size} bytes, "
                                     f"more than a ({dim},) .npy holds ({limit}); not read")
                handle = tar.extractfile(member)
                array = _load_npy(handle.read(member.size), dim, archive, member.name)
                vector = np.asarray(array, dtype=np.float32).reshape(-1)
                if vector.shape != (dim,) or not np.isfinite(vector).all():
                    raise CacheError(
                        f"{archive}: {member.name} holds shape {array.shape} "
                        f"{'with NaN/inf ' if vector.size == dim else ''}(expected ({dim},) finite)"
                    )
                if name.stem in features:
                    raise CacheError(f"{archive}: two files for sample {name.stem!r}")
                features[name.stem] = vector
    except (tarfile.TarError, EOFError, OSError, ValueError) as exc:
        raise CacheError(
            f"{archive} cannot be read as a tar archive of .npy files: {exc}"
        ) from None
    if not features:
        raise CacheError(f"{archive}: no .npy feature files inside")
    return features


def _load_npy(data: bytes, dim: int, archive: Path, member: str) -> np.ndarray:
    """A .npy of `dim` values, its header checked before the array is made."""
    stream = io.BytesIO(data)
    try:
        version = np.lib.format.read_magic(stream)
        read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                       else np.lib.format.read_array_header_2_0)
        shape, _, dtype = read_header(stream)
    except (ValueError, SyntaxError) as exc:
        raise CacheError(f"{archive}: {member} is not a .npy file ({exc})") from None
    if int(np.prod(shape)) != dim or dtype.hasobject:
        raise CacheError(f"{archive}: {member} holds shape {shape} {dtype} (expected ({dim},) "
                         "numbers)")
    stream.seek(0)
    return np.load(stream, allow_pickle=False)


def import_ucf51_cnn14(archive: str | Path, out_path: str | Path) -> Path:
    """Write the UCF51 CNN14-emb512 archive as the cache `out_path`; returns the path."""
    archive = Path(archive)
    features = read_npy_archive(archive, UCF51_CNN14_DIM)
    ids = sorted(features)
    identity = {
        "modality": "audio",
        "extractor": UCF51_CNN14_EXTRACTOR,
        "model": "PANNs Cnn14_emb512 (features published with the CCL code, Chen et al. 2021)",
        "params": {
            "source": archive.name,
            "sha256": _sha256(archive),
            "pooling": "clip",
            "sample_rate": 32000,
        },
        "feature_dim": UCF51_CNN14_DIM,
    }
    return write_cache(out_path, ids, [features[i][None] for i in ids], identity)
