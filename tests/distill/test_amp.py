"""The mixed-precision path (bf16 autocast) of the trainer and of a stack, run on the CPU.

On a GPU `train.amp` turns autocast on; here the tests let the CPU take that
path too (`amid.devices.AMP_DEVICES`), so its dtype handling (bf16 activations meeting fp32
losses, accumulators and outputs) is exercised without one. The expectation
is the fp32 run: close, but not bit-equal (bf16 really was used).
"""

from __future__ import annotations

import copy

import h5py
import numpy as np
import pytest
import torch

from amid import devices
from amid.distill.train import data_from_config, train, train_members

from .conftest import make_dataset, set_options


def _close_not_equal(fp32: list[dict], bf16: list[dict], key: str, rel: float) -> None:
    a = np.array([row[key] for row in fp32])
    b = np.array([row[key] for row in bf16])
    assert np.isfinite(b).all()
    assert not np.array_equal(a, b), f"{key}: bf16 gave fp32's numbers: autocast was off"
    np.testing.assert_allclose(b, a, rtol=rel)


@pytest.mark.parametrize("student", ["gru", "pool"])
def test_bf16_training_stays_close_to_fp32(tmp_path, monkeypatch, student):
    syn = make_dataset(tmp_path)
    cfg = copy.deepcopy(syn.cfg)
    cfg.train.epochs, cfg.train.amp, cfg.train.model.student = 2, True, student
    set_options(cfg, "amid", warmup_epochs=0)  # the adversarial terms from the first step
    data = data_from_config(cfg, torch.device("cpu"))
    fp32 = train("amid", cfg, tmp_path / "fp32", data=data, live=False)
    monkeypatch.setattr(devices, "AMP_DEVICES", ("cuda", "cpu"))
    bf16 = train("amid", cfg, tmp_path / "bf16", data=data, live=False)
    _close_not_equal(fp32, bf16, "loss_total", rel=0.03)
    _close_not_equal(fp32, bf16, "loss_cls_student", rel=0.03)
    with h5py.File(tmp_path / "bf16" / "outputs.h5") as f:  # outputs stay float32
        assert f["test/student/embeddings"].dtype == np.float32
        assert f["test/student/logits"].dtype == np.float32


def test_a_bf16_stack_stays_close_to_fp32(tmp_path, monkeypatch):
    syn = make_dataset(tmp_path)
    cfgs = [copy.deepcopy(syn.cfg) for _ in range(2)]
    for seed, cfg in enumerate(cfgs):
        cfg.train.epochs, cfg.train.amp, cfg.train.seed = 2, True, seed
        set_options(cfg, "amid", warmup_epochs=0)
    data = data_from_config(cfgs[0], torch.device("cpu"))
    fp32 = train_members("amid", cfgs, [tmp_path / "f0", tmp_path / "f1"], data=data, live=False)
    monkeypatch.setattr(devices, "AMP_DEVICES", ("cuda", "cpu"))
    bf16 = train_members("amid", cfgs, [tmp_path / "b0", tmp_path / "b1"], data=data, live=False)
    for a, b in zip(fp32, bf16, strict=True):
        assert b.error is None
        _close_not_equal(a.history, b.history, "loss_total", rel=0.03)
