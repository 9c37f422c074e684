"""`amid-train --sweep`: a stacked member equals its lone run, for every method and switch;
folders, fallbacks, resumes and errors."""

from __future__ import annotations

import copy
import json

import h5py
import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from safetensors.torch import load_file
from typer.testing import CliRunner

from amid.distill import train as train_module
from amid.distill.cli import app
from amid.distill.methods import METHODS, Method
from amid.distill.methods.base import build_student
from amid.distill.sweep import expand, grid_axes, parse_axes, run_sweep
from amid.distill.train import data_from_config, train, train_members
from amid.errors import AmidError, ConfigError
from amid.schema import Schema, option, per_member_keys, to_dict

from .conftest import kill_at_checkpoint, make_dataset, set_options


def _at_defaults(name: str) -> tuple[str, dict, dict]:
    """A registered method at its defaults; a teacher pre-trained inside the run gets 1 of
    the 2 epochs (its default would leave the student none)."""
    fields = set(METHODS.get(name).Options.model_fields)
    return name, ({"teacher_epochs": 1} if "teacher_epochs" in fields else {}), {}


def _varied(name: str) -> tuple[str, list[float]]:
    """A per-member option of the method and the two members' values (half and twice its
    default): the members must differ in what the stack vectorises."""
    options = METHODS.get(name).Options
    keys = per_member_keys(options, "")
    if not keys:
        return "", []
    key = keys[0].lstrip(".")
    default = options.model_fields[key].default
    return key, [0.5 * default, 2.0 * default] if default else [0.5, 2.0]


# (method, its options, model overrides): every registered method (enumerated, so a new
# method is covered with no edit here), then every ablation switch and model shape
CASES = [_at_defaults(name) for name in METHODS.names()] + [
    ("ts", {}, {"student": "lstm", "bidirectional": True, "teacher_encoders": "separate"}),
    ("ts_ta", {}, {"student": "pool"}),
    ("amid", {"mi_variant": "ccl"}, {}),
    ("amid", {"positives": "instance"}, {}),
    ("amid", {"fixed_teacher": True, "teacher_epochs": 1}, {}),
    # the fixture pins the paper's online teacher; the preset's gate needs a frozen one
    ("amid", {"preset": "recommended", "fixed_teacher": True, "teacher_epochs": 1}, {}),
    ("amid", {"warmup_epochs": 0}, {}),
    ("amid", {"warmup_epochs": 0, "enhanced_disc": False}, {}),
    ("amid", {"warmup_epochs": 0, "dynamic_weights": False}, {}),
    ("kd", {"fixed_teacher": True, "teacher_epochs": 1}, {}),
]


def _members(syn, method, options, model, epochs=2):
    cfgs = []
    for k, (seed, lr) in enumerate([(0, 1e-3), (1, 3e-3)]):
        cfg = copy.deepcopy(syn.cfg)
        cfg.train.epochs, cfg.train.seed, cfg.train.lr = epochs, seed, lr
        cfg.train.model.dropout = 0.0  # with dropout a member draws its own masks
        for key, value in model.items():
            setattr(cfg.train.model, key, value)
        values = dict(options)
        key, varied = _varied(method)
        if key:
            values[key] = varied[k]
        set_options(cfg, method, **values)
        cfgs.append(cfg)
    return cfgs


def _assert_same_history(lone, stacked, rel=1e-5, abs_=1e-5):
    assert len(lone) == len(stacked)
    for a, b in zip(lone, stacked, strict=True):
        assert a.keys() == b.keys()
        for key in a:  # losses, accuracies, gradient norms, w_f/w_e: float rounding only
            assert b[key] == pytest.approx(a[key], rel=rel, abs=abs_), (a["epoch"], key)


@pytest.fixture(scope="module")
def syn(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("synth"), per_class=15)


@pytest.fixture(scope="module")
def data(syn):
    return data_from_config(syn.cfg, torch.device("cpu"))


@pytest.mark.parametrize("method,options,model", CASES,
                         ids=[f"{m}-{'-'.join(f'{k}={v}' for k, v in o.items()) or 'default'}"
                              f"{'-' + model['student'] if model else ''}"
                              for m, o, model in CASES])
