"""Metrics against scikit-learn and, for retrieval, a direct Python loop."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import sklearn.metrics as skm
import torch

from amid.evaluate.metrics import (
    confusion_matrix,
    per_class_accuracy,
    recall_at_k,
    top_k_accuracy,
    unweighted_accuracy,
    weighted_accuracy,
)


def _y(n: int = 60, c: int = 5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, c, n), rng.integers(0, c, n)


# ---- accuracies ----------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_wa_ua_match_sklearn(seed: int) -> None:
    yt, yp = _y(seed=seed)
    assert weighted_accuracy(yt, yp) == pytest.approx(skm.accuracy_score(yt, yp), abs=1e-15)
    assert unweighted_accuracy(yt, yp) == pytest.approx(
        skm.balanced_accuracy_score(yt, yp), abs=1e-15
    )
    # tensors and string labels give the same numbers
    names = np.array(["ang", "hap", "neu", "sad", "exc"])
    assert weighted_accuracy(torch.tensor(yt), torch.tensor(yp)) == weighted_accuracy(yt, yp)
    # class order differs (sorted names), so the mean may differ in the last bit
    assert unweighted_accuracy(list(names[yt]), names[yp]) == pytest.approx(
        unweighted_accuracy(yt, yp), abs=1e-15
    )


def test_ua_with_prediction_of_unseen_class() -> None:
    yt = np.array([0, 0, 0, 1])
    yp = np.array([0, 2, 2, 1])  # class 2 never true: recalls 1/3 and 1, UA = 2/3
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn warns about the unseen class
        want = skm.balanced_accuracy_score(yt, yp)
    assert unweighted_accuracy(yt, yp) == pytest.approx(2 / 3) == pytest.approx(want)
    assert per_class_accuracy(yt, yp) == {0: pytest.approx(1 / 3), 1: 1.0}


def test_per_class_accuracy_strings() -> None:
    got = per_class_accuracy(["a", "b", "b", "c"], ["a", "a", "b", "b"])
    assert got == {"a": 1.0, "b": 0.5, "c": 0.0}


@pytest.mark.parametrize("seed", [0, 1])
def test_confusion_matrix_matches_sklearn(seed: int) -> None:
    yt, yp = _y(seed=seed, c=4)
    want = skm.confusion_matrix(yt, yp, labels=list(range(6)))
    assert np.array_equal(confusion_matrix(yt, yp, 6), want)
    names = ["w", "x", "y", "z"]
    s_true, s_pred = [names[i] for i in yt], [names[i] for i in yp]
    got = confusion_matrix(s_true, s_pred, labels=["z", "y", "x", "w"])
    assert np.array_equal(got, skm.confusion_matrix(s_true, s_pred, labels=["z", "y", "x", "w"]))
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        confusion_matrix(yt, yp, 3)


@pytest.mark.parametrize("k", [1, 2, 3, 5])
def test_top_k_matches_sklearn(k: int) -> None:
    rng = np.random.default_rng(k)
    scores = rng.normal(size=(80, 5))  # continuous: no ties
    labels = rng.integers(0, 5, 80)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn warns that k = n_classes is trivial
        want = skm.top_k_accuracy_score(labels, scores, k=k, labels=list(range(5)))
    assert top_k_accuracy(labels, scores, k) == pytest.approx(want, abs=1e-15)
    assert top_k_accuracy(torch.tensor(labels), torch.tensor(scores), k) == pytest.approx(want)
    names = np.array(["a", "b", "c", "d", "e"])
    assert top_k_accuracy(names[labels], scores, k, classes=names) == pytest.approx(want)


def test_top_k_ties_prefer_lower_class_index() -> None:
    scores = np.array([[1.0, 1.0, 0.0], [1.0, 1.0, 0.0]])
    # sample 0 (class 0) ranks first, sample 1 (class 1) ranks second
    assert top_k_accuracy([0, 1], scores, 1) == 0.5
    assert top_k_accuracy([0, 1], scores, 2) == 1.0
    assert top_k_accuracy([2, 2], scores, 10) == 1.0  # k beyond C: everything hits


# ---- retrieval -----------------------------------------------------------------------------


def naive_recall(q, ql, g, gl, ks) -> dict[str, float]:
    """Rank the gallery by (-cosine, index) per query and look at the first K."""
    hits = {k: 0 for k in ks}
    for i in range(len(q)):
        sims = [
            float(np.dot(q[i], g[j]) / (np.linalg.norm(q[i]) * np.linalg.norm(g[j])))
            for j in range(len(g))
        ]
        order = sorted(range(len(g)), key=lambda j, sims=sims: (-sims[j], j))
        for k in ks:
            hits[k] += any(gl[j] == ql[i] for j in order[:k])
    return {f"R@{k}": hits[k] / len(q) for k in ks}


@pytest.mark.parametrize(("chunk_size", "gallery_chunk_size"), [(3, 8192), (4096, 8192), (3, 5),
                                                                 (4096, 1)])
def test_recall_matches_loop_random(chunk_size: int, gallery_chunk_size: int) -> None:
    rng = np.random.default_rng(5)
    q, g = rng.normal(size=(17, 6)), rng.normal(size=(40, 6))
    ql, gl = rng.integers(0, 6, 17), rng.integers(0, 5, 40)  # class 5 absent from gallery
    assert (ql == 5).any()
    ks = (1, 5, 10, 20, 50)
    got = recall_at_k(q, ql, g, gl, ks=ks, chunk_size=chunk_size,
                      gallery_chunk_size=gallery_chunk_size)
    assert got == pytest.approx(naive_recall(q, ql, g, gl, ks), abs=1e-15)
    # K = 50 > 40 gallery items: every query whose class is in the gallery hits
    assert got["R@50"] == pytest.approx(np.isin(ql, gl).mean())
    # torch float32 input, on its device, gives the same answer
    got_t = recall_at_k(torch.tensor(q, dtype=torch.float32), torch.tensor(ql),
                        torch.tensor(g, dtype=torch.float32), torch.tensor(gl), ks=ks)
    assert got_t == got


def test_recall_ties_and_absent_class_hand_worked() -> None:
    e1, e2 = [1.0, 0.0], [0.0, 1.0]
    gallery = np.array([e1, e1, e2, e2])
    g_labels = ["cat", "dog", "dog", "cat"]
    query = np.array([e1, e2, e1])
    q_labels = ["dog", "cat", "bird"]
    # q0: sims [1,1,0,0], tie -> index 0 (cat, miss) first, index 1 (dog) second
    # q1: sims [0,0,1,1], index 2 (dog) first, index 3 (cat) second
    # q2: bird is not in the gallery: never hits
    got = recall_at_k(query, q_labels, gallery, g_labels, ks=(1, 2, 3, 100))
    assert got == {"R@1": 0.0, "R@2": 2 / 3, "R@3": 2 / 3, "R@100": 2 / 3}
    assert got == pytest.approx(
        naive_recall(query, q_labels, gallery, g_labels, (1, 2, 3, 100)), abs=1e-15
    )
    # chunking does not move the tie rule
    assert recall_at_k(query, q_labels, gallery, g_labels, ks=(1, 2, 3, 100), chunk_size=1) == got
    assert recall_at_k(query, q_labels, gallery, g_labels, ks=(1, 2, 3, 100), chunk_size=1,
                       gallery_chunk_size=1) == got


def test_recall_scale_invariant() -> None:
    rng = np.random.default_rng(6)
    q, g = rng.normal(size=(9, 4)), rng.normal(size=(12, 4))
    ql, gl = rng.integers(0, 3, 9), rng.integers(0, 3, 12)
    scales = rng.uniform(0.1, 10.0, size=(12, 1))
    assert recall_at_k(q, ql, g * scales, gl) == recall_at_k(q, ql, g, gl)


# ---- input validation ----------------------------------------------------------------------


def test_errors_are_clear() -> None:
    with pytest.raises(ValueError, match="empty"):
        weighted_accuracy([], [])
    with pytest.raises(ValueError, match="length"):
        unweighted_accuracy([0, 1], [0])
    with pytest.raises(ValueError, match="label types"):
        weighted_accuracy([0, 1], ["0", "1"])
    q = np.ones((3, 2))
    with pytest.raises(ValueError, match="label counts"):
        recall_at_k(q, [0, 1], q, [0, 1, 2])
    with pytest.raises(ValueError, match="non-empty"):
        recall_at_k(np.ones((0, 2)), [], q, [0, 1, 2])
    with pytest.raises(ValueError, match="dim"):
        recall_at_k(q, [0, 1, 2], np.ones((3, 5)), [0, 1, 2])
    with pytest.raises(ValueError, match="ks"):
        recall_at_k(q, [0, 1, 2], q, [0, 1, 2], ks=(0,))
    with pytest.raises(ValueError, match="scores"):
        top_k_accuracy([0, 1], np.ones((3, 2)), 1)
