"""`min_disagreement` (ts, ts_ta, amid with `fixed_teacher`; docs/results.md, rule G): the
distillation terms count only if the frozen teacher disagrees with at least that fraction
of the training labels, measured once as it freezes."""

from __future__ import annotations

import copy
import logging

import pytest
import torch

from amid.distill.methods.phase import training_disagreement
from amid.distill.train import data_from_config, train, train_members
from amid.errors import ConfigError

from .conftest import build_method, make_dataset, set_options

EPOCHS, PRETRAIN = 4, 2
DISTILLING = ("grad_ts", "grad_jsd")  # what L_TS and L_JSD send into the student encoder


@pytest.fixture(scope="module")
def syn(tmp_path_factory):
    # a teacher after 2 epochs on 21 samples still misses some of the training labels
    s = make_dataset(tmp_path_factory.mktemp("gate"), n_classes=3, per_class=12)
    s.cfg.train.epochs, s.cfg.train.batch_size = EPOCHS, 8
    return s


def _gated(cfg, method, at_least):
    return set_options(copy.deepcopy(cfg), method, fixed_teacher=True,
                       teacher_epochs=PRETRAIN, min_disagreement=at_least)


def test_the_measure_is_the_fraction_of_training_labels_the_teacher_misses(syn):
    data = data_from_config(syn.cfg, torch.device("cpu"))
    method = build_method(syn.cfg, data, "amid", fixed_teacher=True, teacher_epochs=PRETRAIN)
    method.eval()
    rows = data.splits["train"].tolist()
    wrong = 0
    with torch.no_grad():  # one row at a time, counted by hand
        for r in rows:
            batch = data.batch(torch.tensor([r]))
            top = method.teacher(batch.target, batch.auxiliary)["logits_t"].argmax(1)
            wrong += int(top.item() != int(data.labels[r]))
    assert 0 < wrong < len(rows)  # an untrained teacher: some right, some wrong
    assert training_disagreement(method.teacher, data) == pytest.approx(wrong / len(rows))


@pytest.mark.parametrize("method", ["ts", "amid"])
def test_the_gate_turns_the_distillation_terms_off_or_leaves_them_on(syn, tmp_path, method,
                                                                     caplog):
    # a teacher never disagrees with more than all of the labels: 1.0 is off unless it
    # misses every one of them; its own measure, read back, is on by definition (>=)
    with caplog.at_level(logging.INFO, logger="amid"):
        off = train(method, _gated(syn.cfg, method, 1.0), tmp_path / "off", live=False)
    measured = [row["teacher_disagreement"] for row in off]
    assert measured[:PRETRAIN] == [-1.0] * PRETRAIN  # not measured before the freeze
    d = measured[PRETRAIN]
    assert 0 <= d < 1 and measured[PRETRAIN:] == [d] * (EPOCHS - PRETRAIN)
    # one line says what the gate decided, with the measure and the threshold
    said = [r.getMessage() for r in caplog.records if "disagrees with" in r.getMessage()]
    assert said == [f"methods.{method}: the frozen teacher disagrees with {100 * d:.1f} % of "
                    "the training labels (min_disagreement 100.0 %): the distillation terms "
                    "are off, the student trains on its labels"]
    on = train(method, _gated(syn.cfg, method, d), tmp_path / "on", live=False)
    assert [row["teacher_disagreement"] for row in on][PRETRAIN:] == [d] * (EPOCHS - PRETRAIN)
    for key in DISTILLING:
        assert all(row[key] == 0.0 for row in off[PRETRAIN:])
        assert all(row[key] > 0 for row in on[PRETRAIN:])
        # the terms are still computed and logged while their weight is 0
        assert all(row[f"loss_{key[5:]}"] > 0 for row in off[PRETRAIN:])


def test_gated_off_trains_as_zero_distillation_weights(syn, tmp_path):
    zero = set_options(copy.deepcopy(syn.cfg), "amid", fixed_teacher=True,
                       teacher_epochs=PRETRAIN, alpha=0.0, jsd=0.0, beta=0.0, gamma=0.0)
    a = train("amid", _gated(syn.cfg, "amid", 1.0), tmp_path / "gated", live=False)
    b = train("amid", zero, tmp_path / "zero", live=False)
    assert [r["val_acc_student"] for r in a] == [r["val_acc_student"] for r in b]
    assert [r["loss_cls_student"] for r in a] == [r["loss_cls_student"] for r in b]


def test_an_online_teacher_is_refused_with_the_option_named(syn):
    data = data_from_config(syn.cfg, torch.device("cpu"))
    with pytest.raises(ConfigError, match=r"methods\.ts\.min_disagreement: .*fixed_teacher"):
        build_method(syn.cfg, data, "ts", fixed_teacher=False, min_disagreement=0.1)


def test_the_option_is_a_fraction(syn):
    from amid.distill.methods import method_options

    with pytest.raises(ConfigError, match=r"methods\.amid\.min_disagreement"):
        method_options("amid", {"min_disagreement": 1.5})


def test_each_stacked_member_is_gated_by_its_own_teacher(syn, tmp_path):
    def members(at_least, tag):
        cfgs = [_gated(syn.cfg, "amid", at_least) for _ in range(2)]
        for seed, cfg in enumerate(cfgs):
            cfg.train.seed = seed
        return train_members("amid", cfgs, [tmp_path / f"{tag}{k}" for k in range(2)],
                             live=False)

    off = members(1.0, "off")
    assert all(0 < rs.history[-1]["teacher_disagreement"] < 1 for rs in off)
    on = members(1e-9, "on")  # every member's measure above is > 0: on for both
    for rs_off, rs_on in zip(off, on, strict=True):
        assert all(row["grad_ts"] == 0.0 for row in rs_off.history[PRETRAIN:])
        assert all(row["grad_ts"] > 0 for row in rs_on.history[PRETRAIN:])
        assert rs_on.history[-1]["teacher_disagreement"] == \
            rs_off.history[-1]["teacher_disagreement"]  # pre-training is the same in both
