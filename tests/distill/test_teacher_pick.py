"""`teacher_pick: best` (distill/methods/phase.py): the frozen teacher is the pre-training
epoch's whose validation Top-1 was highest, lone, stacked and across a resume."""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from amid.distill.train import data_from_config, train, train_members
from amid.errors import ConfigError

from .conftest import build_method, make_dataset, set_options

EPOCHS, PRETRAIN = 9, 7
# kd: a teacher of its own; amid: one sharing the student's classifier g (frozen with it)
FIXED = {"kd": {"fixed_teacher": True}, "amid": {"fixed_teacher": True},
         "crd": {}}


@pytest.fixture(scope="module")
def syn(tmp_path_factory):
    # a weak auxiliary signal and a high learning rate: the teacher's validation Top-1
    # goes up and down over its pre-training epochs, so best and last differ
    s = make_dataset(tmp_path_factory.mktemp("pick"), n_classes=3, per_class=20,
                     aux_signal=0.6)
    s.cfg.train.epochs, s.cfg.train.batch_size, s.cfg.train.lr = EPOCHS, 8, 3e-2
    return s


def _cfg(syn, method, pick, teacher_epochs=PRETRAIN, seed=0):
    cfg = copy.deepcopy(syn.cfg)
    cfg.train.seed = seed
    return set_options(cfg, method, teacher_epochs=teacher_epochs, teacher_pick=pick,
                       **FIXED[method])


def _teacher_bytes(run: Path) -> bytes:
    return (run / "teacher.safetensors").read_bytes()


def _best_epoch(history: list[dict]) -> int:
    """The first pre-training epoch of highest teacher validation Top-1, recomputed here."""
    accs = [row["val_acc_teacher"] for row in history[:PRETRAIN]]
    return accs.index(max(accs))


@pytest.mark.parametrize("method", ["kd", "amid", "crd"])
def test_best_freezes_the_teacher_a_run_stopped_at_its_best_epoch_froze(syn, tmp_path, method):
    """The frozen teacher equals, byte for byte, the teacher of a `last` run whose
    pre-training ends right after the best epoch (same seed: the same first epochs)."""
    history = train(method, _cfg(syn, method, "best"), tmp_path / "best", live=False)
    b = _best_epoch(history)
    assert b < PRETRAIN - 1, "the data must make the best epoch an earlier one"
    last = train(method, _cfg(syn, method, "last", teacher_epochs=b + 1), tmp_path / "cut",
                 live=False)
    assert [r["val_acc_teacher"] for r in last[:b + 1]] == \
        [r["val_acc_teacher"] for r in history[:b + 1]]  # the same first epochs
    assert _teacher_bytes(tmp_path / "best") == _teacher_bytes(tmp_path / "cut")
    # and not the last epoch's teacher, which `last` freezes
    train(method, _cfg(syn, method, "last"), tmp_path / "last", live=False)
    assert _teacher_bytes(tmp_path / "best") != _teacher_bytes(tmp_path / "last")
    # once frozen, the teacher scores on validation what it scored at its best epoch
    best = history[b]["val_acc_teacher"]
    assert all(row["val_acc_teacher"] == best for row in history[PRETRAIN:])


def test_ties_go_to_the_earlier_epoch(syn, tmp_path):
    data = data_from_config(syn.cfg, torch.device("cpu"))
    method = build_method(syn.cfg, data, "kd", EPOCHS, teacher_epochs=3, teacher_pick="best",
                          fixed_teacher=True)
    weights = []
    for epoch, acc in enumerate([0.5, 0.5, 0.25]):
        with torch.no_grad():
            for p in method.teacher.parameters():
                p.fill_(float(epoch))
        weights.append(copy.deepcopy(method.teacher.state_dict()))
        method.after_validation(epoch, {"val_acc_teacher": acc})
    method.begin_epoch(3)
    for k, v in method.teacher.state_dict().items():
        assert torch.equal(v, weights[0][k]), k
    assert all(not p.requires_grad for p in method.teacher.parameters())


def test_a_stack_freezes_each_members_own_best(syn, tmp_path):
    """Two seeds as one stack (the teacher's parameters rows of the stack's tensors, its
    buffers copied in and out): each member's frozen teacher equals that member's in a
    stack of the same seeds whose pre-training ends right after the member's best epoch.
    (A stack's numerics are not a lone run's, so the reference is a stack too.)"""
    def stack(out: Path, pick: str, teacher_epochs: int = PRETRAIN) -> list:
        return train_members("kd", [_cfg(syn, "kd", pick, teacher_epochs, seed=s)
                                    for s in (0, 1)], [out / "s0", out / "s1"], live=False)

    members = stack(tmp_path / "best", "best")
    picks = [_best_epoch(m.history) for m in members]
    assert min(picks) < PRETRAIN - 1, "the data must make a best epoch an earlier one"
    for b in set(picks):
        stack(tmp_path / f"cut{b}", "last", teacher_epochs=b + 1)
    for m, (member, b) in enumerate(zip(members, picks, strict=True)):
        assert _teacher_bytes(tmp_path / "best" / f"s{m}") == \
            _teacher_bytes(tmp_path / f"cut{b}" / f"s{m}")
        assert member.history[PRETRAIN]["val_acc_teacher"] == member.history[b]["val_acc_teacher"]


