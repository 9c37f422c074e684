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


def official_gmc_term(joint: np.ndarray, mod: np.ndarray, tau: float) -> float:
    """One modality's term of SuperGMC.super_gmc_loss (miguelsvasco/gmc), written as a loop
    over its [joint; mod] rows: -log( exp(pos / tau) / sum_{l != k} exp(sim_kl / tau) ),
    the inputs unit rows (the authors' shared encoder normalises them)."""
    z = np.concatenate([_unit(joint), _unit(mod)])
    n = len(joint)
    total = 0.0
    for k in range(2 * n):
        pos = math.exp(float(_unit(joint)[k % n] @ _unit(mod)[k % n]) / tau)
        den = sum(math.exp(float(z[k] @ z[j]) / tau) for j in range(2 * n) if j != k)
        total += -math.log(pos / den)
    return total / (2 * n)


@pytest.mark.parametrize("tau", [0.3, 0.5])
def test_ntxent_matches_the_authors_term(tau: float) -> None:
    a, b = _rand(5, 4, seed=0), _rand(5, 4, seed=1)
    got = ntxent_loss(a, b, tau)
    assert got.dtype == torch.float64
    want = official_gmc_term(b.numpy(), a.numpy(), tau)
    assert got.item() == pytest.approx(want, rel=1e-10)
    # symmetric in its two inputs, as the authors' [joint; mod] layout implies
    assert ntxent_loss(b, a, tau).item() == pytest.approx(want, rel=1e-10)


def test_ntxent_value_on_a_hand_made_batch() -> None:
    # two orthogonal unit rows paired with themselves: each of the 4 rows sees its partner at
    # cos 1 and two rows at cos 0, so at tau 0.5 every row's loss is -log(e^2 / (e^2 + 2))
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    got = ntxent_loss(a, a.clone(), 0.5)
    assert got.item() == pytest.approx(-math.log(math.e**2 / (math.e**2 + 2)), rel=1e-12)


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


def official_crcd(fs: np.ndarray, ft: np.ndarray, tau: float, m: int) -> float:
    """The student-side term of Lechatelia/CRCD crcd/memory.py, in its own layout and signs:
    anchor a = teacher row, student relation normalize(s_i - t_a), teacher relations
    normalize(t_k - t_a), scored against each other; the InfoNCE ("loss new") over the
    candidates k != a with the positive k = i, for i != a (the rows whose teacher relation
    is not the zero vector)."""
    zs, zt = _unit(fs), _unit(ft)
    n = len(fs)
    losses = []
    for a in range(m):
        cands = [k for k in range(n) if k != a]
        for i in cands:
            rel_s = _unit(zs[i] - zt[a])
            logits = [float(_unit(zt[k] - zt[a]) @ rel_s) / tau for k in cands]
            losses.append(_xent(logits, cands.index(i)))
    return float(np.mean(losses))


@pytest.mark.parametrize("max_anchors", [None, 3])
def test_crcd_matches_the_authors_teacher_anchored_relations(max_anchors: int | None) -> None:
    fs, ft = _rand(6, 4, seed=4), _rand(6, 4, seed=5)
    got = crcd_loss(fs, ft, temperature=0.05, max_anchors=max_anchors)
    m = 6 if max_anchors is None else max_anchors
    assert got.dtype == torch.float64
    assert got.item() == pytest.approx(official_crcd(fs.numpy(), ft.numpy(), 0.05, m), rel=1e-10)


def test_crcd_anchor_is_the_teacher() -> None:
    # the student relation of sample j to anchor a is t_a - s_j: moving the student's own
    # row a (not a candidate of anchor a) changes nothing for anchor a, while a
    # student-anchored relation s_a - s_j would change with it
    fs, ft = _rand(4, 3, seed=12), _rand(4, 3, seed=13)
    moved = fs.clone()
    moved[0] = _rand(1, 3, seed=14)[0]
    one = crcd_loss(fs, ft, temperature=0.2, max_anchors=1)
    assert crcd_loss(moved, ft, temperature=0.2, max_anchors=1).item() == pytest.approx(
        one.item(), rel=1e-12)
    # and a student equal to its teacher puts each positive at cos 1, the best it can be
    best = crcd_loss(ft, ft, temperature=0.2, max_anchors=None)
    assert best < crcd_loss(fs, ft, temperature=0.2, max_anchors=None)


