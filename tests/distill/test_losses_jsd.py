"""jsd_loss against a naive float64 loop and its known bounds."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from amid.distill.losses import jsd_loss


def naive_jsd(a: np.ndarray, b: np.ndarray) -> float:
    total = 0.0
    for row_a, row_b in zip(a, b, strict=True):
        p = np.exp(row_a - row_a.max())
        p /= p.sum()
        q = np.exp(row_b - row_b.max())
        q /= q.sum()
        m = (p + q) / 2
        kl_pm = sum(pc * math.log(pc / mc) for pc, mc in zip(p, m, strict=True) if pc > 0)
        kl_qm = sum(qc * math.log(qc / mc) for qc, mc in zip(q, m, strict=True) if qc > 0)
        total += (kl_pm + kl_qm) / 2
    return total / len(a)


def _logits(n: int, c: int, seed: int, scale: float = 1.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, c, generator=g, dtype=torch.float64) * scale


@pytest.mark.parametrize("scale", [0.5, 3.0])
def test_matches_naive_loop(scale: float) -> None:
    a, b = _logits(6, 5, 0, scale), _logits(6, 5, 1, scale)
    got = jsd_loss(a, b)
    assert got.shape == ()
    assert got.item() == pytest.approx(naive_jsd(a.numpy(), b.numpy()), rel=1e-10)
    assert jsd_loss(b, a).item() == pytest.approx(got.item(), rel=1e-12)  # symmetric


def test_identical_is_zero_and_disjoint_is_ln2() -> None:
    a = _logits(4, 3, 2)
    assert jsd_loss(a, a.clone()).item() == pytest.approx(0.0, abs=1e-15)
    # one-hot on different classes (softmax saturates): JSD -> ln 2
    p = torch.tensor([[200.0, -200.0]], dtype=torch.float64)
    assert jsd_loss(p, -p).item() == pytest.approx(math.log(2), rel=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dtype_kept_and_gradients_finite_when_saturated(dtype: torch.dtype) -> None:
    a = torch.tensor([[1e4, -1e4, 0.0], [5.0, 5.0, 5.0]], dtype=dtype, requires_grad=True)
    b = torch.tensor([[-1e4, 1e4, 0.0], [0.0, 1.0, 2.0]], dtype=dtype, requires_grad=True)
    loss = jsd_loss(a, b)
    assert loss.dtype == dtype
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(a.grad).all() and torch.isfinite(b.grad).all()
    assert a.grad.abs().sum() > 0 and b.grad.abs().sum() > 0


def test_rejects_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match="same shape"):
        jsd_loss(torch.zeros(2, 3), torch.zeros(2, 4))