def test_each_stacked_member_equals_its_lone_run(tmp_path, syn, data, method, options, model):
    cfgs = _members(syn, method, options, model)
    runs = [tmp_path / f"member{i}" for i in range(len(cfgs))]
    stacked = train_members(method, cfgs, runs, data=data, live=False, stacked=True)
    for i, cfg in enumerate(cfgs):
        lone_run = tmp_path / f"lone{i}"
        lone = train(method, cfg, lone_run, data=data, live=False)
        assert stacked[i].error is None
        _assert_same_history(lone, stacked[i].history)
        a = load_file(lone_run / "student.safetensors")
        b = load_file(runs[i] / "student.safetensors")
        assert a.keys() == b.keys()
        for k in a:
            torch.testing.assert_close(b[k], a[k], rtol=1e-5, atol=1e-5)
        with h5py.File(lone_run / "outputs.h5") as fa, h5py.File(runs[i] / "outputs.h5") as fb:
            for split in ("train", "val", "test"):
                assert list(fa[f"{split}/ids"].asstr()) == list(fb[f"{split}/ids"].asstr())
                np.testing.assert_allclose(fb[f"{split}/student/logits"][...],
                                           fa[f"{split}/student/logits"][...], atol=1e-5)
        assert json.loads((runs[i] / "config.json").read_text()) == \
            json.loads((lone_run / "config.json").read_text())
    # the members differ (their own seeds, lr and options really reached each member)
    assert stacked[0].history[-1]["loss_total"] != stacked[1].history[-1]["loss_total"]


class ToyOptions(Schema):
    """A method defined here, in the test, and nowhere else."""

    weight: float = option(0.5, ge=0, per_member=True)


class Toy(Method):
    """Student CE plus a weighted penalty on the embedding's squared norm."""

    Options = ToyOptions

    def __init__(self, ctx):
        super().__init__(ctx)
        self.student = build_student(ctx)

    def losses(self, batch, out, epoch):
        return {"cls_student": F.cross_entropy(out["logits_s"], batch.labels),
                "norm": out["s"].pow(2).sum(dim=1).mean()}

    def weights(self, epoch):
        return {"cls_student": 1.0, "norm": self.opts.weight}


@pytest.fixture
def toy():
    METHODS.register("toy")(Toy)
    yield "toy"
    del METHODS._entries["toy"]


def test_a_new_method_is_sweepable_with_no_other_change(tmp_path, syn, toy):
    cfg = copy.deepcopy(syn.cfg)
    cfg.train.epochs, cfg.train.model.dropout = 2, 0.0
    d = to_dict(cfg)
    d["methods"] = {"toy": {"weight": 0.5}}
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(d))
    out = tmp_path / "grid"
    done = run_sweep("toy", params, [], parse_axes(["methods.toy.weight=[0.0, 0.5]",
                                                    "train.seed=[0, 1]"]), out, live=False)
    assert {r.mode for r in done.values()} == {"stacked"}
    lone = train("toy", expand(params, [], parse_axes(["methods.toy.weight=[0.5]",
                                                       "train.seed=[1]"]), out)[0].cfg,
                 tmp_path / "lone", live=False)
    _assert_same_history(lone, done["weight=0.5,seed=1"].history)
    # the penalty reached the member that has it, and not the other
    assert done["weight=0.0,seed=1"].history[-1]["grad_norm"] == 0.0
    assert done["weight=0.5,seed=1"].history[-1]["grad_norm"] > 0.0


def test_a_stacked_member_resumes_in_the_plain_trainer(tmp_path, syn, data):
    """A member's checkpoint is a plain run's: continued alone, it equals a straight run."""
    cfgs = _members(syn, "amid", {}, {}, epochs=2)
    runs = [tmp_path / "m0", tmp_path / "m1"]
    train_members("amid", cfgs, runs, data=data, live=False)
    longer = copy.deepcopy(cfgs[1])
    longer.train.epochs = 4
    resumed = train("amid", longer, runs[1], data=data, live=False)
    straight = train("amid", longer, tmp_path / "straight", data=data, live=False)
    _assert_same_history(straight, resumed)


def _layout(state):
    """Each tensor's storage size and which names share one storage, as in the file."""
    groups: dict[int, list[str]] = {}
    for k, v in state.items():
        groups.setdefault(v.untyped_storage().data_ptr(), []).append(k)
    return ({k: v.untyped_storage().nbytes() for k, v in state.items()},
            sorted(sorted(g) for g in groups.values()))


def test_a_stacked_members_checkpoint_is_laid_out_as_its_lone_runs(tmp_path, syn, data):
    """The stack keeps each parameter once, stacked, and the members' parameters are
    its rows: a member's checkpoint must still hold only its own weights, with the
    teacher's shared student modules stored once, exactly as a lone run's file."""
    cfgs = _members(syn, "amid", {}, {}, epochs=1)
    runs = [tmp_path / "m0", tmp_path / "m1"]
    train_members("amid", cfgs, runs, data=data, live=False)
    train("amid", cfgs[1], tmp_path / "lone", data=data, live=False)
    stacked = torch.load(runs[1] / "checkpoint.pt", weights_only=True)["method_state"]
    lone = torch.load(tmp_path / "lone" / "checkpoint.pt", weights_only=True)["method_state"]
    assert _layout(stacked) == _layout(lone)
    assert any(len(g) > 1 for g in _layout(lone)[1])  # the shared modules are checked
    for key, value in lone.items():
        torch.testing.assert_close(stacked[key], value, rtol=1e-5, atol=1e-6)


