"""Training-set size as configuration, and the per-term gradient diagnostics (issue 11)."""

from __future__ import annotations

import copy
import json

import h5py
import numpy as np
import pytest
import torch

from amid.distill.subsample import stratified_subsample
from amid.distill.train import data_from_config, seed_everything, train
from amid.evaluate.evaluate import evaluate_outputs

from .conftest import make_dataset, set_options


def test_stratified_subsample_is_per_class_seeded_and_a_subset():
    rows = np.arange(100, 160)
    labels = np.repeat([0, 1, 2], [30, 25, 5])
    picked = stratified_subsample(rows, labels, per_class=8, seed=3)
    per_class = {c: int(np.isin(picked, rows[labels == c]).sum()) for c in (0, 1, 2)}
    assert per_class == {0: 8, 1: 8, 2: 5}  # a class with fewer gives all of its own
    assert set(picked) <= set(rows) and list(picked) == sorted(picked)
    assert np.array_equal(picked, stratified_subsample(rows, labels, per_class=8, seed=3))
    assert not np.array_equal(picked, stratified_subsample(rows, labels, per_class=8, seed=4))
    half = stratified_subsample(rows, labels, fraction=0.5, seed=0)
    assert {c: int(np.isin(half, rows[labels == c]).sum()) for c in (0, 1, 2)} == \
        {0: 15, 1: 12, 2: 2}  # round(0.5 * 25) = 12 (banker's), round(2.5) = 2
    assert len(stratified_subsample(rows, labels, fraction=0.01, seed=0)) == 3  # at least one


def _ids(run, split):
    with h5py.File(run / "outputs.h5") as f:
        return list(f[f"{split}/ids"].asstr())


def test_every_method_trains_on_the_same_rows_for_a_seed_and_val_test_stay_whole(tmp_path):
    syn = make_dataset(tmp_path)
    cfg = copy.deepcopy(syn.cfg)
    cfg.train.epochs = 1
    full = train("baseline", cfg, tmp_path / "full", live=False)
    assert full
    cfg.dataset.train_per_class = 5
    for method in ("baseline", "kd", "amid"):
        train(method, cfg, tmp_path / method, live=False)
    train_ids = _ids(tmp_path / "baseline", "train")
    assert len(train_ids) == 4 * 5  # 4 classes x 5
    assert all(_ids(tmp_path / m, "train") == train_ids for m in ("kd", "amid"))
    assert set(train_ids) < set(_ids(tmp_path / "full", "train"))
    for split in ("val", "test"):
        assert _ids(tmp_path / "baseline", split) == _ids(tmp_path / "full", split)
    other = copy.deepcopy(cfg)
    other.train.seed = 1
    train("baseline", other, tmp_path / "seed1", live=False)
    assert _ids(tmp_path / "seed1", "train") != train_ids
    # recorded: in the run's config, in outputs.h5 and in the metrics
    saved = json.loads((tmp_path / "baseline" / "config.json").read_text())["config"]
    assert saved["dataset"]["train_per_class"] == 5
    metrics = evaluate_outputs(tmp_path / "baseline" / "outputs.h5")
    assert metrics["training_set"] == {"samples": 20, "per_class": 5, "fraction": None}


def test_normalisation_uses_the_subsample_alone(tmp_path):
    syn = make_dataset(tmp_path)
    cfg = copy.deepcopy(syn.cfg)
    cfg.dataset.train_per_class = 3
    data = data_from_config(cfg, torch.device("cpu"))
    from amid.distill.subsample import train_rows_for

    rows = train_rows_for(data, cfg)
    view = data.with_train_rows(rows)
    d = data.target["visual"]
    steps = np.concatenate([d.x[r, : int(d.lengths[r])].numpy() for r in rows.tolist()])
    np.testing.assert_allclose(view.target["visual"].mean, steps.mean(axis=0), rtol=1e-5,
                               atol=1e-6)
    np.testing.assert_allclose(view.target["visual"].std, steps.std(axis=0), rtol=1e-5)
    assert not np.allclose(view.target["visual"].mean, d.mean)  # not the whole split's


# ------------------------------------------------------------------ diagnostics


def _first_batch(cfg, data):
    """The rows of epoch 0's first batch, as the trainer draws them."""
    gen = seed_everything(cfg.train.seed)
    train_rows = data.splits["train"]
    perm = torch.randperm(len(train_rows), generator=gen)
    return train_rows[perm[: cfg.train.batch_size]]


def _softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("method", ["baseline", "kd"])
def test_gradient_norms_equal_a_hand_computation(tmp_path, method):
    """grad_<term> = || d(w_k L_k)/ds || on the epoch's first batch, at the initial weights:
    computed here from the closed forms of the CE and KD gradients w.r.t. the logits."""
    syn = make_dataset(tmp_path)
    cfg = copy.deepcopy(syn.cfg)
    cfg.train.epochs, cfg.train.model.dropout = 1, 0.0
    set_options(cfg, "kd", temperature=2.0, weight=0.3)
    data = data_from_config(cfg, torch.device("cpu"))
    history = train(method, cfg, tmp_path / "run", data=data, live=False)
    # the same initial networks, rebuilt as the trainer builds them
    from .conftest import build_method

    seed_everything(cfg.train.seed)
    net = build_method(cfg, data, method, epochs=1)
    seed_everything(cfg.train.seed)  # build_method seeds with 0: same as train.seed here
    net.eval()
    batch = data.batch(_first_batch(cfg, data))
    with torch.no_grad():
        out = net(batch)
    s = out["s"].numpy().astype(np.float64)  # (B, d)
    w = net.student.classifier.weight.detach().numpy().astype(np.float64)  # (C, d)
    b_ = net.student.classifier.bias.detach().numpy().astype(np.float64)
    z = s @ w.T + b_
    y = np.eye(z.shape[1])[batch.labels.numpy()]
    n = len(s)
    lam, temp = (0.3, 2.0) if method == "kd" else (0.0, 1.0)
    d_ce = (_softmax(z) - y) / n @ w * (1 - lam)  # d((1-lam) CE)/ds
    want = {"grad_cls_student": np.linalg.norm(d_ce)}
    if method == "kd":
        zt = out["logits_t"].numpy().astype(np.float64)
        # d(T^2 KL(p_t || softmax(z/T)))/dz = T (softmax(z/T) - p_t) / N
        d_kd = lam * temp * (_softmax(z / temp) - _softmax(zt / temp)) / n @ w
        want["grad_kd"] = np.linalg.norm(d_kd)
        want["grad_cls_teacher"] = 0.0  # the teacher's own encoders: nothing reaches s
    first = history[0]
    for key, value in want.items():
        assert first[key] == pytest.approx(value, rel=1e-4, abs=1e-7), key
