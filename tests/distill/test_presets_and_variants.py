"""Presets (`methods.<m>.preset`) and named variants (`methods.<name>.method`): how options
resolve, what a run records, `amid-train --list`, and ts against ts_ta with an online
teacher."""

from __future__ import annotations

import copy
import json

import pytest
import torch
import yaml
from safetensors.torch import load_file
from typer.testing import CliRunner

from amid.distill.cli import app
from amid.distill.methods import METHODS, method_options
from amid.distill.methods.amid import AMID, RECOMMENDED
from amid.distill.methods.base import method_class, method_record
from amid.distill.train import train
from amid.errors import ConfigError
from amid.schema import to_dict

from .conftest import make_dataset

# The paper's values (Sec. 3-4, Table 6), written here independently of the code.
PAPER = {"alpha": 4.0, "beta": 1.5, "gamma": 1.0, "jsd": 1.0, "positives": "class",
         "fixed_teacher": False, "warmup_epochs": 20, "enhanced_disc": True,
         "dynamic_weights": True, "mi_variant": "class_prior"}
# docs/results.md, rules A and G
STUDY = {"alpha": 1.0, "tau": 1.0, "positives": "instance", "fixed_teacher": True,
         "teacher_epochs": 15, "teacher_pick": "best", "student_waits": False,
         "min_disagreement": 0.1}


@pytest.mark.parametrize("name", ["ts", "ts_ta", "amid"])
def test_the_defaults_are_the_papers_and_presets_fill_only_unset_keys(name):
    paper = to_dict(method_options(name, {}))
    assert paper["preset"] == "paper"
    assert {k: paper[k] for k in PAPER if k in paper} == {k: v for k, v in PAPER.items()
                                                          if k in paper}
    assert to_dict(method_options(name, {"preset": "paper"})) == paper
    recommended = to_dict(method_options(name, {"preset": "recommended"}))
    assert {k: recommended[k] for k in STUDY} == STUDY
    # what the preset does not name stays the paper's
    assert {k: v for k, v in recommended.items() if k not in (*STUDY, "preset")} == \
        {k: v for k, v in paper.items() if k not in (*STUDY, "preset")}
    # a key the section sets wins over its preset, one by one
    mixed = method_options(name, {"preset": "recommended", "alpha": 2,
                                  "fixed_teacher": False})
    assert (mixed.alpha, mixed.fixed_teacher, mixed.teacher_epochs) == (2.0, False, 15)


def test_the_recommended_values_live_in_one_place():
    """Every method with presets reads the same RECOMMENDED mapping."""
    for name in ("ts", "ts_ta", "amid"):
        assert METHODS.get(name).presets["recommended"] is RECOMMENDED
    assert not METHODS.get("kd").presets  # kd has none: `preset` is an unknown key there
    with pytest.raises(ConfigError, match=r"unknown configuration key\(s\) methods.kd.preset"):
        method_options("kd", {"preset": "recommended"})


def test_a_variant_trains_its_method_with_its_own_options():
    raw = {"method": "amid", "mi_variant": "ccl"}
    assert method_class("amid_ccl", raw) is AMID
    opts = method_options("amid_ccl", raw)
    assert to_dict(opts) == {**to_dict(method_options("amid", {})), "mi_variant": "ccl"}
    rec = method_record("amid_recommended", {"method": "amid", "preset": "recommended"})
    assert (rec["method"], rec["preset"], rec["alpha"], rec["fixed_teacher"]) == \
        ("amid", "recommended", 1.0, True)
    assert method_record("amid", {})["method"] == "amid"
    # an error names the variant's own key
    with pytest.raises(ConfigError, match=r"^methods.amid_x.warmup_epochs must be >= 0"):
        method_options("amid_x", {"method": "amid", "warmup_epochs": -1})


@pytest.mark.parametrize(("name", "raw", "message"), [
    ("v", {"method": "amid_ccl"}, r"^methods.v.method: unknown method 'amid_ccl'; known: amid"),
    ("amid", {"method": "ts"}, r"^methods.amid.method: the section of method 'amid' cannot "
                               r"train 'ts'"),
    ("nope", {}, r"^methods.nope: unknown method 'nope'; .*`method: <one of them>`"),
])
def test_bad_variants_are_refused_in_one_line(name, raw, message):
    with pytest.raises(ConfigError, match=message) as err:
        method_options(name, raw)
    assert "\n" not in str(err.value)


