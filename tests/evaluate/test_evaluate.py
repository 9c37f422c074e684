"""evaluate_outputs / evaluate_run on the hand-built run of conftest.py."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

from amid.errors import AmidError, CacheError
from amid.evaluate.evaluate import (
    evaluate_outputs,
    evaluate_run,
    pca,
    plots_dir_for,
    project_2d,
)

EXPECTED = {
    "method": "amid", "dataset": "demo", "fold": None, "seed": 0,
    "student": {
        "top1": 0.75, "top5": 0.75, "wa": 0.75, "ua": (0.5 + 1 + 1) / 3,
        "retrieval": {"R@1": 0.5, "R@2": 0.5, "R@3": 1.0},
    },
    "teacher": {"top1": 2 / 3, "top5": 1.0, "wa": 2 / 3, "ua": 0.5},
}


def test_metrics_match_the_hand_worked_values(run_dir: Path, fake) -> None:
    got = evaluate_outputs(run_dir / "outputs.h5", ks=[1, 2, 3], chunk_size=3)
    fake.assert_tree_close(got, EXPECTED)
    assert list(got) == ["method", "dataset", "fold", "seed", "student", "teacher"]


def test_no_teacher_block_without_a_teacher(tmp_path: Path, fake) -> None:
    path = fake.write_outputs(tmp_path / "outputs.h5", method="baseline", teacher=False, fold=3,
                         seed=7)
    got = evaluate_outputs(path, ks=[1])
    assert "teacher" not in got
    assert (got["method"], got["fold"], got["seed"]) == ("baseline", 3, 7)
    assert got["student"]["retrieval"] == {"R@1": 0.5}


def test_teacher_only_run_has_only_the_teacher_block(tmp_path: Path, fake) -> None:
    path = fake.write_outputs(tmp_path / "outputs.h5", method="teacher")
    with h5py.File(path, "a") as f:
        for split in ("train", "test"):
            del f[f"{split}/student"]
    got = evaluate_outputs(path, ks=[1])
    assert "student" not in got
    assert got["teacher"]["top1"] == pytest.approx(2 / 3)


def test_writes_json_and_dvc_plot_data(run_dir: Path, tmp_path: Path, fake) -> None:
    out = tmp_path / "metrics" / "amid.json"
    evaluate_run(run_dir / "outputs.h5", out, ks=[1, 2, 3])
    fake.assert_tree_close(json.loads(out.read_text()), EXPECTED)
    folder = plots_dir_for(out)
    assert folder == tmp_path / "metrics" / "amid"
    confusion = pd.read_csv(folder / "confusion.csv")
    assert confusion["actual"].tolist() == ["a", "b", "c", "a"]
    assert confusion["predicted"].tolist() == ["a", "b", "c", "b"]
    per_class = pd.read_csv(folder / "per_class.csv")
    assert per_class["class"].tolist() == fake.CLASSES
    np.testing.assert_allclose(per_class["accuracy"][:3], [0.5, 1.0, 1.0])
    assert per_class["accuracy"][3:].isna().all()  # classes absent from the test split
    assert per_class["support"].tolist() == [2, 1, 1, 0, 0, 0]
    assert per_class["correct"].tolist() == [1, 1, 1, 0, 0, 0]
    emb = pd.read_csv(folder / "embedding_2d.csv")
    assert emb["label"].tolist() == ["a", "b", "c", "a"]
    # 2-D inputs: PCA is a rotation (+ reflection) of the centred points, so distances hold.
    xy = emb[["x", "y"]].to_numpy()
    centred = fake.QUERIES - fake.QUERIES.mean(axis=0)
    np.testing.assert_allclose(
        np.linalg.norm(xy[:, None] - xy[None], axis=2),
        np.linalg.norm(centred[:, None] - centred[None], axis=2), atol=1e-5,
    )


def test_project_2d_degenerate_inputs() -> None:
    assert project_2d(np.ones((1, 5), np.float32)).tolist() == [[0.0, 0.0]]
    one_dim = project_2d(np.array([[0.0], [2.0]], np.float32))
    assert one_dim[:, 1].tolist() == [0.0, 0.0]
    assert abs(one_dim[0, 0] - one_dim[1, 0]) == pytest.approx(2.0)


@pytest.mark.parametrize("shape", [(50, 8), (6, 20), (700, 3)])
def test_pca_gives_scikit_learns_scores(shape) -> None:
    """The numpy PCA against scikit-learn's own (its sign convention included)."""
    from sklearn.decomposition import PCA

    rng = np.random.default_rng(sum(shape))
    x = rng.normal(size=shape) * rng.uniform(0.1, 3.0, size=shape[1]) + 5.0
    want = PCA(n_components=2, svd_solver="full").fit_transform(x)
    np.testing.assert_allclose(project_2d(x.astype(np.float32)),
                               PCA(n_components=2, svd_solver="full").fit_transform(
                                   x.astype(np.float32).astype(np.float64)), atol=1e-9)
    np.testing.assert_allclose(pca(x, 2), want, atol=1e-9)


