"""The `<cache>.errors.csv` sidecar: samples whose media could not be decoded, with why.

Columns `sample_id`, `reason` and `source` (the sample's source fingerprint
when it failed, so a fixed file is retried; empty in sidecars written before
it existed). Rows are sorted, so the same errors give the same bytes.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from pathlib import Path

from amid.errors import CacheError
from amid.storage import replace_atomically


def errors_path(path: str | Path) -> Path:
    """The sidecar listing samples whose media could not be decoded."""
    return Path(f"{path}.errors.csv")


def write_errors(path: str | Path, errors: Iterable[tuple[str, ...]]) -> Path:
    """Write (or remove, when empty) the sidecar, atomically; rows are (sample_id,
    reason) or (sample_id, reason, source fingerprint)."""
    target = errors_path(path)
    rows = sorted((row + ("", ""))[:3] for row in errors)
    if not rows:
        try:
            target.unlink(missing_ok=True)
        except OSError as exc:  # a read-only folder: say so, as a failed write would
            raise CacheError(f"cannot remove {target}: {exc.strerror}") from None
        return target
    with (replace_atomically(target, CacheError) as tmp,
          open(tmp, "w", newline="", encoding="utf-8") as fh):
        csv.writer(fh).writerows([("sample_id", "reason", "source"), *rows])
    return target


def _rows(path: str | Path) -> list[dict[str, str]]:
    target = errors_path(path)
    if not target.exists():
        return []
    with open(target, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def read_error_sources(path: str | Path) -> dict[str, str]:
    """sample id -> source fingerprint of each recorded error ("" when not recorded)."""
    return {row["sample_id"]: row.get("source") or "" for row in _rows(path)}


def read_errors(path: str | Path) -> dict[str, str]:
    return {row["sample_id"]: row["reason"] for row in _rows(path)}