# what a params file that still names the Eq. 9 form by its old name is told
RENAMED = "{key}: 'amid' was renamed 'class_prior' (the paper's Eq. 9 form)"


@pytest.mark.parametrize(("name", "raw"), [
    ("ts", {}), ("ts_ta", {"preset": "recommended"}), ("amid", {}),
    ("amid_old", {"method": "amid"}),
])
def test_the_old_name_of_the_eq9_form_is_refused_with_the_new_one(name, raw):
    with pytest.raises(ConfigError) as err:
        method_options(name, {**raw, "mi_variant": "amid"})
    assert str(err.value) == RENAMED.format(key=f"methods.{name}.mi_variant")
    assert method_options(name, {**raw, "mi_variant": "class_prior"}).mi_variant == "class_prior"
    assert method_options(name, raw).mi_variant == "class_prior"  # and it is the default


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _params(tmp_path, syn, **methods):
    cfg = copy.deepcopy(syn.cfg)
    cfg.train.epochs = 1
    data = to_dict(cfg)
    data["methods"].update(methods)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize(("where", "value", "key"), [
    ("variant", "../escape", "methods.../escape"),
    ("variant", ".hidden", "methods..hidden"),
    ("pipeline", "a/b", "pipeline.methods[0]"),
    ("sweep", "x y", "sweeps.s.method"),
])
def test_unsafe_names_are_refused_naming_the_key(tmp_path, where, value, key):
    syn = make_dataset(tmp_path)
    path = _params(tmp_path, syn)
    data = yaml.safe_load(path.read_text())
    if where == "variant":
        data["methods"][value] = {"method": "amid"}
    elif where == "pipeline":
        data["pipeline"]["methods"] = [value]
    else:
        data["sweeps"] = {"s": {"method": value, "grid": {"train": {"seed": [0]}}}}
    path.write_text(yaml.safe_dump(data))
    out = CliRunner().invoke(app, ["--method", "baseline", "--params", str(path), "-q",
                                   "-o", str(tmp_path / "run")])
    assert out.exit_code == 2
    assert f"{key} must be one folder or file name" in out.stderr
    assert f"got {value!r}" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    bad = CliRunner().invoke(app, ["--method", "../x", "--params", str(path)])
    assert bad.exit_code == 2 and "--method must be one folder or file name" in bad.stderr
    assert not (tmp_path / "run").exists()


def test_a_variant_trains_into_its_own_folder_and_records_its_preset(in_tmp):
    """`amid-train --method amid_recommended` with `methods.amid_recommended: {method: amid,
    preset: recommended}`: runs/amid_recommended, config.json naming both."""
    syn = make_dataset(in_tmp)
    path = _params(in_tmp, syn, amid_recommended={
        "method": "amid", "preset": "recommended", "teacher_epochs": 1, "warmup_epochs": 0})
    out = CliRunner().invoke(app, ["--method", "amid_recommended", "--params", str(path),
                                   "-q", "--set", "train.epochs=2"])
    assert out.exit_code == 0, out.output
    run = in_tmp / "runs" / "amid_recommended"
    saved = json.loads((run / "config.json").read_text())
    assert saved["method"] == "amid_recommended"
    section = saved["config"]["methods"]["amid_recommended"]
    assert (section["method"], section["preset"]) == ("amid", "recommended")
    assert (section["alpha"], section["fixed_teacher"], section["teacher_epochs"],
            section["teacher_pick"], section["min_disagreement"]) == (1.0, True, 1, "best", 0.1)
    assert set(saved["config"]["methods"]) == {"amid_recommended"}
    assert (run / "discriminators.safetensors").exists()  # it trained amid


