"""`runlog`: a history replayed into dvclive reads as the same history logged epoch by epoch."""

from __future__ import annotations

import json

from amid.distill.runlog import log_epoch, open_live

HISTORY = [{"epoch": e, "loss_total": 1.0 / (e + 1), "val_acc_student": 0.1 * e}
           for e in range(4)]


def _rows(folder):
    """metric -> [(step, value)] from dvclive's TSVs (their timestamps left out)."""
    found = {}
    for tsv in sorted((folder / "dvclive" / "plots" / "metrics").glob("*.tsv")):
        head, *lines = tsv.read_text().splitlines()
        cols = head.split("\t")
        found[tsv.stem] = [(int(r[cols.index("step")]), float(r[cols.index(tsv.stem)]))
                           for r in (line.split("\t") for line in lines)]
    return found


def test_a_replayed_history_equals_the_logged_one(tmp_path):
    logged = open_live(tmp_path / "logged", [])
    for row in HISTORY:
        log_epoch(logged, row)
    logged.end()
    replayed = open_live(tmp_path / "replayed", HISTORY)
    # the summary is on disk before the run goes on (or is killed)
    early = json.loads((tmp_path / "replayed" / "dvclive" / "metrics.json").read_text())
    assert early == {"loss_total": 0.25, "val_acc_student": 0.1 * 3, "step": 3}
    replayed.end()
    assert _rows(tmp_path / "replayed") == _rows(tmp_path / "logged") == {
        "loss_total": [(e, 1.0 / (e + 1)) for e in range(4)],
        "val_acc_student": [(e, 0.1 * e) for e in range(4)]}
    for folder in ("logged", "replayed"):
        summary = json.loads((tmp_path / folder / "dvclive" / "metrics.json").read_text())
        assert summary == early


def test_a_resumed_run_goes_on_after_its_replayed_history(tmp_path):
    live = open_live(tmp_path, HISTORY[:2])
    for row in HISTORY[2:]:
        log_epoch(live, row)
    live.end()
    assert [s for s, _ in _rows(tmp_path)["loss_total"]] == [0, 1, 2, 3]
    assert json.loads((tmp_path / "dvclive" / "metrics.json").read_text())["step"] == 3