def test_crcd_degenerate_batches() -> None:
    one = torch.randn(1, 3, requires_grad=True)
    loss = crcd_loss(one, torch.randn(1, 3))
    loss.backward()
    assert loss.item() == 0.0 and torch.equal(one.grad, torch.zeros(1, 3))
    two = crcd_loss(torch.randn(2, 3), torch.randn(2, 3))  # one relation per anchor: log 1
    assert two.item() == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="common d"):
        crcd_loss(torch.randn(3, 2), torch.randn(3, 4))


def test_crcd_gradient_matches_finite_differences() -> None:
    # the masked j = a rows (+inf before the mask) and k = a columns (-inf) pass no NaN
    # and no stray gradient back: autograd agrees with central differences
    fs = _rand(5, 3, seed=21).requires_grad_(True)
    ft = _rand(5, 3, seed=22).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, b: crcd_loss(a, b, 0.3, 3), (fs, ft))


def test_crcd_backward_is_deterministic_with_two_threads() -> None:
    # a gather's backward (scatter-add) accumulates in a thread-dependent order: two
    # identical `amid-train -m crcd` runs gave different bytes with 2 threads
    def grads() -> torch.Tensor:
        g = torch.Generator().manual_seed(0)
        fs = torch.randn(64, 64, generator=g).requires_grad_(True)
        crcd_loss(fs, torch.randn(64, 64, generator=g), 0.05, 64).backward()
        return fs.grad

    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        first = grads()
        assert all(torch.equal(first, grads()) for _ in range(10))
    finally:
        torch.set_num_threads(threads)


# ---- CRD -----------------------------------------------------------------------------------

LABELS = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2, 2])  # the classes of the 10 bank rows


def _crd(seed: int = 0, labels: torch.Tensor = LABELS, k: int = 4) -> CRDLoss:
    torch.manual_seed(seed)
    return CRDLoss(s_dim=5, t_dim=3, labels=labels, feat_dim=6, n_negatives=k).double()


def official_contrast_loss(scores: list[list[float]], z: float, n_data: int) -> float:
    """RepDistiller crd/criterion.py ContrastLoss on x = exp(score) / Z, eps left out:
    -( sum_i log x_i0 / (x_i0 + K Pn) + sum_{i, k >= 1} log K Pn / (x_ik + K Pn) ) / N."""
    total = 0.0
    for row in scores:
        x = [math.exp(v) / z for v in row]
        noise = (len(row) - 1) / n_data
        total += math.log(x[0] / (x[0] + noise))
        total += sum(math.log(noise / (xk + noise)) for xk in x[1:])
    return -total / len(scores)


def _scores(anchors: np.ndarray, bank: np.ndarray, rows: list[list[int]]) -> list[list[float]]:
    return [[float(anchors[n] @ bank[r]) / 0.07 for r in row] for n, row in enumerate(rows)]


def test_crd_matches_the_authors_nce_and_keeps_its_first_z() -> None:
    crd = _crd()
    idx = torch.tensor([2, 7, 0])
    contrast = torch.tensor([[0, 3, 4, 7], [0, 2, 5, 8], [1, 2, 5, 9]])
    for step, seed in enumerate((6, 8)):
        fs, ft = _rand(3, 5, seed=seed), _rand(3, 3, seed=seed + 1)
        mem_s, mem_t = crd.memory_s.clone().numpy(), crd.memory_t.clone().numpy()
        with torch.no_grad():
            es = _unit(crd.embed_s(fs).numpy())
            et = _unit(crd.embed_t(ft).numpy())
        rows = [[int(idx[n])] + contrast[n].tolist() for n in range(3)]
        sc_s, sc_t = _scores(es, mem_t, rows), _scores(et, mem_s, rows)
        if step == 0:  # Z = n_data * mean exp(score), the first batch's, one per direction
            z_s = 10 * float(np.mean(np.exp(sc_s)))
            z_t = 10 * float(np.mean(np.exp(sc_t)))
        out = crd(fs, ft, idx, contrast)
        want_s = official_contrast_loss(sc_s, z_s, 10)
        want_t = official_contrast_loss(sc_t, z_t, 10)
        assert out["crd_s"].item() == pytest.approx(want_s, rel=1e-10)
        assert out["crd_t"].item() == pytest.approx(want_t, rel=1e-10)
        assert out["total"].item() == pytest.approx(want_s + want_t, rel=1e-10)
        assert crd.log_z.tolist() == pytest.approx([math.log(z_s), math.log(z_t)], rel=1e-12)
        # momentum 0.5 update of the rows seen, others untouched
        for n, r in enumerate(idx.tolist()):
            assert np.allclose(crd.memory_s[r].numpy(), _unit(0.5 * mem_s[r] + 0.5 * es[n]))
            assert np.allclose(crd.memory_t[r].numpy(), _unit(0.5 * mem_t[r] + 0.5 * et[n]))
        assert np.array_equal(crd.memory_s[5].numpy(), mem_s[5])