def test_an_old_params_file_fails_at_load_in_one_line(in_tmp):
    """`mi_variant: amid` anywhere in the file: refused before anything trains, even a
    method that has no such option, and the file is left as it was."""
    syn = make_dataset(in_tmp)
    path = _params(in_tmp, syn, amid={"mi_variant": "amid"})
    before = path.read_bytes()
    out = CliRunner().invoke(app, ["--method", "baseline", "--params", str(path), "-q",
                                   "-o", str(in_tmp / "run")])
    assert out.exit_code == 2
    assert out.stderr.strip().splitlines() == [
        f"amid-train: error: {path}: {RENAMED.format(key='methods.amid.mi_variant')}"]
    assert path.read_bytes() == before and not (in_tmp / "run").exists()


def test_the_listing_shows_the_papers_defaults_presets_and_variants(in_tmp):
    syn = make_dataset(in_tmp)
    path = _params(in_tmp, syn, amid_ccl={"method": "amid", "mi_variant": "ccl"})
    out = CliRunner().invoke(app, ["--list", "--params", str(path)])
    assert out.exit_code == 0, out.output
    lines = out.stdout.splitlines()
    amid = lines.index(next(ln for ln in lines if ln.strip().startswith("amid ")))
    defaults = lines[amid + 1]
    for key, value in PAPER.items():
        assert f"{key}={value!r}" in defaults, key
    assert "preset='paper'" in defaults
    presets = lines[amid + 2:amid + 4]
    assert presets[0].strip() == "preset='paper': the defaults above"
    assert presets[1].strip().startswith("preset='recommended': ")
    for key, value in STUDY.items():
        assert f"{key}={value!r}" in presets[1], key
    assert "  amid_ccl -> amid (mi_variant='ccl')" in lines


def _student(run):
    return load_file(run / "student.safetensors")


def test_ts_and_ts_ta_train_different_students_with_an_online_teacher(tmp_path):
    """With an online teacher sharing E_S, L_TA reaches the student through the shared
    encoder: ts and ts_ta part ways. With a frozen teacher L_TA has nothing to move but
    the teacher, so the two students are the same (the old defaults' identical rows)."""
    syn = make_dataset(tmp_path)
    cfg = copy.deepcopy(syn.cfg)
    cfg.train.epochs = 3
    cfg.train.model.dropout = 0.0
    for name in ("ts", "ts_ta"):
        cfg.methods[name] = {}  # the defaults: the paper's online teacher
        train(name, cfg, tmp_path / "online" / name, live=False)
    ts, ts_ta = (_student(tmp_path / "online" / n) for n in ("ts", "ts_ta"))
    gap = max((ts[k] - ts_ta[k]).abs().max().item() for k in ts)
    assert gap > 1e-4
    for name in ("ts", "ts_ta"):
        cfg.methods[name] = {"fixed_teacher": True, "teacher_epochs": 1}
        train(name, cfg, tmp_path / "fixed" / name, live=False)
    ts, ts_ta = (_student(tmp_path / "fixed" / n) for n in ("ts", "ts_ta"))
    assert all(torch.allclose(ts[k], ts_ta[k], atol=1e-6) for k in ts)


def test_a_grid_may_train_a_variant(in_tmp):
    """`sweeps.<g>.method` naming a variant: its options, one stack over the seeds."""
    syn = make_dataset(in_tmp)
    path = _params(in_tmp, syn, amid_static={"method": "amid", "dynamic_weights": False,
                                             "warmup_epochs": 0})
    data = yaml.safe_load(path.read_text())
    data["sweeps"] = {"seeds": {"method": "amid_static", "grid": {"train": {"seed": [0, 1]}}}}
    path.write_text(yaml.safe_dump(data))
    out = CliRunner().invoke(app, ["--grid", "seeds", "--params", str(path), "-q"])
    assert out.exit_code == 0, out.output
    sweep = json.loads((in_tmp / "runs/sweeps/seeds/sweep.json").read_text())
    assert sweep["method"] == "amid_static"
    assert {m["mode"] for m in sweep["members"]} == {"stacked"}
    for member in sweep["members"]:
        saved = json.loads((in_tmp / member["run"] / "config.json").read_text())
        section = saved["config"]["methods"]["amid_static"]
        assert (section["method"], section["dynamic_weights"]) == ("amid", False)
        assert (in_tmp / member["run"] / "discriminators.safetensors").exists()
