"""The shared base of the separate-teacher methods (distill/methods/teacher_student.py),
through a toy method written in this file the way kd, crd and crcd are written."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from amid.distill.methods import MethodContext, weighted_total
from amid.distill.methods.base import FixedTeacherOptions, TeacherPhaseOptions
from amid.distill.methods.teacher_student import SeparateTeacherMethod
from amid.distill.train import data_from_config
from amid.errors import ConfigError

from .conftest import make_dataset


class Toy(SeparateTeacherMethod):
    """Mean squared distance of the student's representation to the teacher's."""

    distill_terms = ("toy",)

    def distill_losses(self, pairs, epoch):
        return {"toy": F.mse_loss(pairs["s"], pairs["t"].detach())}

    def distill_weights(self, epoch):
        return {"cls_student": 1.0, "toy": 0.5}


@pytest.fixture(scope="module")
def syn(tmp_path_factory):
    s = make_dataset(tmp_path_factory.mktemp("synth"), missing_aux=3)
    s.cfg.train.model.dropout = 0.0
    return s


@pytest.fixture(scope="module")
def data(syn):
    return data_from_config(syn.cfg, torch.device("cpu"))


def _toy(syn, data, opts) -> Toy:
    torch.manual_seed(0)
    return Toy(MethodContext(data, syn.cfg.train.model, opts, 3, "toy"))


def _batch(data):
    train = data.splits["train"]
    batch = data.batch(train[:20])  # the first 3 rows have no audio
    assert not bool(batch.aux_present[:3].any()) and bool(batch.aux_present[3:].all())
    return batch


def test_a_fixed_teacher_pretrains_then_the_student_distils(syn, data):
    method = _toy(syn, data, FixedTeacherOptions(teacher_epochs=1))
    batch = _batch(data)
    method.begin_epoch(0)
    out = method(batch)
    terms = method.losses(batch, out, 0)
    assert list(terms) == ["cls_student", "cls_teacher", "toy"]  # the same keys every epoch
    assert terms["toy"].item() == 0.0 and method.weights(0) == {"cls_teacher": 1.0}
    assert all(p.requires_grad for p in method.teacher.parameters())

    method.begin_epoch(1)  # distilling: the teacher is frozen
    assert not any(p.requires_grad for p in method.teacher.parameters())
    out = method(batch)
    terms = method.losses(batch, out, 1)
    assert list(terms) == ["cls_student", "cls_teacher", "toy"]
    # computed another way: the rows with every auxiliary modality, by the mask
    keep = batch.aux_present
    want = ((out["s"][keep] - out["t"][keep]) ** 2).mean()
    assert terms["toy"].item() == pytest.approx(want.item(), rel=1e-6)
    want_ce = F.cross_entropy(out["logits_t"][keep], batch.labels[keep])
    assert terms["cls_teacher"].item() == pytest.approx(want_ce.item(), rel=1e-6)
    # the frozen teacher's CE is logged, not optimised
    assert method.weights(1) == {"cls_student": 1.0, "toy": 0.5}
    total = weighted_total(terms, method.weights(1))
    assert total.item() == pytest.approx(
        (terms["cls_student"] + 0.5 * terms["toy"]).item(), rel=1e-6)


def test_an_online_teacher_keeps_its_ce_and_distils_from_the_start(syn, data):
    method = _toy(syn, data, TeacherPhaseOptions(fixed_teacher=False))
    assert method.phase is None and method.distilling(0)
    batch = _batch(data)
    method.begin_epoch(0)
    terms = method.losses(batch, method(batch), 0)
    assert terms["toy"].item() > 0
    assert method.weights(0) == {"cls_student": 1.0, "toy": 0.5, "cls_teacher": 1.0}
    total = weighted_total(terms, method.weights(0))
    total.backward()  # the student and the teacher both learn
    assert all(p.grad is not None for p in method.teacher.head.parameters())


def test_an_impossible_schedule_is_refused(syn, data):
    with pytest.raises(ConfigError, match="teacher_epochs"):
        _toy(syn, data, FixedTeacherOptions(teacher_epochs=3))  # == train.epochs: no student
