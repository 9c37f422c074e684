"""Applying a trained student to target-modality caches alone (the run's deliverable).

`predict` needs only the caches of the student's modalities: no manifest,
labels or auxiliary modalities. The model is loaded and run by the trainer's
own inference module (`amid.distill.inference`), so the architecture is
defined in exactly one place. Outputs: a CSV (sample_id, predicted label, one
`prob_<class>` column per class) and an HDF5 file (ids, embeddings,
probabilities, logits) for downstream retrieval.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pandas as pd

from amid.cache import FeatureCache, cache_path, read_cache
from amid.errors import AmidError, CheckpointError


def _inference() -> Any:
    try:
        from amid.distill import inference
    except ImportError as exc:  # the trainer stage is not installed or incomplete
        raise AmidError(f"amid.distill.inference is not available ({exc})") from None
    return inference


def _meta(meta: Any, key: str) -> Any:
    if isinstance(meta, Mapping):
        return meta.get(key)
    return getattr(meta, key, None)


def student_modalities(run_dir: Path, meta: Any = None) -> list[str]:
    """The student's target modalities, from its metadata or the run's config."""
    for key in ("target", "modalities", "target_modalities"):
        value = _meta(meta, key) if meta is not None else None
        if value:
            return list(value)
    config = _run_config(run_dir)
    return list(config.get("dataset", {}).get("target", []))


def _run_config(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "config.json"
    if not path.is_file():
        raise CheckpointError(f"{run_dir}: no config.json (is this an `amid-train` run folder?)")
    try:
        return json.loads(path.read_text(encoding="utf-8")).get("config", {})
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: not valid JSON ({exc})") from None


def default_caches(run_dir: Path, modalities: list[str]) -> dict[str, Path]:
    """The caches the run was trained on (from its config.json), one per target modality."""
    config = _run_config(run_dir)
    dataset = config.get("dataset", {})
    extract = config.get("extract", {})
    caches = {}
    for modality in modalities:
        if modality not in extract:
            raise AmidError(
                f"{run_dir}/config.json has no extract.{modality}; pass --cache {modality}=PATH"
            )
        caches[modality] = cache_path(
            dataset.get("cache_dir", "cache"), dataset.get("name", ""), modality,
            extract[modality]["extractor"],
        )
    return caches


def parse_cache_args(values: list[str]) -> dict[str, Path]:
    """`modality=path` pairs from the command line."""
    caches: dict[str, Path] = {}
    for value in values:
        modality, sep, path = value.partition("=")
        if not sep or not modality or not path:
            raise AmidError(f"--cache {value!r}: expected MODALITY=PATH, e.g. visual=cache/x.h5")
        if modality in caches:
            raise AmidError(f"--cache names modality {modality!r} twice")
        caches[modality] = Path(path)
    return caches


def class_names(run_dir: Path, meta: Any, n_classes: int) -> list[str]:
    classes = _meta(meta, "classes")
    if not classes:
        student_json = run_dir / "student.json"
        if student_json.is_file():
            classes = json.loads(student_json.read_text(encoding="utf-8")).get("classes")
    if not classes or len(classes) != n_classes:
        return [str(c) for c in range(n_classes)]
    return [str(c) for c in classes]


def predict(
    run_dir: str | Path,
    caches: Mapping[str, str | Path] | None = None,
    batch_size: int = 256,
    device: str = "cpu",
) -> tuple[dict[str, Any], list[str]]:
    """Run the student on the caches; returns (predict_student's dict, class names)."""
    run_dir = Path(run_dir)
    inference = _inference()
    model, meta = inference.load_student(run_dir, device=device)
    needed = student_modalities(run_dir, meta)
    paths = {k: Path(v) for k, v in (caches or {}).items()}
    if not paths:
        paths = default_caches(run_dir, needed)
    missing = [m for m in needed if m not in paths]
    if missing:
        raise AmidError(
            f"the student of {run_dir} needs modality {', '.join(missing)}; pass "
            + " ".join(f"--cache {m}=PATH" for m in missing)
        )
    extra = sorted(set(paths) - set(needed)) if needed else []
    if extra:
        raise AmidError(
            f"the student of {run_dir} uses only {', '.join(needed)}; "
            f"drop --cache {', '.join(extra)}"
        )
    loaded: dict[str, FeatureCache] = {m: read_cache(p) for m, p in paths.items()}
    result = inference.predict_student(model, meta, loaded, batch_size=batch_size)
    probs = np.asarray(result["probabilities"])
    return result, class_names(run_dir, meta, probs.shape[1])


def predictions_table(result: dict[str, Any], classes: list[str]) -> pd.DataFrame:
    probs = np.asarray(result["probabilities"], dtype=np.float64)
    labels = result.get("labels")
    if labels is None:
        labels = [classes[k] for k in probs.argmax(axis=1)]
    table = pd.DataFrame({"sample_id": list(result["ids"]), "label": [str(x) for x in labels]})
    for k, name in enumerate(classes):
        table[f"prob_{name}"] = probs[:, k]
    return table


def write_predictions(
    result: dict[str, Any], classes: list[str], csv_path: str | Path,
    h5_path: str | Path | None = None,
) -> list[Path]:
    """CSV of labels and probabilities; HDF5 with ids, embeddings, probabilities, logits."""
    csv_path = Path(csv_path)
    h5 = Path(h5_path) if h5_path is not None else csv_path.with_suffix(".h5")
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    predictions_table(result, classes).to_csv(csv_path, index=False)
    h5.parent.mkdir(parents=True, exist_ok=True)
    tmp = h5.with_name(f".{h5.name}.{os.getpid()}.tmp")
    with h5py.File(tmp, "w") as f:
        f.create_dataset("ids", data=list(result["ids"]), dtype=h5py.string_dtype("utf-8"))
        f.create_dataset("embeddings", data=np.asarray(result["embeddings"], dtype=np.float32))
        f.create_dataset(
            "probabilities", data=np.asarray(result["probabilities"], dtype=np.float32)
        )
        if result.get("logits") is not None:
            f.create_dataset("logits", data=np.asarray(result["logits"], dtype=np.float32))
        f.create_dataset("labels", data=[str(x) for x in predictions_table(result, classes)
                                         ["label"]], dtype=h5py.string_dtype("utf-8"))
        f.attrs["classes"] = json.dumps(classes)
    os.replace(tmp, h5)
    return [csv_path, h5]
