"""`runlog`: the history folder in dvclive's layout, byte for byte as dvclive's own `Live`
writes it, logged epoch by epoch or replayed, and without `Live`'s side effects."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from amid.distill.runlog import log_epoch, open_live

# 0-based epochs; a metric may start late (the teacher's accuracy from epoch 1 on)
HISTORY = [{"epoch": e, "loss_total": 1.0 / (e + 1), "val_acc_student": 0.1 * e,
            **({"val_acc_teacher": 0.5 + 0.1 * e} if e else {})} for e in range(4)]


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _dvclive(folder: Path, rows: list[dict], monkeypatch) -> dict[str, bytes]:
    """What dvclive's Live writes for `rows` logged epoch by epoch (the reference), run
    outside any git repository, where it finds no project to initialise."""
    from dvclive import Live

    folder.parent.mkdir(parents=True)
    monkeypatch.chdir(folder.parent)
    live = Live(dir=str(folder), save_dvc_exp=False, dvcyaml=None, report=None)
    for row in rows:
        live.step = row["epoch"]
        for name, value in row.items():
            if name != "epoch":
                live.log_metric(name, value)
        live.next_step()
    live.end()
    return _files(folder)


def test_logged_and_replayed_histories_are_dvclives_bytes(tmp_path, monkeypatch):
    # metrics present from the first epoch on (dvclive orders a late one's summary key
    # after `step` when logged epoch by epoch, before it when replayed; this writer always
    # puts `step` last)
    steady = [{k: v for k, v in r.items() if k != "val_acc_teacher"} for r in HISTORY]
    reference = _dvclive(tmp_path / "ref" / "dvclive", steady, monkeypatch)
    assert "metrics.json" in reference and "plots/metrics/loss_total.tsv" in reference
    logged = open_live(tmp_path / "logged", [])
    for row in steady:
        log_epoch(logged, row)
    assert _files(tmp_path / "logged" / "dvclive") == reference
    open_live(tmp_path / "replayed", steady)
    assert _files(tmp_path / "replayed" / "dvclive") == reference


def test_a_late_metric_has_its_own_steps_and_the_summary_every_last_value(tmp_path):
    open_live(tmp_path, HISTORY)
    tsv = (tmp_path / "dvclive/plots/metrics/val_acc_teacher.tsv").read_text()
    assert tsv.splitlines() == ["step\tval_acc_teacher"] + [
        f"{e}\t{0.5 + 0.1 * e}" for e in range(1, 4)]
    summary = json.loads((tmp_path / "dvclive/metrics.json").read_text())
    assert summary == {"loss_total": 0.25, "val_acc_student": 0.1 * 3,
                       "val_acc_teacher": 0.5 + 0.1 * 3, "step": 3}


def test_a_resumed_run_goes_on_after_its_replayed_history_and_drops_stale_files(tmp_path):
    stale = tmp_path / "dvclive/plots/metrics/old_metric.tsv"
    stale.parent.mkdir(parents=True)
    stale.write_text("step\told_metric\n0\t1.0\n")
    live = open_live(tmp_path, HISTORY[:2])
    assert not stale.exists()  # the folder holds the checkpoint's history, nothing else
    for row in HISTORY[2:]:
        log_epoch(live, row)
    rows = (tmp_path / "dvclive/plots/metrics/loss_total.tsv").read_text().splitlines()
    assert [r.split("\t")[0] for r in rows] == ["step", "0", "1", "2", "3"]
    assert json.loads((tmp_path / "dvclive/metrics.json").read_text())["step"] == 3


@pytest.mark.parametrize("commits", [0, 1])
def test_a_git_repository_without_dvc_is_left_alone(tmp_path, monkeypatch, commits):
    """dvclive's Live ran `dvc init` in such a repository (and failed in one without
    commits); the history is written and the repository is as it was."""
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True, env=env)
    if commits:
        (tmp_path / "a").write_text("a")
        subprocess.run(["git", "-C", str(tmp_path), "add", "a"], check=True, env=env)
        subprocess.run(["git", "-C", str(tmp_path), "commit", "-qm", "a"], check=True, env=env)
    monkeypatch.chdir(tmp_path)
    live = open_live(tmp_path / "run", [])
    log_epoch(live, HISTORY[0])
    assert (tmp_path / "run/dvclive/metrics.json").is_file()
    assert not (tmp_path / ".dvc").exists() and not (tmp_path / ".dvcignore").exists()
    status = subprocess.run(["git", "-C", str(tmp_path), "status", "--porcelain"],
                            capture_output=True, text=True, check=True).stdout
    assert status.splitlines() == ["?? run/"]
