"""A stopped and rerun `amid-train` ends byte-identical to an uninterrupted run, for every
method of the registry, every teacher mode it has (online, fixed), lone and stacked, stopped
by SIGKILL, SIGTERM or SIGINT at exact points (amid.faults; no timing).

Each scenario is stopped twice: right after epoch 1's checkpoint (for a fixed teacher, the
epoch it freezes in), then right after the LAST epoch's checkpoint, before the outputs are
written, so the final rerun only loads and finishes (the case where a frozen teacher was
never frozen in the finishing process and its outputs.h5 differed by 1e-8). Rerunning the
finished run must change nothing either. The runs happen in one driver process
(resume_driver.py), forked per command, so the whole matrix costs seconds.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from amid.config import load_config
from amid.distill.methods import METHODS
from amid.distill.train import train

from .conftest import assert_user_error, cli, make_train_project

SIGNALS = ("SIGKILL", "SIGTERM", "SIGINT")
EPOCHS = 3


def teacher_modes(method: str) -> list[str]:
    """The teacher modes a method can run in: online and fixed, fixed only, or none."""
    fields = set(METHODS.get(method).Options.model_fields)
    if "fixed_teacher" in fields:
        return ["online", "fixed"]
    return ["fixed"] if "teacher_epochs" in fields else ["none"]


def _scenarios() -> list[dict]:
    out, k = [], 0
    for method in METHODS:  # every registered method: a new one is covered with no edit here
        for mode in teacher_modes(method):
            sets = []
            if mode != "none":  # frozen after epoch 1: the first stop lands on the switch
                sets.append(f"methods.{method}.teacher_epochs=1")
            if len(teacher_modes(method)) > 1:
                sets.append(f"methods.{method}.fixed_teacher={str(mode == 'fixed').lower()}")
            for engine in ("lone", "stacked"):
                first, second = SIGNALS[k % 3], SIGNALS[(k + 1) % 3]  # each signal at each stop
                k += 1
                out.append({
                    "name": f"{method}-{mode}-{engine}", "method": method, "sets": sets,
                    "sweep": ["train.seed=[0,1]"] if engine == "stacked" else [],
                    "stops": [[first, "epoch-saved:1"], [second, "epoch-saved:2"]]})
    # inside a checkpoint's write (the temporary written, not renamed), each signal
    fixed = ["methods.amid.fixed_teacher=true", "methods.amid.teacher_epochs=1"]
    for sig in ("SIGKILL", "SIGINT"):  # SIGTERM ends the process as SIGKILL does
        out.append({"name": f"amid-inside-checkpoint-{sig}", "method": "amid", "sets": fixed,
                    "sweep": [], "stops": [[sig, "checkpoint-written:2"]]})
    # the distillation gate (min_disagreement, the recommended preset's): its measure is
    # taken as the teacher freezes, between the two stops, and kept in the checkpoint
    gated = [*fixed, "methods.amid.min_disagreement=0.1"]
    for engine, sweep in (("lone", []), ("stacked", ["train.seed=[0,1]"])):
        out.append({"name": f"amid-gated-{engine}", "method": "amid", "sets": gated,
                    "sweep": sweep, "stops": [["SIGTERM", "epoch-saved:1"],
                                              ["SIGINT", "epoch-saved:2"]]})
    return out


SCENARIOS = _scenarios()


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> dict[str, dict]:
    root = tmp_path_factory.mktemp("resume")
    params = make_train_project(root, per_class=6, epochs=EPOCHS)
    (root / "scenarios.json").write_text(json.dumps(SCENARIOS))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    env.pop("AMID_FAULT", None)
    proc = subprocess.run([sys.executable, str(Path(__file__).with_name("resume_driver.py")),
                           str(params), str(root / "scenarios.json"), str(root / "runs")],
                          capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {r["name"]: r for r in json.loads(proc.stdout.splitlines()[-1])}


def test_the_matrix_covers_every_method_mode_engine_and_signal():
    names = {s["name"] for s in SCENARIOS}
    for method in METHODS:
        for mode in teacher_modes(method):
            assert {f"{method}-{mode}-lone", f"{method}-{mode}-stacked"} <= names
    assert set(teacher_modes("amid")) == {"online", "fixed"}  # both modes really occur
    assert {"amid-gated-lone", "amid-gated-stacked"} <= names
    for position in (0, 1):
        for engine in ("lone", "stacked"):
            used = {s["stops"][position][0] for s in SCENARIOS if s["name"].endswith(engine)}
            assert used == set(SIGNALS), (position, engine, used)


@pytest.mark.slow
@pytest.mark.parametrize("name", [s["name"] for s in SCENARIOS])
def test_a_stopped_run_resumes_to_the_uninterrupted_bytes(report, name):
    r = report[name]
    spec = next(s for s in SCENARIOS if s["name"] == name)
    assert r["straight"] == "ok", r["log"]
    for (sig, point), outcome in zip(spec["stops"], r["stops"], strict=True):
        # SIGKILL/SIGTERM end the process; SIGINT is Ctrl-C: KeyboardInterrupt, exit != 0
        assert outcome == f"signal {sig}" if sig != "SIGINT" else outcome.startswith("exit "), \
            (point, outcome, r["log"])
    assert r["resumed"] == "ok", r["log"]
    stacked = bool(spec["sweep"])
    members = ["seed=0/", "seed=1/"] if stacked else [""]
    for m in members:  # every output a finished run has, compared byte for byte below
        assert {f"{m}checkpoint.pt", f"{m}outputs.h5", f"{m}student.safetensors",
                f"{m}config.json"} <= set(r["files"]), r["files"]
    assert r["differ_after_resume"] == [], r["differ_after_resume"]
    assert r["again"] == "ok" and r["differ_after_rerun"] == [], r["differ_after_rerun"]
    if name.startswith("amid-inside-checkpoint-SIGKILL"):  # the killed write's temporary
        assert r["strays_after_stops"] and not r["strays_after_resume"], r


def test_a_finished_run_is_not_relabelled_with_fewer_epochs(tmp_path):
    """A 2-epoch run rerun with train.epochs 1: refused in one line, nothing rewritten
    (it used to exit 0 and write config.json saying 1 epoch beside 2-epoch weights)."""
    params = make_train_project(tmp_path, epochs=2)
    train("baseline", load_config(params), tmp_path / "run", live=False)
    before = {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir() if p.is_file()}
    result = cli("amid-train", "--method", "baseline", "--params", str(params), "--out", "run",
                 "--set", "train.epochs=1", "-q", cwd=tmp_path)
    assert_user_error(result, "holds a run of 2 epochs", "train.epochs 1", "another --out")
    after = {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir() if p.is_file()}
    assert after == before
