"""`stack.Stack.predict`: a stack's eval-mode predictions are each member's own.

The trainer's equivalence tests (test_sweep.py) run with dropout 0, where a
prediction made in training mode would look the same; here dropout is on, so
only a real eval mode (dropout off, frozen teacher kept frozen) passes.
"""

from __future__ import annotations

import copy

import pytest
import torch

from amid.distill.predictions import predict_split
from amid.distill.stack import Stack
from amid.distill.train import data_from_config

from .conftest import build_method, make_dataset


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    syn = make_dataset(tmp_path_factory.mktemp("synth"), per_class=15)
    cfg = copy.deepcopy(syn.cfg)
    cfg.train.model.dropout = 0.5  # large: a prediction in training mode would be far off
    data = data_from_config(cfg, torch.device("cpu"))
    members = []
    for seed, tau in ((0, 0.1), (1, 0.3)):
        method = build_method(cfg, data, "amid", tau=tau)
        torch.manual_seed(seed)
        for p in method.parameters():  # members with weights of their own
            p.data.normal_(0, 0.3)
        members.append(method)
    return data, members


@pytest.mark.parametrize("batch_size", [512, 5])  # one chunk; many, with a ragged last one
def test_stacked_predictions_are_each_members_own_in_eval_mode(setup, batch_size):
    data, members = setup
    stack = Stack(members, [data, data])
    for m in members:
        m.train()
    stack.template.train()
    rows = data.splits["val"]
    got = stack.predict([rows, rows], batch_size, None)
    for m, method in enumerate(members):
        want = predict_split(method, data, rows, batch_size)
        assert got[m].keys() == want.keys()
        for key in want:
            torch.testing.assert_close(got[m][key], want[key], rtol=1e-5, atol=1e-5)
    # the members really differ, and the modes were given back
    assert not torch.allclose(got[0]["student_logits"], got[1]["student_logits"])
    assert stack.template.training and all(m.training for m in members)


def test_members_with_rows_of_their_own_are_predicted_one_by_one(setup):
    data, members = setup
    stack = Stack(members, [data, data])
    train = data.splits["train"]
    rows = [train[:10], train[5:20]]  # other rows, other lengths: no shared batch
    got = stack.predict(rows, 512, None)
    for m, method in enumerate(members):
        want = predict_split(method, data, rows[m], 512)
        assert got[m]["labels"].shape == (len(rows[m]),)
        torch.testing.assert_close(got[m]["teacher_logits"], want["teacher_logits"])
