"""`student_waits` (ts, ts_ta, amid with `fixed_teacher`; docs/results.md, rule E): while the
teacher pre-trains, the student either waits or trains on its own cross-entropy."""

from __future__ import annotations

import copy

import pytest

from amid.distill.train import train

from .conftest import make_dataset, set_options

EPOCHS, PRETRAIN = 4, 2


@pytest.fixture(scope="module")
def syn(tmp_path_factory):
    s = make_dataset(tmp_path_factory.mktemp("waits"), n_classes=3, per_class=8)
    s.cfg.train.epochs, s.cfg.train.batch_size = EPOCHS, 8
    return s


@pytest.mark.parametrize("method", ["ts", "amid"])
def test_the_students_ce_reaches_it_during_pretraining_only_when_it_does_not_wait(
        syn, tmp_path, method):
    grads = {}
    for waits in (True, False):
        cfg = set_options(copy.deepcopy(syn.cfg), method, fixed_teacher=True,
                          teacher_epochs=PRETRAIN, student_waits=waits)
        history = train(method, cfg, tmp_path / f"waits={waits}", live=False)
        assert len(history) == EPOCHS
        grads[waits] = [row["grad_cls_student"] for row in history]
    # the gradient tap measures what each term sent to the student's representation
    assert grads[True][:PRETRAIN] == [0.0] * PRETRAIN
    assert all(g > 0 for g in grads[False][:PRETRAIN])
    # after pre-training both distil: the student's CE reaches it in both runs
    assert all(g > 0 for g in grads[True][PRETRAIN:] + grads[False][PRETRAIN:])
