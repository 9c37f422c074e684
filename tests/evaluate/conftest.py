"""A hand-built run folder whose metrics are known without running any metric code.

Six classes, four test samples with labels [0, 1, 2, 0]:
- student logits: right on samples 0-2; sample 3's true class has the lowest
  of its six logits, so Top-1 = Top-5 = 3/4, WA = 3/4, UA = (1/2 + 1 + 1) / 3.
- teacher: only samples t0, t1, t3 (t2 lacks an auxiliary modality), labels
  [0, 1, 0]; wrong on t1 only, so Top-1 = WA = 2/3 and UA = (1 + 0) / 2.
- retrieval (2-D embeddings, cosine): queries 0 and 1 find their class first;
  queries 2 and 3 find it third, so R@1 = R@2 = 0.5 and R@3 = R@5 = 1.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import h5py
import numpy as np
import pytest

CLASSES = ["a", "b", "c", "d", "e", "f"]
TEST_LABELS = [0, 1, 2, 0]
GALLERY = np.array([[1, 0], [0, 1], [-1, 0], [0, -1]], dtype=np.float32)
GALLERY_LABELS = [0, 1, 2, 0]
QUERIES = np.array([[1, 0.1], [0.1, 1], [0.1, -1], [-1, 0.1]], dtype=np.float32)


def _onehot_logits(preds: list[int], n: int = 6) -> np.ndarray:
    logits = np.tile(np.arange(n, 0, -1, dtype=np.float32) * 0.1, (len(preds), 1))
    for i, p in enumerate(preds):
        logits[i, p] = 5.0
    return logits


def student_test_logits() -> np.ndarray:
    logits = _onehot_logits([0, 1, 2, 1])
    logits[3, 0] = -5.0  # the true class ranks last: outside the top 5
    return logits


def write_outputs(
    path: Path, method: str = "amid", teacher: bool = True, fold: int | None = None,
    seed: int = 0, dataset: str = "demo", all_right: bool = False,
) -> Path:
    """outputs.h5 as the trainer writes it; `all_right` makes the student right on all 4."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        f.attrs["classes"] = json.dumps(CLASSES)
        f.attrs["method"] = method
        f.attrs["dataset"] = dataset
        f.attrs["fold"] = json.dumps(fold)
        f.attrs["seed"] = seed
        strings = h5py.string_dtype("utf-8")
        train = f.create_group("train")
        train.create_dataset("ids", data=[f"g{k}" for k in range(4)], dtype=strings)
        train["labels"] = np.array(GALLERY_LABELS, dtype=np.int64)
        train["student/embeddings"] = GALLERY
        train["student/logits"] = _onehot_logits(GALLERY_LABELS)
        test = f.create_group("test")
        test.create_dataset("ids", data=[f"t{k}" for k in range(4)], dtype=strings)
        test["labels"] = np.array(TEST_LABELS, dtype=np.int64)
        test["student/embeddings"] = QUERIES
        logits = student_test_logits()
        if all_right:
            logits[3, 0] = 10.0  # sample 3 becomes right: Top-1 = 1
        test["student/logits"] = logits
        if teacher:
            for group, ids, labels, preds in (
                (train, None, GALLERY_LABELS, GALLERY_LABELS),
                (test, ["t0", "t1", "t3"], [0, 1, 0], [0, 2, 0]),
            ):
                n = len(labels)
                group["teacher/embeddings"] = np.eye(n, 2, dtype=np.float32)
                group["teacher/logits"] = _onehot_logits(preds)
                if ids is not None:
                    group.create_dataset("teacher/ids", data=ids, dtype=strings)
    return path


def write_history(run_dir: Path, name: str, values: list[float]) -> Path:
    """A dvclive-style TSV (plots/metrics/<name>.tsv: step, value)."""
    path = run_dir / "dvclive" / "plots" / "metrics" / f"{name}.tsv"
    path.parent.mkdir(parents=True, exist_ok=True)
    leaf = name.rsplit("/", 1)[-1]
    rows = "".join(f"{k}\t{v}\n" for k, v in enumerate(values))
    path.write_text(f"step\t{leaf}\n{rows}")
    return path


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    run = tmp_path / "runs" / "amid"
    write_outputs(run / "outputs.h5")
    return run


def assert_tree_close(got: object, expected: object, path: str = "") -> None:
    """Nested dicts equal key for key, floats to 1e-12 (pytest.approx is flat only)."""
    if isinstance(expected, dict):
        assert isinstance(got, dict) and set(got) == set(expected), f"{path}: {got} != {expected}"
        for key in expected:
            assert_tree_close(got[key], expected[key], f"{path}.{key}")
    elif isinstance(expected, float):
        assert got == pytest.approx(expected, abs=1e-12), f"{path}: {got} != {expected}"
    else:
        assert got == expected, f"{path}: {got!r} != {expected!r}"


PIXELS = {"grid": 2, "fps": 2.0}  # the training caches' extractor settings: 4-d features


def pixels_identity(**params) -> dict:
    """The identity amid-train records for a `pixels` cache made with these params."""
    from amid.extract.extractors import build_extractor

    return build_extractor("pixels", {**PIXELS, **params}).identity()


def make_pixels_run(run: Path, classes: list[str] | None = None, *, inputs: bool = True):
    """A run folder whose GRU student reads `pixels` features (grid 2, fps 2), as amid-train
    writes it: student.safetensors/json with the `inputs` record, config.json."""
    import torch
    from torch import nn

    from amid.distill.inference import save_module
    from amid.distill.models import MultiModalEncoder, Student

    classes = classes or ["cat", "dog", "eel"]
    torch.manual_seed(0)
    spec = {"visual": dict(in_dim=4, out_dim=8, kind="gru", hidden=6, layers=1,
                           bidirectional=False, dropout=0.0)}
    encoder = MultiModalEncoder(spec, dim=8)
    model = Student(encoder, nn.Linear(8, len(classes))).eval()
    record = {"visual": {"cache": "cache/toy/visual__pixels.h5", "identity": pixels_identity(),
                         "fingerprint": "0" * 64}}
    meta = {"method": "amid", "classes": classes, "target": ["visual"], "auxiliary": ["audio"],
            "feature_dims": {"visual": 4}, "max_steps": None, "dataset": "toy", "fold": None,
            "seed": 0, "module": "student",
            "arch": {"encoder": encoder.config(), "num_classes": len(classes)},
            **({"inputs": record} if inputs else {})}
    run.mkdir(parents=True)
    save_module(model, meta, run, "student")
    config = {"method": "amid", "config": {
        "dataset": {"name": "toy", "cache_dir": "cache", "target": ["visual"]},
        "extract": {"visual": {"extractor": "pixels", "params": PIXELS}}},
        **({"inputs": record} if inputs else {})}
    (run / "config.json").write_text(json.dumps(config))
    return model


@pytest.fixture
def fake() -> SimpleNamespace:
    """The builders and constants above (test modules cannot import conftest by name)."""
    return SimpleNamespace(
        CLASSES=CLASSES, QUERIES=QUERIES, write_outputs=write_outputs,
        write_history=write_history, assert_tree_close=assert_tree_close,
        make_pixels_run=make_pixels_run, pixels_identity=pixels_identity, PIXELS=PIXELS,
    )
