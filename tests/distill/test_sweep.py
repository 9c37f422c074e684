"""`amid-train --sweep`: stacked members equal their lone runs; folders, fallbacks, errors."""

from __future__ import annotations

import copy
import json

import h5py
import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file
from typer.testing import CliRunner

from amid.config import to_dict
from amid.distill import ensemble_losses
from amid.distill.cli import app
from amid.distill.stacked import train_stack
from amid.distill.sweep import expand, parse_axes
from amid.distill.train import data_from_config, train
from amid.errors import AmidError, ConfigError

from .conftest import make_dataset

GRID = [  # (seed, alpha, tau, lr): every per-member kind of value varies
    (0, 4.0, 0.1, 1e-3),
    (1, 1.0, 0.2, 3e-3),
    (0, 2.0, 0.1, 1e-3),
]


def _members(syn, epochs=3, **model):
    cfgs = []
    for seed, alpha, tau, lr in GRID:
        cfg = copy.deepcopy(syn.cfg)
        cfg.train.epochs, cfg.train.seed, cfg.train.lr = epochs, seed, lr
        cfg.train.loss.alpha, cfg.train.loss.tau = alpha, tau
        for k, v in model.items():
            setattr(cfg.train.model, k, v)
        cfgs.append(cfg)
    return cfgs


def _assert_same_history(lone, stacked):
    assert len(lone) == len(stacked)
    for a, b in zip(lone, stacked, strict=True):
        assert a.keys() == b.keys()
        for key in a:  # losses, accuracies, w_f/w_e: float rounding only
            assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-5), (a["epoch"], key)


@pytest.mark.parametrize("method,epochs,size,model", [
    ("amid", 3, 3, {}),  # GRU student, dropout 0.1 (per-member dropout streams)
    ("ts", 2, 2, {"student": "lstm", "bidirectional": True, "teacher_encoders": "separate"}),
])
def test_each_stacked_member_equals_its_lone_run(tmp_path, method, epochs, size, model):
    syn = make_dataset(tmp_path)
    cfgs = _members(syn, epochs, **model)[:size]
    data = data_from_config(cfgs[0], torch.device("cpu"))
    runs = [tmp_path / f"member{i}" for i in range(len(cfgs))]
    stacked = train_stack(method, cfgs, runs, data, live=False)
    for i, cfg in enumerate(cfgs):
        lone_run = tmp_path / f"lone{i}"
        lone = train(method, cfg, lone_run, data=data, live=False)
        assert stacked[i].error is None
        _assert_same_history(lone, stacked[i].history)
        a = load_file(lone_run / "student.safetensors")
        b = load_file(runs[i] / "student.safetensors")
        assert a.keys() == b.keys()
        for k in a:
            torch.testing.assert_close(b[k], a[k], rtol=1e-3, atol=1e-4)
        with h5py.File(lone_run / "outputs.h5") as fa, h5py.File(runs[i] / "outputs.h5") as fb:
            for split in ("train", "val", "test"):
                assert list(fa[f"{split}/ids"].asstr()) == list(fb[f"{split}/ids"].asstr())
                np.testing.assert_allclose(fb[f"{split}/student/logits"][...],
                                           fa[f"{split}/student/logits"][...], atol=1e-4)
        assert json.loads((runs[i] / "config.json").read_text())["config"] == to_dict(cfg)
    # the members differ (distinct seeds / weights really reached each member)
    assert stacked[0].history[-1]["loss_total"] != stacked[1].history[-1]["loss_total"]


def test_a_stacked_member_resumes_in_the_plain_trainer(tmp_path):
    """The member's checkpoint (weights, Adam moments, RNG streams) continues like a lone run."""
    syn = make_dataset(tmp_path)
    cfgs = _members(syn, epochs=2)[:2]
    data = data_from_config(cfgs[0], torch.device("cpu"))
    runs = [tmp_path / "m0", tmp_path / "m1"]
    train_stack("amid", cfgs, runs, data, live=False)
    longer = copy.deepcopy(cfgs[1])
    longer.train.epochs = 4
    resumed = train("amid", longer, runs[1], data=data, live=False)
    straight = train("amid", longer, tmp_path / "straight", data=data, live=False)
    _assert_same_history(straight, resumed)


