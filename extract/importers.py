"""Published feature sets turned into DESIGN 3.2 caches, usable by stage two as they are.

`import_ucf51_cnn14`: the 512-d PANNs CNN14 audio embeddings of UCF51
released with the CCL code (`ucf51_cnn14_emb512.tar.gz`: one float32 `.npy`
of shape (512,) per video, `<dir>/<Class>/v_<Class>_gXX_cYY.npy`) become
`audio__cnn14-emb512.h5`, one clip-level vector (T = 1) per video, ids the
file stems (the ids the `ucf51` adapter gives). macOS `._*` resource-fork
entries in the archive are skipped. The archive's SHA-256 goes into the
cache's params, so a different release never passes for this one.
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
    try:
        with tarfile.open(archive, "r:*") as tar:
            for member in tar:
                name = PurePosixPath(member.name)
                if not member.isfile() or name.suffix != ".npy" or name.name.startswith("._"):
                    continue
                handle = tar.extractfile(member)
                array = np.load(io.BytesIO(handle.read()), allow_pickle=False)
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
