"""class_aware_mi_loss / symmetric_mi_loss against a naive float64 loop and hand-worked cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from amid.distill.losses import MI_VARIANTS, class_aware_mi_loss, symmetric_mi_loss
from amid.distill.losses.mi import log1m_softmax


def naive_mi(u: np.ndarray, v: np.ndarray, y: list[int], tau: float, variant: str) -> float:
    """docs/method.md section 3 written out pair by pair in float64 (fine for moderate tau)."""
    n = len(y)
    u = u / np.linalg.norm(u, axis=1, keepdims=True)
    v = v / np.linalg.norm(v, axis=1, keepdims=True)
    total = 0.0
    for i in range(n):
        logits = [float(u[i] @ v[j]) / tau for j in range(n)]
        z = sum(math.exp(lg) for lg in logits)
        h = [math.exp(lg) / z for lg in logits]
        pos = [j for j in range(n) if y[j] == y[i]]
        neg = [j for j in range(n) if y[j] != y[i]]
        sp = sum(math.log(h[j]) for j in pos)
        sn = sum(math.log(1.0 - h[j]) for j in neg)
        if variant == "class_prior":  # Eq. 9: both sums over |P(i)|
            total += -(sp + sn) / len(pos)
        elif variant == "ccl":  # each sum over its own set
            total += -sp / len(pos) - (sn / len(neg) if neg else 0.0)
        else:  # never a silent fallback to one of the forms
            raise ValueError(f"naive_mi: unknown variant {variant!r}")
    return total / n


def _data(n: int, d: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(n, d, generator=g, dtype=torch.float64),
        torch.randn(n, d, generator=g, dtype=torch.float64),
    )


@pytest.mark.parametrize("variant", MI_VARIANTS)
@pytest.mark.parametrize(
    "labels",
    [
        [0, 1, 0, 2, 1, 0, 3],  # mixed
        [0, 1, 2, 3, 4, 5],  # every label distinct: P(i) = {i}
        [7, 7, 7, 7, 7],  # all equal: every Ng(i) empty
    ],
)
@pytest.mark.parametrize("tau", [0.1, 0.5, 1.0])
def test_matches_naive_loop(variant: str, labels: list[int], tau: float) -> None:
    u, v = _data(len(labels), 5, seed=len(labels))
    got = class_aware_mi_loss(u, v, torch.tensor(labels), tau, variant)
    assert got.shape == ()
    want = naive_mi(u.numpy(), v.numpy(), labels, tau, variant)
    assert got.item() == pytest.approx(want, rel=1e-10)


def test_class_prior_and_ccl_differ_by_class_prior_weight() -> None:
    # Identical vectors: every h_ij = 1/N, so per anchor
    #   ccl         = log N - log(1 - 1/N)
    #   class_prior = log N - (|Ng|/|P|) log(1 - 1/N)
    labels = [0, 0, 1, 1, 1, 2]
    n = len(labels)
    x = torch.ones(n, 3, dtype=torch.float64)
    lab = torch.tensor(labels)
    prior = class_aware_mi_loss(x, x, lab, 0.3, "class_prior").item()
    ccl = class_aware_mi_loss(x, x, lab, 0.3, "ccl").item()
    neg_term = -math.log(1 - 1 / n)
    ratios = [(n - labels.count(c)) / labels.count(c) for c in labels]  # |Ng|/|P| per anchor
    assert ccl == pytest.approx(math.log(n) + neg_term, rel=1e-12)
    assert prior == pytest.approx(math.log(n) + neg_term * sum(ratios) / n, rel=1e-12)
    assert prior - ccl == pytest.approx(neg_term * (sum(ratios) / n - 1), rel=1e-12)


def test_the_default_is_the_papers_eq9_form() -> None:
    # without a variant: Eq. 9 (the naive loop's class-prior branch), not CCL's form
    labels = [0, 1, 0, 2, 1, 0, 3]
    u, v = _data(len(labels), 5, seed=11)
    got = class_aware_mi_loss(u, v, torch.tensor(labels), 0.5).item()
    assert got == pytest.approx(naive_mi(u.numpy(), v.numpy(), labels, 0.5, "class_prior"),
                                rel=1e-10)
    assert got != pytest.approx(naive_mi(u.numpy(), v.numpy(), labels, 0.5, "ccl"), rel=1e-6)


def test_all_labels_equal_both_variants_agree() -> None:
    u, v = _data(4, 3, seed=1)
    lab = torch.zeros(4, dtype=torch.long)
    a = class_aware_mi_loss(u, v, lab, 0.2, "class_prior")
    c = class_aware_mi_loss(u, v, lab, 0.2, "ccl")
    # with P(i) the whole batch, l_i = -mean_j log h_ij = -(1/N) sum_j log h_ij
    logits = torch.nn.functional.normalize(u, dim=1) @ torch.nn.functional.normalize(v, dim=1).T
    expected = -(logits / 0.2).log_softmax(1).mean()
    assert a.item() == pytest.approx(expected.item(), rel=1e-12)
    assert c.item() == pytest.approx(expected.item(), rel=1e-12)


def test_negative_taking_all_mass_stays_exact() -> None:
    # Anchor 0 equals its negative and opposes its positive: at tau = 0.01,
    # h_01 = 1 / (1 + e^-200) rounds to 1 and a naive log(1 - h) would be -inf.
    u = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64, requires_grad=True)
    v = torch.tensor([[-1.0, 0.0], [1.0, 0.0]], dtype=torch.float64, requires_grad=True)
    loss = class_aware_mi_loss(u, v, torch.tensor([0, 1]), 0.01, "class_prior")
    # anchor 0: -(log h00 + log(1-h01)) = 2 * (200 + log1p(e^-200)); anchor 1: 2 log 2
    expected = (2 * (200 + math.log1p(math.exp(-200))) + 2 * math.log(2)) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-12)
    loss.backward()
    assert torch.isfinite(u.grad).all() and torch.isfinite(v.grad).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("variant", MI_VARIANTS)
def test_extreme_similarity_gradients_finite(dtype: torch.dtype, variant: str) -> None:
    x = torch.ones(6, 4, dtype=dtype, requires_grad=True)  # identical vectors
    y = torch.ones(6, 4, dtype=dtype, requires_grad=True)
    loss = class_aware_mi_loss(x, y, torch.tensor([0, 0, 1, 1, 2, 3]), 0.01, variant)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(x.grad).all() and torch.isfinite(y.grad).all()
    # and with random, sharply separated vectors in float32
    u, v = _data(8, 4, seed=3)
    u = u.to(dtype).mul(50).requires_grad_()
    v = v.to(dtype).requires_grad_()
    loss = class_aware_mi_loss(u, v, torch.tensor([0, 1, 0, 1, 2, 2, 3, 0]), 0.01, variant)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(u.grad).all() and torch.isfinite(v.grad).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_keeps_dtype_and_grads_reach_both_sides(dtype: torch.dtype) -> None:
    u, v = _data(5, 3, seed=5)
    u = u.to(dtype).requires_grad_()
    v = v.to(dtype).requires_grad_()
    loss = class_aware_mi_loss(u, v, torch.tensor([0, 1, 1, 0, 2]), 0.5)
    assert loss.dtype == dtype
    loss.backward()
    assert u.grad.abs().sum() > 0 and v.grad.abs().sum() > 0


def test_symmetric_is_mean_of_both_directions() -> None:
    u, v = _data(6, 4, seed=9)
    labels = [0, 1, 0, 1, 2, 2]
    got = symmetric_mi_loss(u, v, torch.tensor(labels), 0.25, "ccl").item()
    un, vn = u.numpy(), v.numpy()
    want = (naive_mi(un, vn, labels, 0.25, "ccl") + naive_mi(vn, un, labels, 0.25, "ccl")) / 2
    assert got == pytest.approx(want, rel=1e-10)


def test_single_sample_has_only_the_positive_term() -> None:
    # one sample: h_00 = 1, log h = 0, no negatives
    x = torch.randn(1, 3, dtype=torch.float64)
    assert class_aware_mi_loss(x, x.clone(), torch.tensor([4]), 0.1).item() == 0.0


def test_log1m_softmax_matches_direct_formula() -> None:
    logits = torch.randn(5, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    direct = torch.log(1 - logits.softmax(1))
    assert torch.allclose(log1m_softmax(logits), direct, rtol=1e-12, atol=1e-14)


def test_rejects_bad_inputs() -> None:
    u, v = _data(3, 2, seed=0)
    with pytest.raises(ValueError, match="known: class_prior, ccl$"):
        class_aware_mi_loss(u, v, torch.tensor([0, 1, 2]), 0.1, variant="infonce")
    # "amid", the Eq. 9 form's name in the public contract (DESIGN.md 3.4), still works
    y = torch.tensor([0, 1, 0])
    assert torch.equal(class_aware_mi_loss(u, v, y, 0.1, variant="amid"),
                       class_aware_mi_loss(u, v, y, 0.1, variant="class_prior"))
    assert not torch.equal(class_aware_mi_loss(u, v, y, 0.1, variant="amid"),
                           class_aware_mi_loss(u, v, y, 0.1, variant="ccl"))
    with pytest.raises(ValueError, match="labels"):
        class_aware_mi_loss(u, v, torch.tensor([0, 1]), 0.1)
    with pytest.raises(ValueError, match="integer"):
        class_aware_mi_loss(u, v, torch.tensor([0.0, 1.0, 2.0]), 0.1)
    with pytest.raises(ValueError, match="temperature"):
        class_aware_mi_loss(u, v, torch.tensor([0, 1, 2]), 0.0)
    with pytest.raises(ValueError, match="shape"):
        class_aware_mi_loss(u, v[:, :1], torch.tensor([0, 1, 2]), 0.1)
