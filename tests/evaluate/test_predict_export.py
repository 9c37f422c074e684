"""amid-predict and export on a tiny student saved the way the trainer saves one."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from amid.cache import cache_path, write_cache
from amid.distill.inference import save_module
from amid.distill.models import MultiModalEncoder, Student
from amid.errors import AmidError
from amid.evaluate import export as export_mod
from amid.evaluate.cli import app, predict_app
from amid.evaluate.export import export_student, load_torchscript

CLASSES = ["cat", "dog", "eel"]
DIMS = {"visual": 4, "audio": 3}


def _student() -> tuple[Student, dict]:
    torch.manual_seed(0)
    # Alphabetical modality order: student.json is written with sorted keys, so the
    # reloaded encoder fuses its modalities alphabetically (see the report to distill).
    spec = {
        "audio": dict(in_dim=3, out_dim=8, kind="pool", hidden=6, layers=1,
                      bidirectional=False, dropout=0.0),
        "visual": dict(in_dim=4, out_dim=8, kind="gru", hidden=6, layers=1, bidirectional=True,
                       dropout=0.0),
    }
    encoder = MultiModalEncoder(spec, dim=8)
    encoder.encoders["visual"].set_normalisation(np.full(4, 0.1), np.full(4, 2.0))
    model = Student(encoder, nn.Linear(8, len(CLASSES))).eval()
    meta = {
        "method": "amid", "classes": CLASSES, "target": ["audio", "visual"],
        "auxiliary": ["text"], "feature_dims": DIMS, "max_steps": None, "dataset": "toy",
        "fold": None, "seed": 0, "module": "student",
        "arch": {"encoder": encoder.config(), "num_classes": len(CLASSES)},
    }
    return model, meta


@pytest.fixture
def trained(tmp_path: Path) -> tuple[Path, Student, dict[str, list[np.ndarray]], list[str]]:
    """A run folder (student.safetensors/json, config.json) and the caches it was trained on."""
    run = tmp_path / "runs" / "amid"
    run.mkdir(parents=True)
    model, meta = _student()
    save_module(model, meta, run, "student")
    cache_dir = tmp_path / "cache"
    (run / "config.json").write_text(json.dumps({"method": "amid", "config": {
        "dataset": {"name": "toy", "cache_dir": str(cache_dir), "target": ["audio", "visual"]},
        "extract": {"visual": {"extractor": "fx"}, "audio": {"extractor": "fx"}},
    }}))
    rng = np.random.default_rng(0)
    ids = [f"s{k}" for k in range(7)]
    seqs = {m: [rng.normal(size=(int(rng.integers(1, 6)), d)).astype(np.float32) for _ in ids]
            for m, d in DIMS.items()}
    for m in DIMS:
        write_cache(cache_path(cache_dir, "toy", m, "fx"), ids, seqs[m],
                    {"modality": m, "extractor": "fx", "model": "none", "params": {}})
    return run, model, seqs, ids


def _one_by_one(model: Student, seqs: dict[str, list[np.ndarray]], k: int) -> torch.Tensor:
    """The eager student on sample k alone (no padding at all): (1, C) logits."""
    inputs = {m: (torch.from_numpy(s[k])[None], torch.tensor([len(s[k])])) for m, s in seqs.items()}
    with torch.no_grad():
        return model(inputs)[1]


def test_predict_cli_writes_csv_and_h5_matching_the_eager_model(trained, tmp_path: Path) -> None:
    run, model, seqs, ids = trained
    out = tmp_path / "preds.csv"
    cache_dir = tmp_path / "cache" / "toy"
    result = CliRunner().invoke(predict_app, [
        str(run), "--cache", f"visual={cache_dir / 'visual__fx.h5'}",
        "--cache", f"audio={cache_dir / 'audio__fx.h5'}", "--out", str(out), "--batch-size", "3",
    ])
    assert result.exit_code == 0, result.output
    table = pd.read_csv(out)
    # no true labels with caches alone: the predicted class, no `label` column
    assert list(table.columns) == ["sample_id", "predicted", "prob_cat", "prob_dog", "prob_eel"]
    assert table["sample_id"].tolist() == ids
    expected = torch.cat([_one_by_one(model, seqs, k) for k in range(len(ids))]).softmax(1)
    np.testing.assert_allclose(table.iloc[:, 2:].to_numpy(), expected.numpy(), atol=1e-5)
    assert table["predicted"].tolist() == [CLASSES[i] for i in expected.argmax(1).tolist()]
    with h5py.File(out.with_suffix(".h5"), "r") as f:
        assert list(f["ids"].asstr()[...]) == ids
        assert f["embeddings"].shape == (7, 8)
        np.testing.assert_allclose(f["probabilities"][...], expected.numpy(), atol=1e-5)
        assert json.loads(f.attrs["classes"]) == CLASSES


def test_predict_defaults_to_the_runs_own_caches(trained, tmp_path: Path) -> None:
    run, _, _, ids = trained
    out = tmp_path / "p.csv"
    result = CliRunner().invoke(app, ["predict", str(run), "--out", str(out),
                                      "--h5", str(tmp_path / "x.h5")])
    assert result.exit_code == 0, result.output
    assert pd.read_csv(out)["sample_id"].tolist() == ids and (tmp_path / "x.h5").is_file()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--cache", "visual=V"], r"needs modality audio; pass --cache audio=PATH"),
        (["--cache", "audio=A"], r"needs modality visual; pass --cache visual=PATH"),
        (["--cache", "visual"], r"expected MODALITY=PATH"),
        (["--cache", "visual=V", "--cache", "audio=A", "--cache", "text=T"], r"drop --cache text"),
    ],
)
def test_predict_user_errors_exit_2_without_traceback(trained, args, message) -> None:
    run, *_ = trained
    result = CliRunner().invoke(predict_app, [str(run), *args])
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    import re

    assert re.search(message, result.output), result.output


def test_predict_wrong_feature_dim(trained, tmp_path: Path) -> None:
    run, *_ = trained
    cache_dir = tmp_path / "cache" / "toy"
    # a visual cache of the right extractor but 3-d features (the student takes 4)
    narrow = write_cache(tmp_path / "narrow.h5", ["s0"], [np.zeros((2, 3), np.float32)],
                         {"modality": "visual", "extractor": "fx", "model": "none",
                          "params": {}})
    result = CliRunner().invoke(predict_app, [
        str(run), "--cache", f"visual={narrow}", "--cache", f"audio={cache_dir / 'audio__fx.h5'}",
    ])
    assert result.exit_code == 2 and "dim 3" in result.output, result.output


def test_torchscript_export_matches_eager_on_new_shapes(trained, tmp_path: Path) -> None:
    run, model, _, _ = trained
    result = CliRunner().invoke(app, ["export", str(run), "--format", "torchscript",
                                      "--out", str(tmp_path / "s.pt")])
    assert result.exit_code == 0, result.output
    scripted, meta = load_torchscript(tmp_path / "s.pt")
    assert meta["inputs"] == ["x_audio", "len_audio", "x_visual", "len_visual"]
    assert meta["classes"] == CLASSES
    # another batch size and length than the trace's example (3 x 5)
    gen = torch.Generator().manual_seed(1)
    xv, xa = torch.randn(6, 9, 4, generator=gen), torch.randn(6, 2, 3, generator=gen)
    lv, la = torch.tensor([9, 1, 4, 7, 2, 9]), torch.tensor([2, 1, 2, 1, 1, 2])
    with torch.no_grad():
        emb, logits = model({"visual": (xv, lv), "audio": (xa, la)})
        got = scripted(xa, la, xv, lv)
    torch.testing.assert_close(got[0], emb, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got[1], logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got[2], logits.softmax(1), atol=1e-5, rtol=1e-5)
    sha = hashlib.sha256((tmp_path / "s.pt").read_bytes()).hexdigest()  # the bytes it names
    assert json.loads(Path(f"{tmp_path / 's.pt'}.json").read_text()) == {**meta, "sha256": sha}


def test_onnx_without_the_package_is_a_clear_error(trained, monkeypatch) -> None:
    run, *_ = trained
    real = export_mod.importlib.util.find_spec
    monkeypatch.setattr(export_mod.importlib.util, "find_spec",
                        lambda name, *a: None if name == "onnx" else real(name, *a))
    with pytest.raises(AmidError, match=r"needs the `onnx` package"):
        export_student(run, "onnx")
    with pytest.raises(AmidError, match="unknown export format 'tflite'"):
        export_student(run, "tflite")