def test_a_diverging_member_stops_alone(tmp_path, monkeypatch):
    syn = make_dataset(tmp_path)
    cfgs = _members(syn, epochs=2)[:2]
    data = data_from_config(cfgs[0], torch.device("cpu"))
    real = ensemble_losses.jsd

    def poisoned(p, q):  # member 1's JSD term turns NaN
        return real(p, q) * torch.tensor([1.0, float("nan")])

    monkeypatch.setattr(ensemble_losses, "jsd", poisoned)
    res = train_stack("ts", cfgs, [tmp_path / "a", tmp_path / "b"], data, live=False)
    assert res[1].error is not None and "'loss_jsd' became NaN" in res[1].error
    assert res[1].history == [] and not (tmp_path / "b" / "outputs.h5").exists()
    monkeypatch.setattr(ensemble_losses, "jsd", real)
    lone = train("ts", cfgs[0], tmp_path / "lone", data=data, live=False)
    assert res[0].error is None
    _assert_same_history(lone, res[0].history)


def test_cli_sweep_folders_stacks_and_fallbacks(tmp_path):
    syn = make_dataset(tmp_path, missing_aux=5)  # missing audio: amid cannot stack
    cfg = copy.deepcopy(syn.cfg)
    cfg.train.epochs = 1
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(to_dict(cfg)))
    grid = tmp_path / "grid.yaml"
    grid.write_text("train.seed: [0, 1]\n")
    runner = CliRunner()
    out = tmp_path / "sweep"
    ok = runner.invoke(app, ["--method", "amid", "--params", str(params), "--out", str(out),
                             "--sweep", str(grid), "--sweep", "train.batch_size=[16, 32]"])
    assert ok.exit_code == 0, ok.output
    summary = json.loads((out / "sweep.json").read_text())["members"]
    assert [m["name"] for m in summary] == ["seed=0,batch_size=16", "seed=0,batch_size=32",
                                            "seed=1,batch_size=16", "seed=1,batch_size=32"]
    assert {m["mode"] for m in summary} == {"sequential"}
    for m in summary:
        run = out / m["name"]
        for name in ("outputs.h5", "student.safetensors", "teacher.safetensors",
                     "checkpoint.pt", "dvclive/metrics.json"):
            assert (run / name).exists(), (m["name"], name)
        saved = json.loads((run / "config.json").read_text())["config"]["train"]
        assert (saved["seed"], saved["batch_size"]) == (m["overrides"]["train.seed"],
                                                        m["overrides"]["train.batch_size"])
    # baseline has no auxiliary side: the two seeds per batch size stack
    out2 = tmp_path / "sweep2"
    ok = runner.invoke(app, ["--method", "baseline", "--params", str(params), "--out", str(out2),
                             "--sweep", "train.seed=[0, 1]", "--sweep", "train.batch_size=[16, 32]",
                             "-q"])
    assert ok.exit_code == 0, ok.output
    summary = json.loads((out2 / "sweep.json").read_text())["members"]
    assert {m["mode"] for m in summary} == {"stacked"}
    history = json.loads((out2 / "seed=1,batch_size=16" / "dvclive" / "metrics.json").read_text())
    assert history["step"] == 0 and "val_acc_student" in history


def test_sweep_axes_are_checked(tmp_path):
    syn = make_dataset(tmp_path)
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(to_dict(syn.cfg)))
    assert parse_axes(["train.loss.alpha=[1, 2]", "train.seed=3"]) == [
        ("train.loss.alpha", [1, 2]), ("train.seed", [3])]
    with pytest.raises(ConfigError, match="list of values is empty"):
        parse_axes(["train.seed=[]"])
    with pytest.raises(ConfigError, match="neither key=\\[values\\] nor an existing YAML file"):
        parse_axes([str(tmp_path / "nope.yaml")])
    with pytest.raises(ConfigError, match="sweep member alfa=1: .*train.loss.alfa"):
        expand(params, [], parse_axes(["train.loss.alfa=[1]"]), tmp_path / "o")
    with pytest.raises(ConfigError, match="sweep member tau=0: .*train.loss.tau must be > 0"):
        expand(params, [], parse_axes(["train.loss.tau=[0.1, 0]"]), tmp_path / "o")
    members = expand(params, ["train.epochs=2"], parse_axes(["train.loss.alpha=[1, 2]"]),
                     tmp_path / "o")
    assert [m.cfg.train.loss.alpha for m in members] == [1.0, 2.0]
    assert all(m.cfg.train.epochs == 2 for m in members)


