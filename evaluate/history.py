"""A run's dvclive history as one long table, the data of its `dvc plots` panel.

`amid-train` logs one TSV per metric under `<run>/dvclive/plots/metrics/` (every
loss term, the gradient each term sends into the student encoder, train and
validation accuracy of student and teacher, the gap, the same-class cosine,
the discriminator weights: whatever the method logged). The run folder is a
DVC output of `train@<method>`, so dvc.yaml cannot declare plots inside it, and
its top-level `plots:` cannot loop over `pipeline.methods`; the evaluate stage
copies the history into `metrics/<run>/history.csv` instead, which its `plots:`
entry draws with configs/plots/history.json (one small chart per metric).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

COLUMNS = ["epoch", "metric", "value"]


def run_history(run_dir: str | Path) -> pd.DataFrame:
    """(epoch, metric, value) rows of every metric the run logged, by metric then epoch.

    Epochs count from 1, as in reports/curves.csv; a metric in a subfolder is
    named by its path (`val/acc`). Without a history (a run made elsewhere) the
    table is empty, so the declared plot file is still written.
    """
    from amid.evaluate.figures import read_history  # the one TSV reader (lazy: matplotlib)

    root = Path(run_dir) / "dvclive" / "plots" / "metrics"
    frames = []
    for tsv in sorted(root.rglob("*.tsv")) if root.is_dir() else []:
        hist = read_history(tsv)
        if hist is None or hist.empty:
            continue
        frames.append(pd.DataFrame({
            "epoch": hist["step"].astype(int).to_numpy() + 1,
            "metric": tsv.relative_to(root).with_suffix("").as_posix(),
            "value": hist["value"].to_numpy(),
        }))
    if not frames:
        return pd.DataFrame(columns=COLUMNS)
    return pd.concat(frames, ignore_index=True)[COLUMNS]
