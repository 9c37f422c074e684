"""Fault injection at exact points, for the crash tests (never set in normal use).

Code that writes something calls `fault_point("name")` at the moments a crash
matters (inside a shard write, between a write and its rename, inside a
cleanup). When the environment variable `AMID_FAULT` names that point, the
process kills itself there with SIGKILL, exactly as a power cut or the OOM
killer would, so a test can check what survives without hoping that a timed
kill lands in the right place:

    AMID_FAULT=shard-written          # die at the first hit of that point
    AMID_FAULT=shard-written:3        # die at its third hit
    AMID_FAULT=epoch-saved:2:SIGTERM  # stop there with another signal (SIGTERM, SIGINT)

Unset (the normal case) it costs one dictionary lookup.
"""

from __future__ import annotations

import os
import signal

ENV = "AMID_FAULT"
_hits: dict[str, int] = {}


def fault_point(name: str) -> None:
    """SIGKILL this process if `AMID_FAULT` asks for a crash at `name` (this hit)."""
    spec = os.environ.get(ENV)
    if not spec:
        return
    point, _, rest = spec.partition(":")
    if point != name:
        return
    nth, _, sig = rest.partition(":")
    _hits[name] = _hits.get(name, 0) + 1
    if _hits[name] >= int(nth or 1):
        # SIGINT comes back here as KeyboardInterrupt (Python's handler), as Ctrl-C would
        os.kill(os.getpid(), getattr(signal, sig or "SIGKILL"))
