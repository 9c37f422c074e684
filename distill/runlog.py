"""What a run tells as it goes: the header, the per-epoch dvclive history.

dvclive writes `<run>/dvclive/` (a TSV per metric, for `dvc plots`). Its
folder is opened fresh and the checkpoint's history replayed into it, which
keeps the logged history equal to the checkpoint's even when a crash fell
between logging and saving.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import torch

from amid.errors import AmidError


def open_live(run: Path, history: list[dict[str, float]]) -> Any:
    """A fresh dvclive folder in `run` with `history` replayed into it."""
    from dvclive import Live

    try:
        live = Live(dir=str(run / "dvclive"), save_dvc_exp=False, dvcyaml=None, report=None)
        # replayed rows are written as they were logged (each TSV row under its epoch),
        # with one summary at the end: `next_step` per row would rewrite the summary and
        # re-read every TSV each time (dvclive's Studio update), quadratic in the epochs
        for row in history:
            _log_row(live, row)
        if history:
            live.make_summary()
    except (OSError, sqlite3.Error) as exc:  # a read-only or full run folder
        raise AmidError(f"cannot write the training history in {run / 'dvclive'}: "
                        f"{getattr(exc, 'strerror', None) or exc}") from None
    return live


def log_epoch(live: Any, row: dict[str, float]) -> None:
    """One finished epoch, as it ends: its row, then dvclive's step (summary, Studio)."""
    try:
        _log_row(live, row)
        live.next_step()
    except OSError as exc:
        raise AmidError(f"cannot write the training history in {live.dir}: "
                        f"{exc.strerror or exc}") from None


def _log_row(live: Any, row: dict[str, float]) -> None:
    live.step = int(row["epoch"])
    for name, value in row.items():
        if name != "epoch":
            live.log_metric(name, value)


def run_header(name: str, members: list[Any], device: torch.device, amp: bool,
               start: int) -> str:
    """One paragraph: what is about to train, on what, how big."""
    first = members[0]
    data, tc = first.data, first.cfg.train
    splits = " / ".join(f"{s} {int(r.shape[0])}" for s, r in data.splits.items())
    feats = ", ".join(f"{m} {d.dim}-d x <= {d.max_len} steps"
                      for m, d in {**data.target, **data.auxiliary}.items())
    params = sum(p.numel() for p in first.method.parameters())
    runs = (f"{len(members)} stacked members ({', '.join(m.run.name for m in members[:4])}"
            f"{', ...' if len(members) > 4 else ''})") if len(members) > 1 else str(first.run)
    precision = "bf16 autocast" if amp else "fp32"
    resume = f", resuming after epoch {start}" if start else ""
    return (f"training {name} -> {runs} on {device} ({precision}, {torch.get_num_threads()} "
            f"CPU threads): {splits} samples, {len(data.classes)} classes; features {feats}; "
            f"{params:,} parameters; {tc.epochs} epochs of batch {tc.batch_size}{resume}")