def test_an_interrupted_stack_resumes_to_the_same_numbers(tmp_path, syn, data, monkeypatch):
    """Killed in epoch 3 of 3 after checkpoints of epoch 2, rerun: an unbroken stack's numbers."""
    cfgs = _members(syn, "amid", {"warmup_epochs": 1}, {}, epochs=3)
    straight = train_members("amid", cfgs, [tmp_path / "s0", tmp_path / "s1"], data=data,
                             live=False)
    monkeypatch.setattr(train_module, "SAVE_EVERY_S", 0.0)  # a checkpoint after every epoch
    real_state = train_module.checkpoint_state
    kill_at_checkpoint(monkeypatch, 3)  # a kill during the last epoch's checkpoint
    runs = [tmp_path / "r0", tmp_path / "r1"]
    with pytest.raises(KeyboardInterrupt):
        train_members("amid", cfgs, runs, data=data, live=False)
    assert all(torch.load(r / "checkpoint.pt", weights_only=True)["epoch"] == 2 for r in runs)
    monkeypatch.setattr(train_module, "checkpoint_state", real_state)
    resumed = train_members("amid", cfgs, runs, data=data, live=False)
    for a, b, ra, rb in zip(straight, resumed, [tmp_path / "s0", tmp_path / "s1"], runs,
                            strict=True):
        assert [r["epoch"] for r in b.history] == [0, 1, 2]
        _assert_same_history(a.history, b.history, rel=1e-6, abs_=1e-7)
        wa, wb = load_file(ra / "student.safetensors"), load_file(rb / "student.safetensors")
        for key in wa:
            torch.testing.assert_close(wb[key], wa[key], rtol=0, atol=1e-6)


def test_a_stack_checkpoints_at_most_every_interval(tmp_path, syn, data, monkeypatch):
    """A clock that moves 20 s per reading, a 30 s interval: a save every second epoch."""
    readings = iter(range(0, 10_000, 20))
    monkeypatch.setattr(train_module, "clock", lambda: next(readings))
    saved = []
    real = train_module.save_checkpoint
    monkeypatch.setattr(train_module, "save_checkpoint",
                        lambda path, state: saved.append((path.parent.name, state["epoch"]))
                        or real(path, state))
    cfgs = _members(syn, "ts", {}, {}, epochs=6)
    train_members("ts", cfgs, [tmp_path / "r0", tmp_path / "r1"], data=data, live=False)
    # start reads 0; after epochs 1..6 it reads 20, 40 (save, then 60), 80, 100 (save, then
    # 120), 140; the last epoch always saves
    assert saved == [(r, e) for e in (2, 4, 6) for r in ("r0", "r1")]


def test_a_diverging_member_stops_alone(tmp_path, syn, data):
    cfgs = _members(syn, "ts", {}, {}, epochs=2)
    cfgs[1].train.lr = 1e30  # its weights overflow: its loss turns NaN
    res = train_members("ts", cfgs, [tmp_path / "a", tmp_path / "b"], data=data, live=False)
    assert res[1].error is not None and "became NaN or infinite" in res[1].error
    assert not (tmp_path / "b" / "outputs.h5").exists()
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
                             "--sweep", str(grid), "--sweep", "train.batch_size=[16, 32]", "-q"])
    assert ok.exit_code == 0, ok.output
    summary = json.loads((out / "sweep.json").read_text())["members"]
    assert [m["name"] for m in summary] == ["seed=0,batch_size=16", "seed=0,batch_size=32",
                                            "seed=1,batch_size=16", "seed=1,batch_size=32"]
    assert {m["mode"] for m in summary} == {"alone"}
    for m in summary:
        run = out / m["name"]
        for name in ("outputs.h5", "student.safetensors", "teacher.safetensors",
                     "checkpoint.pt", "dvclive/metrics.json"):
            assert (run / name).exists(), (m["name"], name)
        saved = json.loads((run / "config.json").read_text())["config"]["train"]
        assert (saved["seed"], saved["batch_size"]) == (m["overrides"]["train.seed"],
                                                        m["overrides"]["train.batch_size"])
    # gmc has no teacher but reads the auxiliary modalities (its joint view): it cannot
    # stack either (a stack's batches would take the rows missing audio as complete)
    out_gmc = tmp_path / "sweep_gmc"
    ok = runner.invoke(app, ["--method", "gmc", "--params", str(params), "--out", str(out_gmc),
                             "--sweep", "train.seed=[0, 1]", "-q"])
    assert ok.exit_code == 0, ok.output
    summary = json.loads((out_gmc / "sweep.json").read_text())["members"]
    assert [m["mode"] for m in summary] == ["alone", "alone"]
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


