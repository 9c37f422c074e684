"""Every file a command writes goes through `replace_atomically` (or its helpers).

A reader, or a later run, sees the old file or the new one, never half of
one: the bytes go to a temporary name beside the target (`.<name>.<pid>.tmp`)
and are renamed over it only once complete. A write that fails (read-only
folder, full disk, a folder where the file should be) raises one `AmidError`
naming the file, removes the temporary and keeps the previous good file.
Temporaries of killed writers are removed by the next write of the same file.

HDF5 (h5py 3.16) segfaults when it closes a file whose write failed for lack
of space, and torch's zip writer aborts the process; `reserve` claims the
bytes first, turning a full disk, a quota or a file-size limit into an
ordinary OSError that is reported like any other.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import hashlib
import json
import os
import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from amid.errors import OutputError
from amid.faults import fault_point

NO_SPACE = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)
_TMP = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.tmp$")


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
    """A generous upper bound of an HDF5 file's size. Measured with h5py 3.16: ~11 kB of
    metadata, under 40 bytes per variable-length string besides its text, ~2% chunk index.
    """
    return int(arrays_bytes * 1.05) + string_bytes + 64 * n_strings + (1 << 16)


def nbytes(*arrays: np.ndarray) -> int:
    return int(sum(a.nbytes for a in arrays))


def write_failure(path: str | Path, exc: BaseException) -> str:
    """One line saying why writing `path` failed, naming a full disk when that is the cause."""
    if isinstance(exc, OSError) and exc.errno in NO_SPACE:
        return f"cannot write {path}: {exc.strerror} (disk full, quota or file size limit)"
    if isinstance(exc, OSError) and exc.strerror:
        return f"cannot write {path}: {exc.strerror}"
    return f"cannot write {path}: {exc}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def remove_stale_temporaries(path: str | Path) -> None:
    """Delete `.<name>.<pid>.tmp` (files, or folders: `amid.distill.reuse`) beside `path`
    left by writers that no longer run."""
    path = Path(path)
    stem = temporary_stem(path.name)
    try:
        siblings = list(path.parent.glob(f".{glob.escape(stem)}.*.tmp"))
    except OSError:
        return
    for tmp in siblings:
        match = _TMP.match(tmp.name)
        if match and match["name"] == stem and not _alive(int(match["pid"])):
            if tmp.is_dir() and not tmp.is_symlink():
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                _remove(tmp)


NAME_MAX = 255  # bytes in one file name (ext4, XFS, btrfs; APFS and NTFS count characters)
_PID_DIGITS = 10  # room for any pid (Linux's largest, 4194304, has 7 digits)


def temporary_stem(name: str) -> str:
    """What `.<stem>.<pid>.tmp` is built from: `name`, or, where that would pass NAME_MAX,
    its first 64 bytes (whole characters), `~` and 16 hex digits of its SHA-256: two long
    names never share a temporary, and a stale one is found by the next write of its file.
    """
    raw = os.fsencode(name)
    if len(raw) + len("..tmp.") + _PID_DIGITS <= NAME_MAX:
        return name
    head = raw[:64].decode("utf-8", "ignore")  # a cut inside a character drops it
    return f"{head}~{hashlib.sha256(raw).hexdigest()[:16]}"


def temporary_name(path: str | Path, pid: int | None = None) -> Path:
    """`.<stem>.<pid>.tmp` beside `path` (this process's pid unless given)."""
    path = Path(path)
    pid = os.getpid() if pid is None else pid
    return path.with_name(f".{temporary_stem(path.name)}.{pid}.tmp")


@contextlib.contextmanager
def replace_atomically(
    path: str | Path, failure: Callable[[str], Exception] = OutputError, *, reserve: int = 0,
    fsync: bool = False, errors: tuple[type[BaseException], ...] = (OSError,),
) -> Iterator[Path]:
    """Yield a temporary name beside `path` (parent folder made, `reserve` bytes claimed);
    when the block succeeds, rename it onto `path`. A write that fails with one of
    `errors` raises `failure(message)` naming the file; anything else propagates. Either
    way the temporary is removed and the previous file at `path` is untouched."""
    path = Path(path)
    tmp = temporary_name(path)
    try:
        _prepare(path, tmp, reserve)
        yield tmp
        if fsync:
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        _remove(tmp)
        if isinstance(exc, errors):
            raise failure(write_failure(path, exc)) from None
        raise


def _prepare(path: Path, tmp: Path, reserve: int) -> None:
    """No folder in the way, the parent made, stale temporaries gone, `reserve` claimed."""
    if path.is_dir():
        raise IsADirectoryError(errno.EISDIR, "a folder of that name is in the way", str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    if reserve:
        reserve_space(tmp, reserve)


def _remove(*tmps: Path) -> None:
    for tmp in tmps:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)


def write_text(path: str | Path, text: str,
               failure: Callable[[str], Exception] = OutputError) -> Path:
    """Write a text file (UTF-8) atomically; see `replace_atomically`."""
    data = text.encode("utf-8")
    with replace_atomically(path, failure, reserve=len(data)) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_json(path: str | Path, obj: Any,
               failure: Callable[[str], Exception] = OutputError) -> Path:
    """Write JSON (indented, trailing newline, NaN refused) atomically."""
    return write_text(path, json.dumps(obj, indent=2, allow_nan=False) + "\n", failure)


IMMUTABLE_FLAGS = 0x10 | 0x20  # FS_IMMUTABLE_FL, FS_APPEND_FL: a rename onto it fails
_FS_IOC_GETFLAGS = 0x80086601


def cannot_replace(path: Path) -> str | None:
    """Why a rename could not replace `path` (its folder not writable, the file immutable
    or append-only: `chattr +i/+a`), or None; checked before a group's first rename."""
    folder = path.parent if str(path.parent) else Path(".")
    if not os.access(folder, os.W_OK | os.X_OK):
        return f"its folder {folder} is not writable"
    if not path.exists():
        return None
    try:  # Linux file attributes; elsewhere (or on a file system without them) unknown
        import array
        import fcntl

        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        try:
            flags = array.array("l", [0])
            fcntl.ioctl(fd, _FS_IOC_GETFLAGS, flags)
        finally:
            os.close(fd)
    except (OSError, ImportError):
        return None
    return "it is immutable or append-only (chattr)" if flags[0] & IMMUTABLE_FLAGS else None


@contextlib.contextmanager
def replace_together(
    paths: list[Path], failure: Callable[[str], Exception] = OutputError, *,
    reserve: list[int] | None = None,
) -> Iterator[list[Path]]:
    """`replace_atomically` for the outputs of one command: a temporary per path, renamed
    one after another once every destination can be replaced (`cannot_replace`). A failure
    before the renames keeps every previous file; only a kill between two renames leaves a
    mixed set (writers that must let a reader tell record a shared id in each file)."""
    paths = [Path(p) for p in paths]
    tmps = [temporary_name(p) for p in paths]
    current = paths[0]
    try:
        for path, tmp, size in zip(paths, tmps, reserve or [0] * len(paths), strict=True):
            current = path
            _prepare(path, tmp, size)
        yield tmps
        for path in paths:
            current = path
            if why := cannot_replace(path):
                raise PermissionError(errno.EPERM, why, str(path))
        for path, tmp in zip(paths, tmps, strict=True):
            current = path
            os.replace(tmp, path)
            fault_point("replaced-one")  # crash tests: between two renames of a group
    except BaseException as exc:
        _remove(*tmps)
        if isinstance(exc, OSError):
            raise failure(write_failure(current, exc)) from None
        raise