def test_crd_banks_start_as_the_authors() -> None:
    crd = CRDLoss(4, 4, torch.arange(2000) % 5, feat_dim=12)
    bound = math.sqrt(3 / 12)  # uniform in +-1/sqrt(feat_dim / 3), not normalised
    for bank in (crd.memory_s, crd.memory_t):
        assert bank.abs().max() <= bound and bank.min() < -0.95 * bound < 0.95 * bound < bank.max()
        norms = bank.norm(dim=1)
        assert norms.std() > 0.05 and norms.mean().item() == pytest.approx(1.0, abs=0.03)
    assert not torch.equal(crd.memory_s, crd.memory_t)


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


def test_crd_negatives_come_from_other_classes_without_replacement() -> None:
    # pools: class 0 has 7 other rows, classes 1 and 2 have 7 and 6: K = 5 fits all of them
    crd = _crd(k=5)
    idx = torch.arange(10)
    for _ in range(20):
        neg = crd.sample_negatives(idx)
        assert neg.shape == (10, 5)
        for row, i in zip(neg.tolist(), idx.tolist(), strict=True):
            assert len(set(row)) == 5  # np.random.choice(..., replace=False)
            assert all(LABELS[j] != LABELS[i] for j in row)


def test_crd_negatives_with_replacement_when_the_pool_is_small() -> None:
    crd = _crd(k=500)  # more than any pool: every draw with replacement, all of the pool reached
    neg = crd.sample_negatives(torch.arange(10))
    for row, i in zip(neg.tolist(), range(10), strict=True):
        assert set(row) == {j for j in range(10) if LABELS[j] != LABELS[i]}
    # mixed: K = 7 fits the pools of classes 0 and 1 (7 rows) but not class 2's (6 rows)
    crd = _crd(k=7)
    neg = crd.sample_negatives(torch.arange(10))
    for row, i in zip(neg.tolist(), range(10), strict=True):
        assert all(LABELS[j] != LABELS[i] for j in row)
        if LABELS[i] != 2:
            assert sorted(row) == [j for j in range(10) if LABELS[j] != LABELS[i]]


@pytest.mark.parametrize("k", [40, 4000])  # without and with replacement
def test_crd_negatives_are_uniform_fresh_per_draw_and_a_function_of_the_state(k: int) -> None:
    labels = torch.arange(150) % 3  # anchor 7 (class 1): a pool of the 100 rows of classes 0, 2
    crd = _crd(labels=labels, k=k)
    idx = torch.tensor([7, 7, 30])
    counts = torch.zeros(150)
    first = None
    for _ in range(100 if k == 40 else 1):
        draw = crd.sample_negatives(idx)
        first = draw if first is None else first
        assert torch.equal(draw[0], draw[1])  # same anchor, same draw
        counts += torch.bincount(draw[0], minlength=150)
    pool = labels != 1
    assert counts[~pool].sum() == 0
    # uniform over the 100 pool rows: a chi-square test against equal counts (df 99, p ~ 1e-4)
    expected = counts.sum() / 100
    assert float(((counts[pool] - expected) ** 2 / expected).sum()) < 160
    second = crd.sample_negatives(idx)  # the counter moved on: new negatives
    assert (second[0] != first[0]).float().mean() > 0.9
    again = _crd(labels=labels, k=k)  # same construction seed: same sequence
    again.load_state_dict({**again.state_dict(), "seed": crd.seed, "draws": torch.tensor(0)})
    assert torch.equal(again.sample_negatives(idx), first)


def test_crd_refuses_a_bank_of_one_class() -> None:
    with pytest.raises(ValueError, match="one class"):
        CRDLoss(3, 3, torch.zeros(5, dtype=torch.long))
