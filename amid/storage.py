"""Writing files when the disk may be full: reserve first, say so plainly.

HDF5 (h5py 3.16) segfaults when it closes a file whose write failed for lack
of space, so the process dies without a word and the user cannot tell a full
disk from a bug. `reserve_space` claims the bytes before HDF5 starts writing,
turning a full disk, a quota or a file-size limit into an ordinary OSError
that the caller reports with `write_failure`.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

NO_SPACE = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)


def reserve_space(path: str | Path, nbytes: int) -> None:
    """Create `path` with `nbytes` allocated (h5py's "w" mode truncates it again)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        if nbytes > 0:
            os.posix_fallocate(fd, 0, nbytes)
    except OSError as exc:
        # a filesystem without fallocate (EINVAL, EOPNOTSUPP) just goes unreserved
        if exc.errno in NO_SPACE:
            raise
    finally:
        os.close(fd)


def hdf5_estimate(arrays_bytes: int, n_strings: int = 0, string_bytes: int = 0) -> int:
    """A generous upper bound of an HDF5 file's size: payload, string heap, metadata.

    Measured with h5py 3.16: ~11 kB of fixed metadata, under 40 bytes per
    variable-length string besides its text, ~2% for the chunk index.
    """
    return int(arrays_bytes * 1.05) + string_bytes + 64 * n_strings + (1 << 16)


def nbytes(*arrays: np.ndarray) -> int:
    return int(sum(a.nbytes for a in arrays))


def write_failure(path: str | Path, exc: BaseException) -> str:
    """One line saying why writing `path` failed, naming a full disk when that is the cause."""
    if isinstance(exc, OSError) and exc.errno in NO_SPACE:
        return f"cannot write {path}: {exc.strerror} (disk full, quota or file size limit)"
    return f"cannot write {path}: {exc}"


@contextlib.contextmanager
def replace_atomically(
    path: str | Path,
    failure: Callable[[str], Exception],
    *,
    reserve: int = 0,
    fsync: bool = False,
    errors: tuple[type[BaseException], ...] = (OSError,),
) -> Iterator[Path]:
    """Yield a temporary name beside `path`; when the block succeeds, rename it onto `path`.

    A reader sees the old file or the new one, never half of one. The bytes
    are reserved first when `reserve` is given. A write that fails with one of
    `errors` (a full disk, typically) raises `failure(message)` naming the
    file; anything else propagates. Either way the temporary is removed.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        if reserve:
            reserve_space(tmp, reserve)
        yield tmp
        if fsync:
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except errors as exc:
        tmp.unlink(missing_ok=True)
        raise failure(write_failure(path, exc)) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
