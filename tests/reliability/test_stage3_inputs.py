"""amid-predict and export refuse broken or mismatched inputs (issue 14 item 5, issue 12 item 7).

Cause: stage three trusted what a run folder and a cache said about themselves.
The weights (NaN / inf, a safetensors header whose dtype was edited), the
cache's extractor identity (modality, extractor, model, every parameter)
against the one the student was trained on, and config.json's shape are now
checked once, in the readers every command shares (`load_weights`,
`amid.evaluate.runfolder`), so predict and export refuse the same things.
"""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from typer.testing import CliRunner

from amid.cache import FeatureCache, write_cache
from amid.distill.inference import save_module
from amid.distill.models import MultiModalEncoder, Student
from amid.evaluate.cli import app as evaluate_app
from amid.evaluate.cli import predict_app
from amid.extract.extractors import build_extractor

from .conftest import assert_user_error

runner = CliRunner()
CLASSES = ["cat", "dog", "eel"]
IDS = [f"clip{k}" for k in range(6)]
TRAINED_AT = {"grid": 2, "fps": 2.0}  # pixels, 2 x 2 cells: 4-d features


def identity(**params) -> dict:
    """What the training side records for a pixels cache made with these params."""
    return build_extractor("pixels", {**TRAINED_AT, **params}).identity()


def features(seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.random((int(rng.integers(1, 5)), 4)).astype(np.float32) for _ in IDS]


def make_run(root: Path, *, inputs: bool = True) -> tuple[Path, Student, Path]:
    """A run folder as amid-train writes it (student + config.json), and its training cache.

    With `inputs`, student.json and config.json record the training cache's
    path, identity and fingerprint (the record the trainer writes).
    """
    cache = write_cache(root / "cache" / "toy" / "visual__pixels.h5", IDS, features(),
                        identity())
    torch.manual_seed(0)
    spec = {"visual": dict(in_dim=4, out_dim=8, kind="gru", hidden=6, layers=1,
                           bidirectional=False, dropout=0.0)}
    encoder = MultiModalEncoder(spec, dim=8)
    model = Student(encoder, nn.Linear(8, len(CLASSES))).eval()
    record = {"visual": {"cache": str(cache), "identity": identity(),
                         "fingerprint": hashlib.sha256(cache.read_bytes()).hexdigest()}}
    meta = {"method": "amid", "classes": CLASSES, "target": ["visual"], "auxiliary": ["audio"],
            "feature_dims": {"visual": 4}, "max_steps": None, "dataset": "toy", "fold": None,
            "seed": 0, "module": "student",
            "arch": {"encoder": encoder.config(), "num_classes": len(CLASSES)}}
    if inputs:
        meta["inputs"] = record
    run = root / "runs" / "amid"
    run.mkdir(parents=True)
    save_module(model, meta, run, "student")
    config = {"method": "amid", "config": {
        "dataset": {"name": "toy", "cache_dir": str(root / "cache"), "target": ["visual"]},
        "extract": {"visual": {"extractor": "pixels", "params": TRAINED_AT},
                    "audio": {"extractor": "logmel", "params": {}}}}}
    if inputs:
        config["inputs"] = record
    (run / "config.json").write_text(json.dumps(config))
    return run, model, cache


@pytest.fixture
def run(tmp_path: Path) -> Path:
    return make_run(tmp_path)[0]


def _predict(run: Path, *args: str):
    return runner.invoke(predict_app, [str(run), *args, "-o", str(run.parent / "p.csv")])


def _export(run: Path, fmt: str):
    return runner.invoke(evaluate_app, ["export", str(run), "--format", fmt, "-o",
                                        str(run.parent / f"s.{fmt}")])


# ------------------------------------------------------------------ weights
def _rewrite(path: Path, edit) -> None:
    tensors = load_file(str(path))
    edit(tensors)
    save_file(tensors, str(path), metadata={"module": "student"})


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nan_or_inf_weights_are_refused_by_predict_and_export(run: Path, bad: float) -> None:
    def poison(tensors):
        tensors["classifier.weight"][1, 2] = bad

    _rewrite(run / "student.safetensors", poison)
    for result in (_predict(run), _export(run, "torchscript"), _export(run, "onnx")):
        assert_user_error(result, "student.safetensors", "'classifier.weight'",
                          "NaN or infinite")
    assert not (run.parent / "p.csv").exists() and not (run.parent / "s.torchscript").exists()


def test_safetensors_header_dtype_edited_f32_to_i32_is_refused(run: Path) -> None:
    path = run / "student.safetensors"
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    victim = sorted(k for k in header if k != "__metadata__")[0]
    header[victim]["dtype"] = "I32"  # same byte length: the file still loads
    text = json.dumps(header, separators=(",", ":")).encode().ljust(n)
    path.write_bytes(data[:8] + text + data[8 + n:])
    assert load_file(str(path))[victim].dtype == torch.int32  # what torch now reads
    for result in (_predict(run), _export(run, "torchscript")):
        assert_user_error(result, "student.safetensors", f"{victim!r} is stored as I32",
                          "module's is F32")


