"""Discriminator / adversarial losses, alignment stats and dynamic weights (docs/method.md, 4)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from amid.distill.losses import (
    adversarial_loss,
    alignment_means,
    alignment_stats,
    discriminator_loss,
    enhanced_mask,
    update_dynamic_weights,
)

LABELS = [0, 1, 0, 2, 2, 3]  # E = {0, 2, 3, 4}, eta = 4/6


def _disc(d: int, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(d, 4), nn.LeakyReLU(0.2), nn.Linear(4, 1)).double()


def _reps(n: int, d: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(n, d, generator=g, dtype=torch.float64),
        torch.randn(n, d, generator=g, dtype=torch.float64),
    )


def bce1(x: float) -> float:  # -log sigmoid(x)
    return math.log1p(math.exp(-x))


def bce0(x: float) -> float:  # -log(1 - sigmoid(x))
    return math.log1p(math.exp(x))


def _out(disc: nn.Module, x: torch.Tensor) -> list[float]:
    with torch.no_grad():
        return disc(x).reshape(-1).tolist()


def test_enhanced_mask_and_eta() -> None:
    mask = enhanced_mask(torch.tensor(LABELS))
    assert mask.tolist() == [True, False, True, True, True, False]
    t, s = _reps(6, 3, 0)
    out = discriminator_loss(_disc(3, 0), _disc(3, 1), t, s, torch.tensor(LABELS))
    assert out["eta"].item() == pytest.approx(4 / 6)


def test_discriminator_loss_matches_loop() -> None:
    t, s = _reps(6, 3, 1)
    d_f, d_e = _disc(3, 2), _disc(3, 3)
    out = discriminator_loss(d_f, d_e, t, s, torch.tensor(LABELS))
    ft, fs, et, es = _out(d_f, t), _out(d_f, s), _out(d_e, t), _out(d_e, s)
    e_idx = [i for i, y in enumerate(LABELS) if LABELS.count(y) >= 2]
    disc_f = np.mean([bce1(x) for x in ft]) + np.mean([bce0(x) for x in fs])
    disc_e = np.mean([bce1(et[i]) for i in e_idx]) + np.mean([bce0(es[i]) for i in e_idx])
    eta = len(e_idx) / len(LABELS)
    assert out["disc_f"].item() == pytest.approx(disc_f, rel=1e-12)
    assert out["disc_e"].item() == pytest.approx(disc_e, rel=1e-12)
    assert out["total"].item() == pytest.approx(disc_f + eta * disc_e, rel=1e-12)
    assert out["total"].dtype == torch.float64


def test_adversarial_loss_matches_loop() -> None:
    _, s = _reps(6, 3, 4)
    d_f, d_e = _disc(3, 5), _disc(3, 6)
    out = adversarial_loss(d_f, d_e, s, torch.tensor(LABELS), 0.3, 0.7)
    fs, es = _out(d_f, s), _out(d_e, s)
    e_idx = [i for i, y in enumerate(LABELS) if LABELS.count(y) >= 2]
    adv_f = np.mean([bce1(x) for x in fs])
    adv_e = np.mean([bce1(es[i]) for i in e_idx])
    assert out["adv_f"].item() == pytest.approx(adv_f, rel=1e-12)
    assert out["adv_e"].item() == pytest.approx(adv_e, rel=1e-12)
    assert out["total"].item() == pytest.approx(0.3 * adv_f + 0.7 * adv_e, rel=1e-12)


def test_empty_enhanced_set_gives_zero_not_nan() -> None:
    t, s = _reps(4, 3, 7)
    t.requires_grad_()
    s.requires_grad_()
    labels = torch.arange(4)  # all distinct: E empty
    d_f, d_e = _disc(3, 8), _disc(3, 9)
    disc = discriminator_loss(d_f, d_e, t, s, labels)
    assert disc["eta"].item() == 0.0 and disc["disc_e"].item() == 0.0
    assert disc["total"].item() == pytest.approx(disc["disc_f"].item())
    disc["total"].backward()
    assert all(torch.isfinite(p.grad).all() for p in d_f.parameters())
    adv = adversarial_loss(d_f, d_e, s, labels, torch.tensor(0.5), torch.tensor(0.5))
    assert adv["adv_e"].item() == 0.0
    adv["total"].backward()
    assert torch.isfinite(s.grad).all()


def test_gradient_routing() -> None:
    t, s = _reps(6, 3, 10)
    t.requires_grad_()
    s.requires_grad_()
    d_f, d_e = _disc(3, 11), _disc(3, 12)
    discriminator_loss(d_f, d_e, t, s, torch.tensor(LABELS))["total"].backward()
    assert t.grad is None and s.grad is None  # detached inside
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in d_f.parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in d_e.parameters())

    d_f2, d_e2 = _disc(3, 13), _disc(3, 14)
    adversarial_loss(d_f2, d_e2, s, torch.tensor(LABELS), 0.5, 0.5)["total"].backward()
    assert s.grad is not None and s.grad.abs().sum() > 0
    assert all(p.grad is None for p in [*d_f2.parameters(), *d_e2.parameters()])


def test_not_enhanced_ignores_d_e() -> None:
    t, s = _reps(6, 3, 15)
    d_f = _disc(3, 16)
    disc = discriminator_loss(d_f, None, t, s, torch.tensor(LABELS), enhanced=False)
    assert disc["disc_e"].item() == 0.0 and disc["total"].item() == disc["disc_f"].item()
    adv = adversarial_loss(d_f, None, s, torch.tensor(LABELS), 0.4, 0.6, enhanced=False)
    assert adv["total"].item() == pytest.approx(0.4 * adv["adv_f"].item())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_saturated_discriminator_stays_finite(dtype: torch.dtype) -> None:
    d = nn.Linear(2, 1).to(dtype)
    with torch.no_grad():
        d.weight.fill_(1000.0)
        d.bias.zero_()
    s = torch.tensor([[1.0, 1.0], [-1.0, -1.0]], dtype=dtype, requires_grad=True)
    out = adversarial_loss(d, d, s, torch.tensor([0, 0]), 1.0, 1.0)
    out["total"].backward()
    assert out["total"].dtype == dtype
    # logits +2000 and -2000: BCE(.,1) = (0 + 2000) / 2 per discriminator
    assert out["adv_f"].item() == pytest.approx(1000.0, rel=1e-6)
    assert torch.isfinite(s.grad).all()


def test_bad_discriminator_output_shape() -> None:
    t, s = _reps(3, 2, 0)
    with pytest.raises(ValueError, match="logits of shape"):
        discriminator_loss(nn.Linear(2, 2).double(), None, t, s, torch.tensor([0, 1, 2]), False)


def test_alignment_stats_accumulate_to_loop_means() -> None:
    batches = [(_reps(5, 3, 20), [0, 1, 0, 0, 2]), (_reps(4, 3, 21), [3, 3, 1, 2])]
    acc = torch.zeros(4, dtype=torch.float64)
    same, other = [], []
    for (t, s), labels in batches:
        acc += alignment_stats(t, s, torch.tensor(labels))
        tn = t.numpy() / np.linalg.norm(t.numpy(), axis=1, keepdims=True)
        sn = s.numpy() / np.linalg.norm(s.numpy(), axis=1, keepdims=True)
        for i in range(len(labels)):
            same.append(tn[i] @ sn[i])
            pairs = [j for j in range(len(labels)) if j != i and labels[j] == labels[i]]
            other += [tn[i] @ sn[j] for j in pairs]
    c_f, c_e = alignment_means(acc)
    assert c_f.item() == pytest.approx(np.mean(same), rel=1e-12)
    assert c_e.item() == pytest.approx(np.mean(other), rel=1e-12)


def test_alignment_without_same_class_pairs_is_neutral() -> None:
    t, s = _reps(3, 2, 22)
    c_f, c_e = alignment_means(alignment_stats(t, s, torch.tensor([0, 1, 2])))
    assert torch.isfinite(c_e) and c_e.item() == c_f.item()
    w_f, w_e = update_dynamic_weights((0.5, 0.5), c_f, c_e, 0.5)
    assert w_f.item() == pytest.approx(0.5) and w_e.item() == pytest.approx(0.5)


def test_update_dynamic_weights_hand_worked() -> None:
    w_f, w_e = update_dynamic_weights((0.5, 0.5), 1.0, 0.0, 0.9)
    sf = math.exp(-1) / (math.exp(-1) + 1)  # softmax(-1, 0)[0]
    assert w_f.item() == pytest.approx(0.45 + 0.1 * sf, rel=1e-12)
    assert w_e.item() == pytest.approx(0.45 + 0.1 * (1 - sf), rel=1e-12)
    assert w_f < w_e  # better-aligned pair gets the smaller weight
    w32 = update_dynamic_weights(torch.tensor([0.2, 0.8]), torch.tensor(0.3), torch.tensor(0.1), 0)
    assert w32.dtype == torch.float32 and w32.sum().item() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="mu"):
        update_dynamic_weights((0.5, 0.5), 0.1, 0.2, 1.5)
