"""ONNX export of a saved student, run with onnx's pure-python reference evaluator.

The expectation is the eager student run on each sample alone, unpadded, so the
padding handling inside the exported graph is checked too: the padded steps of
the ONNX inputs hold large junk values that must not reach any output.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx.reference import ReferenceEvaluator
from torch import nn
from typer.testing import CliRunner

from amid.distill.inference import save_module
from amid.distill.models import MultiModalEncoder, Student
from amid.evaluate.cli import app
from amid.evaluate.export import export_student

CLASSES = ["cat", "dog", "eel", "fox"]
DIMS = {"audio": 3, "visual": 5}
INPUTS = ["x_audio", "len_audio", "x_visual", "len_visual"]
JUNK = 30.0  # written into the padded steps (far outside the N(0, 1) data)


def _save_run(run: Path, kind: str, bidirectional: bool, layers: int) -> Student:
    """A run folder holding a random student whose modalities both use `kind`."""
    torch.manual_seed(1)
    spec = {m: dict(in_dim=d, out_dim=6, kind=kind, hidden=7, layers=layers,
                    bidirectional=bidirectional, dropout=0.0) for m, d in DIMS.items()}
    encoder = MultiModalEncoder(spec, dim=6)
    encoder.encoders["visual"].set_normalisation(np.linspace(-0.5, 0.5, 5), np.full(5, 1.5))
    model = Student(encoder, nn.Linear(6, len(CLASSES))).eval()
    meta = {
        "method": "amid", "classes": CLASSES, "target": list(DIMS), "auxiliary": ["text"],
        "feature_dims": DIMS, "max_steps": None, "dataset": "toy", "fold": None, "seed": 0,
        "module": "student", "arch": {"encoder": encoder.config(), "num_classes": len(CLASSES)},
    }
    run.mkdir(parents=True)
    save_module(model, meta, run, "student")
    return model


def _batch(lengths: dict[str, list[int]], seed: int) -> tuple[dict, dict[str, np.ndarray]]:
    """Unpadded sequences per modality, and the padded feed for the ONNX model."""
    rng = np.random.default_rng(seed)
    seqs = {m: [rng.normal(size=(n, DIMS[m])).astype(np.float32) for n in ns]
            for m, ns in lengths.items()}
    feed = {}
    for m, items in seqs.items():
        steps = max(len(s) for s in items)
        x = np.full((len(items), steps, DIMS[m]), JUNK, dtype=np.float32)
        for i, s in enumerate(items):
            x[i, :len(s)] = s
        feed[f"x_{m}"] = x
        feed[f"len_{m}"] = np.array([len(s) for s in items], dtype=np.int64)
    return seqs, feed


def _eager_one_by_one(model: Student, seqs: dict) -> tuple[np.ndarray, np.ndarray]:
    embs, logits = [], []
    n = len(next(iter(seqs.values())))
    with torch.no_grad():
        for k in range(n):
            inputs = {m: (torch.from_numpy(s[k])[None], torch.tensor([len(s[k])]))
                      for m, s in seqs.items()}
            e, lg = model(inputs)
            embs.append(e[0].numpy())
            logits.append(lg[0].numpy())
    return np.stack(embs), np.stack(logits)


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = np.exp(logits - logits.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


@pytest.mark.parametrize(
    ("kind", "bidirectional", "layers", "rnn_op"),
    [("gru", True, 2, "GRU"), ("lstm", False, 1, "LSTM"), ("pool", False, 1, None)],
)
def test_onnx_export_matches_eager_on_new_batch_and_lengths(
    tmp_path: Path, kind: str, bidirectional: bool, layers: int, rnn_op: str | None
) -> None:
    run = tmp_path / "run"
    model = _save_run(run, kind, bidirectional, layers)
    out = tmp_path / "s.onnx"
    result = CliRunner().invoke(app, ["export", str(run), "--format", "onnx", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert f"exported onnx -> {out}" in result.output

    graph = onnx.load(str(out))
    onnx.checker.check_model(graph, full_check=True)
    shapes = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim]
              for i in graph.graph.input}
    assert shapes == {"x_audio": ["batch", "steps_audio", 3], "len_audio": ["batch"],
                      "x_visual": ["batch", "steps_visual", 5], "len_visual": ["batch"]}
    ops = {n.op_type for n in graph.graph.node}
    # the recurrence stays one ONNX op (not unrolled over the example's length)
    assert (rnn_op in ops) if rnn_op else not ops & {"GRU", "LSTM", "RNN"}

    info = json.loads(Path(f"{out}.json").read_text())
    assert info["format"] == "onnx" and info["inputs"] == INPUTS
    assert info["outputs"] == ["embeddings", "logits", "probabilities"]
    assert info["classes"] == CLASSES

    session = ReferenceEvaluator(graph)
    # the export example is 3 x 5 steps; here 6 samples, modalities of unrelated lengths,
    # then a single one-step sample
    for lengths, seed in (({"audio": [2, 1, 7, 3, 7, 1], "visual": [9, 1, 4, 9, 2, 6]}, 2),
                          ({"audio": [1], "visual": [1]}, 3)):
        seqs, feed = _batch(lengths, seed)
        emb, logits, probs = session.run(None, feed)
        want_emb, want_logits = _eager_one_by_one(model, seqs)
        np.testing.assert_allclose(emb, want_emb, atol=1e-4, rtol=1e-4)
        np.testing.assert_allclose(logits, want_logits, atol=1e-4, rtol=1e-4)
        np.testing.assert_allclose(probs, _softmax(want_logits), atol=1e-5)


def test_onnx_export_defaults_to_exports_outside_the_run_folder(tmp_path: Path,
                                                               monkeypatch) -> None:
    """Issue 22 item 7: written into runs/amid (a DVC output), the export marked the
    train@amid stage changed; the default is exports/<run below runs/>/ now."""
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "runs" / "sweeps" / "alpha" / "seed=0"
    _save_run(run, "gru", False, 1)
    before = sorted(p.name for p in run.iterdir())
    path = export_student(Path("runs/sweeps/alpha/seed=0"), "onnx")
    assert path == Path("exports/sweeps/alpha/seed=0/student.onnx") and path.is_file()
    meta = json.loads(Path(f"{path}.json").read_text())
    assert meta["target"] == ["audio", "visual"]
    assert meta["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert sorted(p.name for p in run.iterdir()) == before  # nothing written into the run
    elsewhere = tmp_path / "elsewhere" / "myrun"  # not below runs/: the folder's name
    _save_run(elsewhere, "gru", False, 1)
    assert export_student(elsewhere, "onnx") == Path("exports/myrun/student.onnx")