# ------------------------------------------------------------------ caches
def _cache(tmp_path: Path, ident: dict, name: str = "new.h5") -> Path:
    return write_cache(tmp_path / name, IDS, features(1), ident)


@pytest.mark.parametrize(
    ("ident", "named"),
    [
        # the case: attributes of an audio logmel cache, same dim
        ({"modality": "audio", "extractor": "logmel", "model": "none", "params": {}},
         ["modality: expected 'visual', cache has 'audio'",
          "extractor: expected 'pixels', cache has 'logmel'"]),
        (identity(max_frames=1), ["params.max_frames: expected 64, cache has 1"]),
        (identity(fps=4.0), ["params.fps: expected 2.0, cache has 4.0"]),
        ({**identity(), "model": "other-weights"}, ["model: expected"]),
    ],
    ids=["other modality and extractor", "max_frames=1", "fps 4 for fps 2", "other model"],
)
def test_cache_made_otherwise_is_refused_naming_the_keys(run: Path, tmp_path: Path, ident,
                                                         named) -> None:
    cache = _cache(tmp_path, ident)
    result = _predict(run, "--cache", f"visual={cache}")
    assert_user_error(result, str(cache), "not made like the visual features", *named)
    assert not (run.parent / "p.csv").exists()


def test_only_precision_may_differ(run: Path, tmp_path: Path) -> None:
    ident = identity()
    ident["params"]["precision"] = "bf16"  # extracted under autocast on a GPU
    cache = _cache(tmp_path, ident)
    result = _predict(run, "--cache", f"visual={cache}")
    assert result.exit_code == 0, result.output
    assert pd.read_csv(run.parent / "p.csv")["sample_id"].tolist() == IDS


def test_identity_is_checked_before_the_features_are_loaded(run: Path, tmp_path: Path,
                                                            monkeypatch) -> None:
    loaded = []
    import amid.evaluate.predict as predict_module

    real = predict_module.read_cache
    monkeypatch.setattr(predict_module, "read_cache", lambda p: loaded.append(p) or real(p))
    assert _predict(run, "--cache", f"visual={_cache(tmp_path, identity(fps=4.0))}"
                    ).exit_code == 2
    assert loaded == []


def test_older_run_without_inputs_predicts_with_a_warning(tmp_path: Path) -> None:
    run, _, cache = make_run(tmp_path, inputs=False)
    other = _cache(tmp_path, identity(fps=4.0))
    result = _predict(run, "--cache", f"visual={other}")
    assert result.exit_code == 0, result.output
    warning = [ln for ln in result.output.splitlines() if ln.startswith("WARNING")]
    assert len(warning) == 1 and str(other) in warning[0]
    assert "cannot check the extractor parameters" in warning[0]
    # what can be checked still is: the modality and the extractor name of config.json
    wrong = _cache(tmp_path, {"modality": "visual", "extractor": "timm", "model": "x",
                              "params": {}}, "wrong.h5")
    assert_user_error(_predict(run, "--cache", f"visual={wrong}"),
                      "extractor: expected 'pixels', cache has 'timm'")


# ---------------------------------------------------------------- config.json
TAMPERED = {
    "a list": ([], "expected a JSON object with a `config` mapping, found a list"),
    "config a list": ({"config": []}, "`config` must be a mapping, found a list"),
    "dataset a string": ({"config": {"dataset": "toy", "extract": {}}},
                         "`config.dataset` must be a mapping, found a string"),
    "extract a string": ({"config": {"dataset": {"name": "toy"}, "extract": "pixels"}},
                         "`config.extract` must be a mapping, found a string"),
    "no extractor": ({"config": {"dataset": {"name": "toy"},
                                 "extract": {"visual": {"params": {}}}}},
                     "`config.extract.visual.extractor` must name an extractor"),
}


@pytest.mark.parametrize("case", list(TAMPERED))
def test_tampered_config_json_is_one_line_error(tmp_path: Path, case: str) -> None:
    run, _, _ = make_run(tmp_path, inputs=False)  # the run's caches come from config.json
    content, message = TAMPERED[case]
    (run / "config.json").write_text(json.dumps(content))
    assert_user_error(_predict(run), str(run / "config.json"), message)


def test_predict_builds_the_id_index_once_per_modality(run: Path, monkeypatch) -> None:
    """Linear, not quadratic: the id -> row map was rebuilt for every id (issue 14 item 14)."""
    calls = []
    real = FeatureCache.index
    monkeypatch.setattr(FeatureCache, "index", lambda self: calls.append(1) or real(self))
    result = _predict(run)
    assert result.exit_code == 0, result.output
    assert len(calls) == 1 and len(pd.read_csv(run.parent / "p.csv")) == len(IDS)