def test_sweep_axes_are_checked(tmp_path, syn):
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(to_dict(syn.cfg)))
    assert parse_axes(["methods.amid.alpha=[1, 2]", "train.seed=3"]) == [
        ("methods.amid.alpha", [1, 2]), ("train.seed", [3])]
    with pytest.raises(ConfigError, match="list of values is empty"):
        parse_axes(["train.seed=[]"])
    with pytest.raises(ConfigError, match="neither key=\\[values\\] nor an existing YAML file"):
        parse_axes([str(tmp_path / "nope.yaml")])
    with pytest.raises(ConfigError, match="sweep member alfa=1: .*methods.amid.alfa"):
        expand(params, [], parse_axes(["methods.amid.alfa=[1]"]), tmp_path / "o")
    with pytest.raises(ConfigError, match="sweep member tau=0: .*methods.amid.tau must be > 0"):
        expand(params, [], parse_axes(["methods.amid.tau=[0.1, 0]"]), tmp_path / "o")
    with pytest.raises(ConfigError, match="sweep member alpha=1: .*train.loss.alpha is now per "
                                          "method: methods.ts.alpha"):
        expand(params, [], parse_axes(["train.loss.alpha=[1]"]), tmp_path / "o")
    members = expand(params, ["train.epochs=2"], parse_axes(["methods.amid.alpha=[1, 2]"]),
                     tmp_path / "o")
    assert [m.cfg.methods["amid"]["alpha"] for m in members] == [1, 2]
    assert all(m.cfg.train.epochs == 2 for m in members)


def test_a_repeated_grid_point_is_named_not_mistaken_for_a_lock(tmp_path, syn):
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(to_dict(syn.cfg)))
    runner = CliRunner()
    bad = runner.invoke(app, ["--method", "baseline", "--params", str(params),
                              "--out", str(tmp_path / "o"), "--sweep", "train.seed=[0,0]"])
    assert bad.exit_code == 2
    assert "the grid has the point seed=0 twice" in bad.stderr
    assert "being trained by another" not in bad.output
    assert not (tmp_path / "o").exists()  # refused before anything was written


def test_failed_members_are_reported_after_the_others(tmp_path, syn):
    cfg = copy.deepcopy(syn.cfg)
    cfg.train.epochs = 1
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(to_dict(cfg)))
    with pytest.raises(AmidError, match="(?s)1 of 2 sweep members failed.*lr=1e\\+30: loss"):
        run_sweep("baseline", params, [], parse_axes(["train.lr=[1e30, 0.001]"]),
                  tmp_path / "o", live=False)
    summary = json.loads((tmp_path / "o" / "sweep.json").read_text())["members"]
    assert summary[0]["error"] and summary[1]["error"] is None
    assert (tmp_path / "o" / "lr=0.001" / "outputs.h5").exists()


def test_grid_axes_nest_or_dot_down_to_lists():
    grid = {"train": {"seed": [0, 1]}, "methods": {"amid": {"alpha": [0.0, 4.0]}},
            "train.lr": 0.01}
    assert grid_axes(grid, "g") == [("train.seed", [0, 1]), ("methods.amid.alpha", [0.0, 4.0]),
                                    ("train.lr", [0.01])]
    with pytest.raises(ConfigError, match=r"g: methods\.amid is an empty mapping"):
        grid_axes({"methods": {"amid": {}}}, "g")


def test_cli_grid_from_params_trains_the_named_sweep(tmp_path, syn):
    cfg = to_dict(syn.cfg)
    cfg["train"]["epochs"] = 1
    cfg["sweeps"] = {"a": {"method": "ts", "grid": {"train": {"seed": [0, 1]},
                                                    "methods": {"ts": {"alpha": [1.0, 2.0]}}}}}
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(cfg, sort_keys=False))
    runner, out = CliRunner(), tmp_path / "sw"
    ok = runner.invoke(app, ["--grid", "a", "--params", str(params), "--out", str(out), "-q"])
    assert ok.exit_code == 0, ok.output
    sweep = json.loads((out / "sweep.json").read_text())
    assert sweep["method"] == "ts"
    assert sweep["axes"] == {"train.seed": [0, 1], "methods.ts.alpha": [1.0, 2.0]}
    assert [m["name"] for m in sweep["members"]] == [
        "seed=0,alpha=1.0", "seed=0,alpha=2.0", "seed=1,alpha=1.0", "seed=1,alpha=2.0"]
    assert {m["mode"] for m in sweep["members"]} == {"stacked"}
    saved = json.loads((out / "seed=1,alpha=2.0" / "config.json").read_text())["config"]
    assert (saved["train"]["seed"], saved["methods"]["ts"]["alpha"]) == (1, 2.0)
    # a second run finds every member finished: nothing retrains
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