def test_missing_file_names_it(tmp_path: Path) -> None:
    with pytest.raises(CacheError, match=r"outputs\.h5 do not exist"):
        evaluate_outputs(tmp_path / "nope" / "outputs.h5")


def test_not_hdf5(tmp_path: Path) -> None:
    bad = tmp_path / "outputs.h5"
    bad.write_text("hello")
    with pytest.raises(CacheError, match="not a readable HDF5"):
        evaluate_outputs(bad)


def _classes(text: str):
    return lambda f: f.attrs.__setitem__("classes", text)


def _drop(name: str):
    return lambda f: f.__delitem__(name)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (_drop("test/student/logits"), r"missing dataset /test/student/logits"),
        (lambda f: f.attrs.__delitem__("classes"), r"missing root attribute\(s\) classes"),
        (_drop("test/labels"), r"missing dataset /test/labels"),
        (_drop("test"), r"has no /test split \(splits present: train\)"),
        (_drop("train"), r"has no /train split"),
        (_classes('["a", "b", "c"]'), r"6 columns, 'classes' lists 3"),
        (_classes('["a", "b"]'), r"/train/labels must lie in \[0, 1\]"),
        (_classes("a,b"), r"'classes' is not a JSON list"),
        (lambda f: f["test/teacher/ids"].__setitem__(0, "zz"), r"not in /test/ids .*'zz'"),
    ],
)
def test_malformed_outputs_name_the_problem(run_dir: Path, edit, message: str) -> None:
    path = run_dir / "outputs.h5"
    with h5py.File(path, "a") as f:
        edit(f)
    with pytest.raises(AmidError, match=message) as info:
        evaluate_outputs(path, ks=[1])
    assert str(path) in str(info.value)


def test_nan_embeddings_are_rejected(run_dir: Path) -> None:
    path = run_dir / "outputs.h5"
    with h5py.File(path, "a") as f:
        f["test/student/embeddings"][0, 0] = np.nan
    with pytest.raises(CacheError, match="/test/student/embeddings contains NaN"):
        evaluate_outputs(path)


def test_scoring_the_validation_split(tmp_path: Path, fake) -> None:
    path = fake.write_outputs(tmp_path / "outputs.h5")
    with h5py.File(path, "a") as f:
        f.copy("test", "val")
        del f["test"]
    got = evaluate_outputs(path, ks=[1, 2, 3], split="val")
    fake.assert_tree_close(got, EXPECTED)


@pytest.mark.parametrize("value", [0.0, 0.25])
def test_identical_embeddings_project_without_a_warning(run_dir: Path, tmp_path: Path,
                                                        value: float) -> None:
    """A collapsed student (all-zero embeddings) leaked sklearn's RuntimeWarning from PCA."""
    import warnings

    path = run_dir / "outputs.h5"
    with h5py.File(path, "a") as f:
        f["test/student/embeddings"][...] = value
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning fails the test
        evaluate_run(path, tmp_path / "m.json", ks=[1])
        assert project_2d(np.full((5, 3), value)).tolist() == [[0.0, 0.0]] * 5
    emb = pd.read_csv(tmp_path / "m" / "embedding_2d.csv")
    assert (emb[["x", "y"]].to_numpy() == 0).all()
