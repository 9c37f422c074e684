"""Fault injection at exact points, for the crash tests (never set in normal use).

Writers call `fault_point("name")` where a crash matters (inside a shard write,
between a write and its rename, inside a cleanup). When `AMID_FAULT` names that
point, the process kills itself there with SIGKILL, as a power cut or the OOM
killer would, so a test needs no timed kill:

    AMID_FAULT=shard-written          # die at the first hit of that point
    AMID_FAULT=shard-written:3        # die at its third hit
    AMID_FAULT=epoch-saved:2:SIGTERM  # stop there with another signal (SIGTERM, SIGINT)
"""

from __future__ import annotations

import os
import signal

ENV = "AMID_FAULT"
_hits: dict[str, int] = {}


def fault_point(name: str) -> None:
    point, _, rest = os.environ.get(ENV, "").partition(":")
    if point != name:  # unset (the normal case) included: `name` is never empty
        return
    nth, _, sig = rest.partition(":")
    _hits[name] = _hits.get(name, 0) + 1
    if _hits[name] >= int(nth or 1):
        # SIGINT comes back here as KeyboardInterrupt (Python's handler), as Ctrl-C would
        os.kill(os.getpid(), getattr(signal, sig or "SIGKILL"))
