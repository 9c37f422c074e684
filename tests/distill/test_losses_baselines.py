"""Baseline losses (CRD, GMC's NT-Xent, CRCD, CCL's symmetric KL) against naive loops."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from amid.distill.losses import CRDLoss, crcd_loss, ntxent_loss, symmetric_kl_loss


def _rand(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _xent(logits: list[float], target: int) -> float:
    m = max(logits)
    return -(logits[target] - m - math.log(sum(math.exp(v - m) for v in logits)))


# ---- NT-Xent -------------------------------------------------------------------------------


def naive_ntxent(a: np.ndarray, b: np.ndarray, tau: float) -> float:
    z = _unit(np.concatenate([a, b]))
    n = len(a)
    total = 0.0
    for k in range(2 * n):
        others = [j for j in range(2 * n) if j != k]
        logits = [float(z[k] @ z[j]) / tau for j in others]
        total += _xent(logits, others.index((k + n) % (2 * n)))
    return total / (2 * n)


@pytest.mark.parametrize("tau", [0.1, 0.5])
def test_ntxent_matches_loop(tau: float) -> None:
    a, b = _rand(5, 4, seed=0), _rand(5, 4, seed=1)
    got = ntxent_loss(a, b, tau)
    assert got.dtype == torch.float64
    assert got.item() == pytest.approx(naive_ntxent(a.numpy(), b.numpy(), tau), rel=1e-10)


def test_ntxent_single_pair_is_zero_and_grads_finite() -> None:
    # N = 1: each of the 2 rows has only its positive left, so the loss is log 1 = 0
    a = torch.tensor([[1.0, 2.0]], requires_grad=True)
    b = torch.tensor([[-3.0, 0.5]], requires_grad=True)
    loss = ntxent_loss(a, b)
    assert loss.dtype == torch.float32 and loss.item() == pytest.approx(0.0, abs=1e-7)
    x = torch.ones(4, 3, requires_grad=True)
    ntxent_loss(x, x, temperature=0.01).backward()
    assert torch.isfinite(x.grad).all()


# ---- symmetric KL --------------------------------------------------------------------------


@pytest.mark.parametrize("temperature", [1.0, 2.5])
def test_symmetric_kl_matches_loop(temperature: float) -> None:
    a, b = _rand(4, 6, seed=2), _rand(4, 6, seed=3)
    total = 0.0
    for ra, rb in zip(a.numpy(), b.numpy(), strict=True):
        p = np.exp(ra / temperature) / np.exp(ra / temperature).sum()
        q = np.exp(rb / temperature) / np.exp(rb / temperature).sum()
        total += (sum(p * np.log(p / q)) + sum(q * np.log(q / p))) / 2
    got = symmetric_kl_loss(a, b, temperature)
    assert got.dtype == torch.float64
    assert got.item() == pytest.approx(temperature**2 * total / 4, rel=1e-10)
    assert symmetric_kl_loss(a, a.clone(), temperature).item() == pytest.approx(0.0, abs=1e-15)


# ---- CRCD ----------------------------------------------------------------------------------


def naive_crcd(fs: np.ndarray, ft: np.ndarray, tau: float, m: int) -> float:
    zs, zt = _unit(fs), _unit(ft)
    n = len(fs)
    losses = []
    for i in range(m):
        others = [j for j in range(n) if j != i]
        rs = {j: _unit(zs[i] - zs[j]) for j in others}
        rt = {j: _unit(zt[i] - zt[j]) for j in others}
        for pos, j in enumerate(others):
            logits = [float(rs[j] @ rt[k]) / tau for k in others]
            losses.append(_xent(logits, pos))
    return float(np.mean(losses))


@pytest.mark.parametrize("max_anchors", [None, 3])
def test_crcd_matches_loop(max_anchors: int | None) -> None:
    fs, ft = _rand(6, 4, seed=4), _rand(6, 4, seed=5)
    got = crcd_loss(fs, ft, temperature=0.2, max_anchors=max_anchors)
    m = 6 if max_anchors is None else max_anchors
    assert got.dtype == torch.float64
    assert got.item() == pytest.approx(naive_crcd(fs.numpy(), ft.numpy(), 0.2, m), rel=1e-10)


def test_crcd_degenerate_batches() -> None:
    one = torch.randn(1, 3, requires_grad=True)
    loss = crcd_loss(one, torch.randn(1, 3))
    loss.backward()
    assert loss.item() == 0.0 and torch.equal(one.grad, torch.zeros(1, 3))
    two = crcd_loss(torch.randn(2, 3), torch.randn(2, 3))  # one relation per anchor: log 1
    assert two.item() == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="common d"):
        crcd_loss(torch.randn(3, 2), torch.randn(3, 4))


# ---- CRD -----------------------------------------------------------------------------------


def _crd(seed: int = 0, n_data: int = 10, k: int = 4) -> CRDLoss:
    torch.manual_seed(seed)
    return CRDLoss(s_dim=5, t_dim=3, n_data=n_data, feat_dim=6, n_negatives=k).double()


def test_crd_matches_loop_and_updates_memory() -> None:
    crd = _crd()
    fs, ft = _rand(3, 5, seed=6), _rand(3, 3, seed=7)
    idx = torch.tensor([2, 7, 0])
    contrast = torch.tensor([[1, 3, 4, 5], [0, 0, 9, 8], [6, 2, 1, 3]])
    mem_s, mem_t = crd.memory_s.clone().numpy(), crd.memory_t.clone().numpy()
    with torch.no_grad():
        es = _unit(crd.embed_s(fs).numpy())
        et = _unit(crd.embed_t(ft).numpy())
    out = crd(fs, ft, idx, contrast)
    ls, lt = [], []
    for n in range(3):
        rows = [int(idx[n])] + contrast[n].tolist()
        ls.append(_xent([float(es[n] @ mem_t[r]) / 0.07 for r in rows], 0))
        lt.append(_xent([float(et[n] @ mem_s[r]) / 0.07 for r in rows], 0))
    assert out["crd_s"].item() == pytest.approx(np.mean(ls), rel=1e-10)
    assert out["crd_t"].item() == pytest.approx(np.mean(lt), rel=1e-10)
    assert out["total"].item() == pytest.approx(np.mean(ls) + np.mean(lt), rel=1e-10)
    # momentum 0.5 update of the rows seen, others untouched
    for n, r in enumerate(idx.tolist()):
        want = _unit(0.5 * mem_s[r] + 0.5 * es[n])
        assert np.allclose(crd.memory_s[r].numpy(), want, rtol=1e-12)
        assert np.allclose(crd.memory_t[r].numpy(), _unit(0.5 * mem_t[r] + 0.5 * et[n]))
    assert np.array_equal(crd.memory_s[5].numpy(), mem_s[5])


def test_crd_grads_reach_heads_and_eval_freezes_memory() -> None:
    crd = _crd(seed=1)
    fs = _rand(4, 5, seed=8).requires_grad_()
    out = crd(fs, _rand(4, 3, seed=9), torch.tensor([0, 1, 2, 3]))
    out["total"].backward()
    assert crd.embed_s.weight.grad.abs().sum() > 0 and crd.embed_t.weight.grad.abs().sum() > 0
    assert torch.isfinite(fs.grad).all()
    crd.eval()
    before = crd.memory_s.clone()
    crd(_rand(4, 5, seed=10), _rand(4, 3, seed=11), torch.tensor([0, 1, 2, 3]))
    assert torch.equal(before, crd.memory_s)


def test_crd_negatives_skip_the_positive() -> None:
    crd = _crd(n_data=3, k=500)
    idx = torch.tensor([0, 1, 2])
    neg = crd.sample_negatives(idx)
    assert neg.shape == (3, 500)
    for row, i in zip(neg.tolist(), idx.tolist(), strict=True):
        assert set(row) == set(range(3)) - {i}  # uniform over the others, all reached


def test_crd_negatives_are_uniform_fresh_per_draw_and_a_function_of_the_state() -> None:
    crd = _crd(n_data=50, k=4000)
    idx = torch.tensor([7, 7, 30])
    first = crd.sample_negatives(idx)
    # uniform over the 49 others: a chi-square test against equal counts (df 48, p ~ 1e-4)
    counts = torch.bincount(first[0], minlength=50).double()
    assert counts[7] == 0
    expected = 4000 / 49
    chi2 = float(((counts[torch.arange(50) != 7] - expected) ** 2 / expected).sum())
    assert chi2 < 90
    assert torch.equal(first[0], first[1])  # same anchor, same draw
    second = crd.sample_negatives(idx)  # the counter moved on: new negatives
    assert (second[0] != first[0]).float().mean() > 0.9
    again = _crd(n_data=50, k=4000)  # same construction seed: same sequence
    again.load_state_dict({**again.state_dict(), "seed": crd.seed, "draws": torch.tensor(0)})
    assert torch.equal(again.sample_negatives(idx), first)
