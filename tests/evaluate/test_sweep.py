"""`amid-evaluate sweep`: every member scored, grouped over seeds, as a table."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from amid.evaluate.cli import app
from amid.evaluate.sweep import group_name

# (alpha, seed, student right on all 4 test samples?, failed?)
MEMBERS = [(0.0, 0, False, False), (0.0, 1, True, False),
           (4.0, 0, True, False), (4.0, 1, True, False), (4.0, 2, True, True)]


def _sweep(tmp_path, fake):
    folder = tmp_path / "runs" / "sweeps" / "alpha"
    rows = []
    for alpha, seed, right, failed in MEMBERS:
        name = f"seed={seed},alpha={alpha}"
        if not failed:
            fake.write_outputs(folder / name / "outputs.h5", seed=seed, all_right=right)
        rows.append({"name": name, "overrides": {"train.seed": seed, "methods.amid.alpha": alpha},
                     "run": str(folder / name), "mode": "stacked", "epochs": 3,
                     "error": "loss term 'loss_ts' became NaN" if failed else None})
    (folder / "sweep.json").write_text(json.dumps({
        "method": "amid", "axes": {"train.seed": [0, 1, 2], "methods.amid.alpha": [0.0, 4.0]},
        "members": rows}))
    return folder


def test_members_are_scored_and_grouped_over_seeds(tmp_path, fake):
    folder = _sweep(tmp_path, fake)
    out = tmp_path / "metrics" / "sweeps" / "alpha.json"
    res = CliRunner().invoke(app, ["sweep", str(folder), "--out", str(out)])
    assert res.exit_code == 0, res.output
    result = json.loads(out.read_text())
    assert list(result["groups"]) == ["alpha=0.0", "alpha=4.0"]
    assert result["failed"] == ["seed=2,alpha=4.0"]
    # conftest: the student gets 3 of 4 right (Top-1 0.75), or all 4 with all_right
    low = result["groups"]["alpha=0.0"]
    assert low["n"] == 2 and low["seeds"] == [0, 1]
    assert low["student"]["top1"] == pytest.approx((0.75 + 1.0) / 2)
    assert low["std"]["student"]["top1"] == pytest.approx(0.125)  # population std of 2
    high = result["groups"]["alpha=4.0"]
    assert high["n"] == 2 and high["student"]["top1"] == pytest.approx(1.0)
    assert high["teacher"]["top1"] == pytest.approx(2 / 3)  # the teacher's known result
    member = json.loads((out.with_suffix("") / "seed=1,alpha=0.0.json").read_text())
    assert member["student"]["top1"] == 1.0 and member["overrides"]["train.seed"] == 1
    table = out.with_suffix(".md").read_text()
    assert "| alpha=0.0 | 2 | 87.5 ± 12.5 |" in table
    assert "Failed members (not averaged): seed=2,alpha=4.0." in table


def test_group_names_leave_the_seed_and_the_fold_out():
    assert group_name({"train.seed": 3, "methods.amid.alpha": 1, "methods.amid.tau": 0.1}) == \
        "alpha=1,tau=0.1"
    assert group_name({"train.seed": 3}) == "all"
    assert group_name({"dataset.fold": 2, "methods.amid.alpha": 1}) == "alpha=1"  # averaged


def test_not_a_sweep_folder_or_all_failed_is_a_clear_error(tmp_path, fake):
    res = CliRunner().invoke(app, ["sweep", str(tmp_path), "--out", str(tmp_path / "m.json")])
    assert res.exit_code == 2 and f"{tmp_path / 'sweep.json'} does not exist" in res.output
    folder = tmp_path / "s"
    folder.mkdir()
    (folder / "sweep.json").write_text(json.dumps({"method": "amid", "members": [
        {"name": "seed=0", "overrides": {"train.seed": 0}, "error": "NaN"}]}))
    res = CliRunner().invoke(app, ["sweep", str(folder), "--out", str(tmp_path / "m.json")])
    assert res.exit_code == 2 and "every member failed to train (seed=0)" in res.output
    assert not (tmp_path / "m.json").exists()


def _preset_sweep(tmp_path, fake, presets: dict[int, str]):
    """A sweep of `amid` whose members' config.json record their preset, as amid-train's do."""
    folder = tmp_path / "runs" / "sweeps" / "presets"
    rows = []
    for seed, preset in presets.items():
        name = f"seed={seed},preset={preset}"
        outputs = fake.write_outputs(folder / name / "outputs.h5", seed=seed)
        (outputs.parent / "config.json").write_text(json.dumps({"method": "amid", "config": {
            "methods": {"amid": {"preset": preset}}}}))
        rows.append({"name": name, "overrides": {"train.seed": seed,
                                                 "methods.amid.preset": preset},
                     "run": str(folder / name), "mode": "stacked", "epochs": 3, "error": None})
    (folder / "sweep.json").write_text(json.dumps({
        "method": "amid", "axes": {"train.seed": list(presets),
                                   "methods.amid.preset": sorted(set(presets.values()))},
        "members": rows}))
    return folder


def test_the_table_labels_a_recommended_run_as_the_report_does(tmp_path, fake):
    """`amid (recommended)` (docs/outputs.md's label), never the bare `amid`: in the title
    when the whole sweep is at that preset, in a column when the sweep is over presets."""
    out = tmp_path / "metrics" / "one.json"
    folder = _preset_sweep(tmp_path, fake, {0: "recommended", 1: "recommended"})
    res = CliRunner().invoke(app, ["sweep", str(folder), "--out", str(out)])
    assert res.exit_code == 0, res.output
    lines = out.with_suffix(".md").read_text().splitlines()
    assert lines[0] == "# Sweep presets (amid (recommended), test split)"
    assert '| preset="recommended" | 2 | ' in "\n".join(lines)  # no run column: one label

    out = tmp_path / "metrics" / "both.json"
    folder = _preset_sweep(tmp_path / "b", fake, {0: "paper", 1: "recommended"})
    res = CliRunner().invoke(app, ["sweep", str(folder), "--out", str(out)])
    assert res.exit_code == 0, res.output
    lines = out.with_suffix(".md").read_text().splitlines()
    assert lines[0] == "# Sweep presets (amid, test split)"
    header = [c.strip() for c in lines[4].strip("|").split("|")]
    rows = {cells[0]: cells for cells in ([c.strip() for c in line.strip("|").split("|")]
                                          for line in lines[6:8])}
    assert header[:3] == ["group", "run", "n"]
    assert rows['preset="paper"'][1] == "amid"
    assert rows['preset="recommended"'][1] == "amid (recommended)"
    assert json.loads(out.read_text())["groups"]['preset="recommended"']["label"] == \
        "amid (recommended)"
