"""Extraction progress that tells the truth: samples embedded, rate, time left.

On a terminal, a tqdm bar (items/s and ETA); otherwise (a log file, CI, DVC)
one log line every `every` seconds, `visual (densenet): 120/480 samples,
2.3 samples/s, ETA 2m36s`, so a long run is never silent; with `--quiet`,
nothing. The count moves when a sample's features exist (or its error is
recorded), not when its media are decoded: decoding runs ahead of the model.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from typing import Any

from amid.cli import duration  # the one duration formatter of the commands

log = logging.getLogger("amid.extract")
LOG_EVERY = 10.0  # seconds between progress lines when stderr is not a terminal


class Progress:
    """`update(n)` after n samples are embedded (or failed); `close()` at the end.

    `mode`: "bar" (tqdm), "log" (periodic log lines), "off", or "auto" (bar
    when stderr is a terminal, else log). `clock` is injectable for tests.
    """

    def __init__(self, total: int, desc: str, mode: str = "auto", *, every: float = LOG_EVERY,
                 clock: Callable[[], float] = time.monotonic, file: Any = None) -> None:
        if mode == "auto":
            mode = "bar" if sys.stderr.isatty() else "log"
        self.total, self.desc, self.every, self.clock = total, desc, every, clock
        self.mode = mode if total > 0 else "off"
        self.done = 0
        self.started = self.last = clock()
        self._bar: Any = None
        if self.mode == "bar":
            from tqdm import tqdm

            # disable=False: quiet runs make no bar at all, whatever TQDM_DISABLE says
            self._bar = tqdm(total=total, desc=desc, unit="sample", leave=False,
                             dynamic_ncols=True, file=file or sys.stderr, disable=False)

    def update(self, n: int) -> None:
        if n <= 0:
            return
        self.done += n
        if self._bar is not None:
            self._bar.update(n)
        elif self.mode == "log" and self.clock() - self.last >= self.every:
            self.last = self.clock()
            log.info("%s", self.line())

    def line(self) -> str:
        elapsed = max(self.clock() - self.started, 1e-9)
        rate = self.done / elapsed
        eta = duration((self.total - self.done) / rate) if rate > 0 else "unknown"
        return (f"{self.desc}: {self.done}/{self.total} samples, {rate:.1f} samples/s, "
                f"ETA {eta}")

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        elif self.mode == "log" and self.done:
            log.info("%s: %d samples in %s", self.desc, self.done,
                     duration(self.clock() - self.started))