def test_failed_members_are_reported_after_the_others(tmp_path, monkeypatch):
    syn = make_dataset(tmp_path)
    cfg = copy.deepcopy(syn.cfg)
    cfg.train.epochs = 1
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(to_dict(cfg)))
    real = ensemble_losses.ce

    def poisoned(logits, labels, keep=None):
        return real(logits, labels, keep) * torch.tensor([float("inf"), 1.0])

    monkeypatch.setattr(ensemble_losses, "ce", poisoned)
    from amid.distill.sweep import run_sweep

    with pytest.raises(AmidError, match="(?s)1 of 2 sweep members failed.*seed=0: loss term"):
        run_sweep("baseline", params, [], parse_axes(["train.seed=[0, 1]"]), tmp_path / "o",
                  live=False)
    summary = json.loads((tmp_path / "o" / "sweep.json").read_text())["members"]
    assert summary[0]["error"] and summary[1]["error"] is None
    assert (tmp_path / "o" / "seed=1" / "outputs.h5").exists()


def test_an_interrupted_stack_resumes_to_the_same_numbers(tmp_path, monkeypatch):
    """Killed after epoch 2 of 3, rerun: histories and weights equal an unbroken stack's."""
    from amid.distill import stack_state, stacked

    syn = make_dataset(tmp_path)
    cfgs = _members(syn, epochs=3)[:2]
    data = data_from_config(cfgs[0], torch.device("cpu"))
    straight = train_stack("amid", cfgs, [tmp_path / "s0", tmp_path / "s1"], data, live=False)

    monkeypatch.setattr(stack_state, "INTERVAL_S", 0.0)  # save after every epoch
    real, calls = stacked.predict_stack, []

    def dies_in_epoch_3(*a, **k):
        calls.append(1)
        if len(calls) > 4:  # train + val per epoch: the 5th call is epoch 3's
            raise KeyboardInterrupt
        return real(*a, **k)

    runs = [tmp_path / "r0", tmp_path / "r1"]
    state = stack_state.state_path(tmp_path, "amid", runs)
    monkeypatch.setattr(stacked, "predict_stack", dies_in_epoch_3)
    with pytest.raises(KeyboardInterrupt):
        train_stack("amid", cfgs, runs, data, live=False, state=state)
    assert state.exists() and not (runs[0] / "checkpoint.pt").exists()
    assert torch.load(state, weights_only=True)["epoch"] == 2
    monkeypatch.setattr(stacked, "predict_stack", real)
    resumed = train_stack("amid", cfgs, runs, data, live=False, state=state)
    assert not state.exists()  # the members hold their own checkpoints now
    for a, b, run_a, run_b in zip(straight, resumed, [tmp_path / "s0", tmp_path / "s1"], runs,
                                  strict=True):
        assert [r["epoch"] for r in b.history] == [0, 1, 2]
        _assert_same_history(a.history, b.history)
        wa, wb = load_file(run_a / "student.safetensors"), load_file(run_b / "student.safetensors")
        for key in wa:
            torch.testing.assert_close(wb[key], wa[key], rtol=0, atol=1e-6)


def test_a_stack_state_of_another_configuration_is_refused(tmp_path, monkeypatch):
    from amid.distill import stack_state, stacked

    syn = make_dataset(tmp_path)
    cfgs = _members(syn, epochs=2)[:2]
    data = data_from_config(cfgs[0], torch.device("cpu"))
    runs = [tmp_path / "r0", tmp_path / "r1"]
    state = stack_state.state_path(tmp_path, "ts", runs)
    monkeypatch.setattr(stack_state, "INTERVAL_S", 0.0)
    monkeypatch.setattr(stacked, "_finish_member", _raise_interrupt)
    with pytest.raises(KeyboardInterrupt):
        train_stack("ts", cfgs, runs, data, live=False, state=state)
    changed = [copy.deepcopy(c) for c in cfgs]
    changed[1].train.loss.alpha = 9.0
    before = (runs[1] / "config.json").read_text()
    with pytest.raises(AmidError, match=r"r1 was stacked with a different configuration "
                                        r"\(train\.loss\.alpha\)"):
        train_stack("ts", changed, runs, data, live=False, state=state)
    assert (runs[1] / "config.json").read_text() == before  # nothing overwritten
    state.write_bytes(b"not a zip")
    with pytest.raises(AmidError,
                       match=r"stack-ts-.*\.pt: cannot be read .*delete it to start over"):
        train_stack("ts", cfgs, runs, data, live=False, state=state)


def _raise_interrupt(*a, **k):
    raise KeyboardInterrupt


