"""What a run tells as it goes: the header, the per-epoch history in dvclive's layout.

`<run>/dvclive/` holds one TSV per metric (`plots/metrics/<name>.tsv`: a `step`
column, the epoch from 0, and the metric's column) and `metrics.json` (each
metric's last value and `step`), byte for byte as dvclive's `Live` wrote them
(`dvc plots`, DVC Studio and `amid.evaluate.history` read them). Not by `Live`:
opening one runs `dvc init` in a git repository without a DVC project, fails in
one without commits, and costs a second of imports. The folder is rewritten from
the checkpoint's history when a run starts or resumes, so the logged history equals
the checkpoint's even when a crash fell between logging and saving.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from amid.errors import AmidError
from amid.storage import write_text


@dataclass
class RunLog:
    """A run's history as logged so far (`rows`), mirrored in `folder`."""

    folder: Path
    rows: list[dict[str, float]] = field(default_factory=list)

    @property
    def metrics_dir(self) -> Path:
        return self.folder / "plots" / "metrics"

    def write(self, names: list[str] | None = None) -> None:
        """The TSVs of `names` (default: every metric) and the summary, from `rows`."""
        if names is None:  # every metric, in the order they first appear
            names = list(dict.fromkeys(k for row in self.rows for k in row if k != "epoch"))
        for name in names:
            lines = [f"step\t{Path(name).name}"] + [
                f"{int(row['epoch'])}\t{row[name]}" for row in self.rows if name in row]
            path = self.metrics_dir / f"{name}.tsv"
            path.parent.mkdir(parents=True, exist_ok=True)
            write_text(path, "\n".join(lines) + "\n")
        summary: dict[str, Any] = {}
        for row in self.rows:  # each metric's last value, in the order metrics first appear
            summary.update((k, v) for k, v in row.items() if k != "epoch")
        if self.rows:
            summary["step"] = int(self.rows[-1]["epoch"])
        write_text(self.folder / "metrics.json", json.dumps(summary, indent=4) + "\n")


def open_live(run: Path, history: list[dict[str, float]]) -> RunLog:
    """`run/dvclive/` afresh, holding `history` (the checkpoint's rows so far)."""
    log = RunLog(run / "dvclive", list(history))
    try:
        shutil.rmtree(log.metrics_dir, ignore_errors=True)  # a metric the history lacks
        log.folder.mkdir(parents=True, exist_ok=True)
        if history:
            log.write()
    except OSError as exc:  # a read-only or full run folder
        raise AmidError(f"cannot write the training history in {log.folder}: "
                        f"{exc.strerror or exc}") from None
    return log


def log_epoch(log: RunLog, row: dict[str, float]) -> None:
    """One finished epoch, as it ends: its metrics' TSVs and the summary."""
    log.rows.append(row)
    try:
        log.write([k for k in row if k != "epoch"])
    except OSError as exc:
        raise AmidError(f"cannot write the training history in {log.folder}: "
                        f"{exc.strerror or exc}") from None


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
