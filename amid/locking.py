"""One writer per file or folder: a non-blocking lock on a `.lock` file beside it.

The lock is an `fcntl.flock`, so the kernel releases it when its holder dies
(SIGKILL included): a crashed run never leaves a stale lock behind. The lock
file is removed on release; a process that opened it just before then notices
(the path no longer names the file it locked) and tries again.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import IO

from amid.errors import AmidError


class ExclusiveLock:
    """`with ExclusiveLock(path, busy)`: raise `busy` at once if another process holds it."""

    def __init__(self, path: str | Path, busy: AmidError) -> None:
        self.path = Path(path)
        self.busy = busy
        self._handle: IO[str] | None = None

    def __enter__(self) -> ExclusiveLock:
        while True:
            handle = open(self.path, "a+")  # noqa: SIM115  (held until __exit__)
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                raise self.busy from None
            # The holder before us may have removed the file after we opened it:
            # only a lock on the file that is still at `path` counts.
            if self.path.exists() and os.stat(self.path).st_ino == os.fstat(handle.fileno()).st_ino:
                self._handle = handle
                return self
            handle.close()

    def __exit__(self, *exc: object) -> None:
        if self._handle is None:
            return
        self.path.unlink(missing_ok=True)
        fcntl.flock(self._handle, fcntl.LOCK_UN)
        self._handle.close()
        self._handle = None