def test_grid_axes_nest_or_dot_down_to_lists():
    from amid.distill.sweep import grid_axes

    grid = {"train": {"seed": [0, 1], "loss": {"alpha": [0.0, 4.0]}}, "train.lr": 0.01}
    assert grid_axes(grid, "g") == [("train.seed", [0, 1]), ("train.loss.alpha", [0.0, 4.0]),
                                    ("train.lr", [0.01])]
    with pytest.raises(ConfigError, match=r"g: train\.loss is an empty mapping"):
        grid_axes({"train": {"loss": {}}}, "g")


def test_cli_grid_from_params_trains_the_named_sweep(tmp_path):
    syn = make_dataset(tmp_path)
    cfg = to_dict(syn.cfg)
    cfg["train"]["epochs"] = 1
    cfg["sweeps"] = {"a": {"method": "ts", "grid": {"train": {"seed": [0, 1],
                                                              "loss": {"alpha": [1.0, 2.0]}}}}}
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(cfg, sort_keys=False))
    runner, out = CliRunner(), tmp_path / "sw"
    ok = runner.invoke(app, ["--grid", "a", "--params", str(params), "--out", str(out), "-q"])
    assert ok.exit_code == 0, ok.output
    sweep = json.loads((out / "sweep.json").read_text())
    assert sweep["method"] == "ts"
    assert sweep["axes"] == {"train.seed": [0, 1], "train.loss.alpha": [1.0, 2.0]}
    assert [m["name"] for m in sweep["members"]] == [
        "seed=0,alpha=1.0", "seed=0,alpha=2.0", "seed=1,alpha=1.0", "seed=1,alpha=2.0"]
    assert {m["mode"] for m in sweep["members"]} == {"stacked"}
    assert not list(out.glob("stack-*.pt"))  # the stack's state is gone once members finish
    saved = json.loads((out / "seed=1,alpha=2.0" / "config.json").read_text())["config"]
    assert (saved["train"]["seed"], saved["train"]["loss"]["alpha"]) == (1, 2.0)
    # a second run finds every member finished: nothing retrains (checkpoints resume at the end)
    before = (out / "seed=0,alpha=1.0" / "checkpoint.pt").stat().st_mtime_ns
    again = runner.invoke(app, ["--grid", "a", "--params", str(params), "--out", str(out), "-q"])
    assert again.exit_code == 0, again.output
    assert (out / "seed=0,alpha=1.0" / "checkpoint.pt").stat().st_mtime_ns == before

    bad = runner.invoke(app, ["--grid", "b", "--params", str(params)])
    assert bad.exit_code == 2 and "has no sweeps.b (has: a)" in bad.output
    bad = runner.invoke(app, ["--grid", "a", "--method", "amid", "--params", str(params)])
    assert bad.exit_code == 2 and "contradicts sweeps.a.method 'ts'" in bad.output
    bad = runner.invoke(app, ["--params", str(params)])
    assert bad.exit_code == 2 and "give --method" in bad.output
    cfg["sweeps"]["a"]["metod"] = "ts"
    params.write_text(yaml.safe_dump(cfg, sort_keys=False))
    bad = runner.invoke(app, ["--grid", "a", "--params", str(params)])
    assert bad.exit_code == 2 and "unknown configuration key(s) sweeps.a.metod" in bad.output


def test_the_stack_state_is_written_at_most_every_interval(tmp_path, monkeypatch):
    """A clock that moves 20 s per reading, a 30 s interval: a save every second epoch."""
    from types import SimpleNamespace

    from amid.distill import stack_state, stacked

    syn = make_dataset(tmp_path)
    cfgs = _members(syn, epochs=6)[:2]
    data = data_from_config(cfgs[0], torch.device("cpu"))
    readings = iter(range(0, 10_000, 20))
    monkeypatch.setattr(stacked, "time", SimpleNamespace(monotonic=lambda: next(readings)))
    saved = []
    monkeypatch.setattr(stack_state, "save_state", lambda path, **k: saved.append(k["epoch"]))
    runs = [tmp_path / "r0", tmp_path / "r1"]
    train_stack("ts", cfgs, runs, data, live=False,
                state=stack_state.state_path(tmp_path, "ts", runs))
    # start 0; after epochs 1..5 the clock reads 20, 40 (save, then 60), 80, 100 (save);
    # none after the last epoch, whose members get their own checkpoints instead
    assert saved == [2, 4]