def test_best_without_a_validation_split_is_refused(tmp_path):
    syn = make_dataset(tmp_path)
    manifest = (tmp_path / "manifest.csv").read_text().replace(",val", ",train")
    (tmp_path / "manifest.csv").write_text(manifest)
    data = data_from_config(syn.cfg, torch.device("cpu"))
    assert "val" not in data.splits
    with pytest.raises(ConfigError, match=r"methods\.kd\.teacher_pick: best .* no validation"):
        build_method(syn.cfg, data, "kd", 5, teacher_epochs=2, teacher_pick="best",
                     fixed_teacher=True)
    build_method(syn.cfg, data, "kd", 5, teacher_epochs=2, fixed_teacher=True)  # last: fine


def test_best_with_a_loaded_teacher_is_refused(syn, tmp_path):
    data = data_from_config(syn.cfg, torch.device("cpu"))
    with pytest.raises(ConfigError, match=r"methods\.crd\.teacher_pick: best .*teacher_run"):
        build_method(syn.cfg, data, "crd", 5, teacher_run=str(tmp_path), teacher_pick="best")


def test_last_adds_nothing_to_the_state(syn):
    """`last` (the default) keeps the method's state_dict as it was: no snapshot key."""
    data = data_from_config(syn.cfg, torch.device("cpu"))
    last = build_method(syn.cfg, data, "kd", 5, teacher_epochs=2, fixed_teacher=True)
    best = build_method(syn.cfg, data, "kd", 5, teacher_epochs=2, fixed_teacher=True,
                        teacher_pick="best")
    assert set(best.state_dict()) - set(last.state_dict()) == {"teacher_snapshot._extra_state"}


# ------------------------------------------------------------------ resume


def _train_project(root: Path) -> Path:
    """tests/reliability's tiny project (its conftest is not importable by name here)."""
    path = Path(__file__).parents[1] / "reliability" / "conftest.py"
    spec = importlib.util.spec_from_file_location("reliability_conftest", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.make_train_project(root, per_class=10, epochs=5)


@pytest.mark.slow
def test_a_stopped_run_resumes_to_the_uninterrupted_bytes(tmp_path):
    """Stopped with the snapshot held (after epoch 1 of 3 pre-training epochs), then right
    before the restore (after epoch 2: the rerun restores from the checkpoint), lone and
    stacked: the resumed run's files are the uninterrupted run's, byte for byte
    (tests/reliability/resume_driver.py compares them)."""
    params = _train_project(tmp_path)
    sets = {"kd": ["methods.kd.fixed_teacher=true", "methods.kd.teacher_epochs=3",
                   "methods.kd.teacher_pick=best"],
            "amid": ["methods.amid.fixed_teacher=true", "methods.amid.teacher_epochs=3",
                     "methods.amid.teacher_pick=best"]}
    scenarios = [{"name": f"{m}-{engine}", "method": m, "sets": s,
                  "sweep": ["train.seed=[0,1]"] if engine == "stacked" else [],
                  # per process: after epoch 1 (the first), then after epoch 2, the last
                  # pre-training one (the rerun resumed at epoch 2)
                  "stops": [["SIGKILL", "epoch-saved:2"], ["SIGTERM", "epoch-saved:1"]]}
                 for m, s in sets.items() for engine in ("lone", "stacked")]
    (tmp_path / "scenarios.json").write_text(json.dumps(scenarios))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    env.pop("AMID_FAULT", None)
    driver = Path(__file__).parents[1] / "reliability" / "resume_driver.py"
    proc = subprocess.run([sys.executable, str(driver), str(params),
                           str(tmp_path / "scenarios.json"), str(tmp_path / "runs")],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for r in json.loads(proc.stdout.splitlines()[-1]):
        assert r["straight"] == "ok" and r["resumed"] == "ok", r["log"]
        assert r["stops"] == ["signal SIGKILL", "signal SIGTERM"], (r["name"], r["stops"])
        assert any(f.endswith("teacher.safetensors") for f in r["files"]), r["files"]
        assert r["differ_after_resume"] == [], (r["name"], r["differ_after_resume"])
        assert r["again"] == "ok" and r["differ_after_rerun"] == [], r["name"]
