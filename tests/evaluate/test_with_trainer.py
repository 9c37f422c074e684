"""Stage two's real output through stage three: train a tiny run, score it, predict with it.

The check that ties the stages together: `amid-predict` on the run's own
target cache must reproduce the student logits the trainer stored in
`outputs.h5`, and the metrics must agree with a plain numpy recount of them.
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from amid.cache import cache_path, write_cache
from amid.config import Config, DatasetConfig, ModalityExtractConfig, TrainConfig
from amid.distill.train import train
from amid.evaluate.cli import app, predict_app
from amid.manifest import write_manifest


def _tiny_dataset(root: Path) -> Config:
    rng = np.random.default_rng(0)
    n_classes, per_class = 3, 12
    ids, labels, splits, seqs = [], [], [], {"visual": [], "audio": []}
    protos = {"visual": rng.normal(size=(n_classes, 5)), "audio": rng.normal(size=(n_classes, 4))}
    for c in range(n_classes):
        for k in range(per_class):
            ids.append(f"c{c}_{k:02d}")
            labels.append(f"class{c}")
            splits.append("train" if k < 8 else "val" if k < 10 else "test")
            t = int(rng.integers(1, 5))
            seqs["visual"].append(protos["visual"][c] + rng.normal(size=(t, 5)))
            seqs["audio"].append(3 * protos["audio"][c] + rng.normal(size=(2, 4)))
    write_manifest(pd.DataFrame({"sample_id": ids, "label": labels, "split": splits}),
                   root / "manifest.csv")
    for m, ss in seqs.items():
        write_cache(cache_path(root / "cache", "tiny", m, "fx"), ids,
                    [s.astype(np.float32) for s in ss],
                    {"modality": m, "extractor": "fx", "model": "none", "params": {}})
    cfg = Config(
        dataset=DatasetConfig(name="tiny", root=str(root), manifest=str(root / "manifest.csv"),
                              cache_dir=str(root / "cache"), target=["visual"],
                              auxiliary=["audio"]),
        extract={m: ModalityExtractConfig(extractor="fx") for m in seqs},
        train=TrainConfig(epochs=2, batch_size=8, device="cpu"),
    )
    cfg.train.model.dim = 8
    cfg.train.model.hidden = 8
    cfg.train.model.disc_hidden = 8
    # an online teacher: the default (frozen after 5 epochs) needs more than 2 epochs
    cfg.methods["amid"] = {"warmup_epochs": 1, "fixed_teacher": False}
    return cfg


@pytest.mark.slow
def test_trained_run_scores_and_predicts_consistently(tmp_path: Path) -> None:
    cfg = _tiny_dataset(tmp_path / "data")
    run = tmp_path / "runs" / "amid"
    train("amid", cfg, run)
    runner = CliRunner()
    out = tmp_path / "metrics" / "amid.json"
    result = runner.invoke(app, ["run", str(run), "--out", str(out)])
    assert result.exit_code == 0, result.output
    metrics = json.loads(out.read_text())
    with h5py.File(run / "outputs.h5", "r") as f:
        test_ids = list(f["test/ids"].asstr()[...])
        labels = f["test/labels"][...]
        logits = f["test/student/logits"][...]
    assert metrics["student"]["top1"] == pytest.approx(np.mean(logits.argmax(1) == labels))
    assert {"teacher", "student"} <= set(metrics) and metrics["method"] == "amid"

    preds = tmp_path / "preds.csv"
    cache = cache_path(tmp_path / "data" / "cache", "tiny", "visual", "fx")
    result = runner.invoke(predict_app, [str(run), "--cache", f"visual={cache}",
                                         "--out", str(preds)])
    assert result.exit_code == 0, result.output
    table = pd.read_csv(preds).set_index("sample_id").loc[test_ids]
    shifted = np.exp(logits - logits.max(1, keepdims=True))
    np.testing.assert_allclose(table.filter(like="prob_").to_numpy(),
                               shifted / shifted.sum(1, keepdims=True), atol=1e-5)

    result = runner.invoke(app, ["report", "--metrics", str(tmp_path / "metrics" / "*.json"),
                                 "--runs", str(tmp_path / "runs"), "--out",
                                 str(tmp_path / "reports"), "--dataset", "tiny"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "reports" / "gap_over_epochs.png").stat().st_size > 1000
    assert (tmp_path / "reports" / "cos_same_class.png").stat().st_size > 1000
