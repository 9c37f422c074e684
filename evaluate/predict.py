"""Applying a trained student to target-modality caches alone (the run's deliverable).

`predict` needs only the caches of the student's modalities: no manifest,
labels or auxiliary modalities. Each cache is checked against the identity
of the cache the student was trained on (`inputs` in student.json: modality,
extractor, model, every feature-changing parameter) before it is loaded, so
features made another way (fps 4 for a model trained at fps 2, another
extractor, another modality) are refused with the differing keys instead of
giving confident nonsense. The model is loaded and run by the trainer's own
inference module (`amid.distill.inference`), which refuses NaN/inf weights
and tensors whose dtype was edited.

Outputs (docs/outputs.md): a CSV (`sample_id`, `predicted`, `label` when the
true label is known, one `prob_<class>` column per class) and an HDF5 file
(ids, predicted, embeddings, probabilities, logits), each written atomically.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pandas as pd

from amid.cache import cache_path, read_cache, read_info
from amid.devices import resolve_device
from amid.distill.inference import load_student, predict_student
from amid.errors import AmidError, CheckpointError, OutputError
from amid.evaluate.runfolder import RunConfig, check_cache, expected_identity, recorded_inputs
from amid.faults import fault_point
from amid.storage import hdf5_estimate, nbytes, replace_together

log = logging.getLogger(__name__)


@dataclass
class Student:
    """A loaded student and what its run folder says about its inputs."""

    run_dir: Path
    model: Any
    meta: dict[str, Any]
    target: list[str]
    classes: list[str]
    config: RunConfig | None = None
    warnings: list[str] = field(default_factory=list)


def load(run_dir: str | Path, device: str = "cpu") -> Student:
    """The run's student, its target modalities and classes; config.json checked if present."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise AmidError(f"run folder {run_dir} does not exist (give the --out of amid-train)")
    torch_device = str(resolve_device(device, "--device"))
    model, meta = load_student(run_dir, device=torch_device)
    config = RunConfig(run_dir) if (run_dir / "config.json").exists() else None
    where = run_dir / "student.json"
    target = meta.get("target")
    if not isinstance(target, list) or not target or not all(isinstance(m, str) for m in target):
        raise CheckpointError(f"{where}: `target` must list the student's modalities")
    dims = meta.get("feature_dims")
    if not isinstance(dims, dict) or not all(isinstance(dims.get(m), int) for m in target):
        raise CheckpointError(f"{where}: `feature_dims` must give an integer dim for each of "
                              f"{', '.join(target)}")
    classes = meta.get("classes")
    if not isinstance(classes, list) or not classes:
        raise CheckpointError(f"{where}: `classes` must list the class names")
    return Student(run_dir, model, meta, list(target), [str(c) for c in classes], config)


def default_caches(student: Student) -> dict[str, Path]:
    """The caches the run was trained on: `inputs` when recorded, else from config.json."""
    found = recorded_inputs(student.run_dir, student.meta)
    caches = {}
    for modality in student.target:
        entry = found[0].get(modality) if found else None
        if isinstance(entry, dict) and isinstance(entry.get("cache"), str):
            caches[modality] = Path(entry["cache"])
            continue
        spec = student.config.extract(modality) if student.config else None
        if spec is None:
            where = student.config.path if student.config else student.run_dir / "config.json"
            raise AmidError(f"{where} has no extract.{modality}; pass --cache {modality}=PATH")
        cfg = student.config
        assert cfg is not None
        caches[modality] = cache_path(cfg.dataset_value("cache_dir", "cache"),
                                      cfg.dataset_value("name", ""), modality,
                                      spec["extractor"])
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


def check_inputs(student: Student, paths: Mapping[str, Path]) -> list[str]:
    """Refuse caches missing, superfluous or made otherwise; returns warnings to show."""
    missing = [m for m in student.target if m not in paths]
    if missing:
        raise AmidError(
            f"the student of {student.run_dir} needs modality {', '.join(missing)}; pass "
            + " ".join(f"--cache {m}=PATH" for m in missing)
        )
    extra = sorted(set(paths) - set(student.target))
    if extra:
        raise AmidError(f"the student of {student.run_dir} uses only "
                        f"{', '.join(student.target)}; drop --cache {', '.join(extra)}")
    inputs = recorded_inputs(student.run_dir, student.meta)
    warnings = []
    for modality in student.target:
        expected = expected_identity(*inputs, modality) if inputs else None
        spec = student.config.extract(modality) if student.config else None
        # attributes only: a refused cache is never loaded whole
        warning = check_cache(paths[modality], read_info(paths[modality]), modality, expected,
                              spec["extractor"] if spec else None)
        if warning:
            warnings.append(warning)
    return warnings


def predict(
    run_dir: str | Path | Student,
    caches: Mapping[str, str | Path] | None = None,
    batch_size: int = 256,
    device: str = "cpu",
) -> tuple[dict[str, Any], list[str]]:
    """Run the student on the caches; returns (predict_student's dict, class names).

    Caches default to those the run was trained on. Warnings (an older run
    whose cache identity cannot be checked) are logged.
    """
    student = run_dir if isinstance(run_dir, Student) else load(run_dir, device)
    paths = {k: Path(v) for k, v in (caches or {}).items()} or default_caches(student)
    for warning in check_inputs(student, paths):
        log.warning("%s", warning)
    loaded = {m: read_cache(p) for m, p in paths.items()}
    result = predict_student(student.model, student.meta, loaded,
                                          batch_size=batch_size)
    n_classes = np.asarray(result["probabilities"]).shape[1]
    classes = student.classes if len(student.classes) == n_classes else [
        str(c) for c in range(n_classes)]
    return result, classes


def predictions_table(result: dict[str, Any], classes: list[str],
                      labels: Mapping[str, str] | None = None) -> pd.DataFrame:
    """sample_id, predicted, label (only when some true label is known), prob_<class>..."""
    probs = np.asarray(result["probabilities"], dtype=np.float64)
    ids = [str(x) for x in result["ids"]]
    table = pd.DataFrame({"sample_id": ids,
                          "predicted": [classes[k] for k in probs.argmax(axis=1)]})
    if labels:
        table["label"] = [labels.get(sid, "") for sid in ids]
    for k, name in enumerate(classes):
        table[f"prob_{name}"] = probs[:, k]
    return table


def _write_h5(path: Path, table: pd.DataFrame, result: dict[str, Any],
              classes: list[str], csv_sha256: str) -> None:
    arrays = {name: np.asarray(result[name], dtype=np.float32)
              for name in ("embeddings", "probabilities", "logits")
              if result.get(name) is not None}
    ids = table["sample_id"].tolist()
    strings = h5py.string_dtype("utf-8")
    with h5py.File(path, "w") as f:
        f.create_dataset("ids", data=ids, dtype=strings)
        f.create_dataset("predicted", data=table["predicted"].tolist(), dtype=strings)
        if "label" in table:
            f.create_dataset("label", data=table["label"].tolist(), dtype=strings)
        for name, array in arrays.items():
            f.create_dataset(name, data=array)
        f.attrs["classes"] = json.dumps(classes)
        f.attrs["csv_sha256"] = csv_sha256  # the CSV written with it: a mixed pair shows


def _h5_size(table: pd.DataFrame, result: dict[str, Any]) -> int:
    arrays = [np.asarray(result[name], dtype=np.float32)
              for name in ("embeddings", "probabilities", "logits")
              if result.get(name) is not None]
    ids = table["sample_id"].tolist()
    # HDF5 segfaults when a write fails for lack of space: reserve first (amid.storage)
    return hdf5_estimate(nbytes(*arrays), 3 * len(ids), 3 * sum(len(s.encode()) for s in ids))


def write_predictions(
    result: dict[str, Any], classes: list[str], csv_path: str | Path,
    h5_path: str | Path | None = None, labels: Mapping[str, str] | None = None,
) -> list[Path]:
    """The predictions CSV and its HDF5 companion, replaced together.

    Both are written to temporaries first and renamed only when both are complete
    and both destinations can be replaced (`amid.storage.replace_together`): a failed
    write (full disk, read-only folder, an immutable file) keeps both previous files.
    The HDF5 records the SHA-256 of its CSV (`csv_sha256`), so a pair mixed by a kill
    between the two renames is refused by `read_predictions`.
    """
    csv_path = Path(csv_path)
    h5 = Path(h5_path) if h5_path is not None else csv_path.with_suffix(".h5")
    if h5.resolve() == csv_path.resolve():
        raise AmidError(f"--h5 {h5} is the CSV output itself; give another path")
    table = predictions_table(result, classes, labels)
    buffer = io.StringIO()
    table.to_csv(buffer, index=False)
    data = buffer.getvalue().encode("utf-8")
    with replace_together([h5, csv_path], OutputError,
                          reserve=[_h5_size(table, result), len(data)]) as (tmp_h5, tmp_csv):
        _write_h5(tmp_h5, table, result, classes, hashlib.sha256(data).hexdigest())
        tmp_csv.write_bytes(data)
        fault_point("predictions-csv-written")  # crash tests: killed before the renames
    return [csv_path, h5]


def read_predictions(csv_path: str | Path, h5_path: str | Path | None = None
                     ) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """The CSV and the HDF5's arrays of one `amid-predict`; a pair that was not written
    together (its `csv_sha256` is another CSV's) is refused naming both files."""
    csv_path = Path(csv_path)
    h5 = Path(h5_path) if h5_path is not None else csv_path.with_suffix(".h5")
    data = csv_path.read_bytes()
    with h5py.File(h5, "r") as f:
        recorded = f.attrs.get("csv_sha256")
        arrays = {k: f[k][...] for k in f if isinstance(f[k], h5py.Dataset)}
    if recorded != hashlib.sha256(data).hexdigest():
        raise OutputError(f"{h5} was not written with {csv_path} (another amid-predict, or one "
                          "killed between its two files): run amid-predict again")
    return pd.read_csv(io.BytesIO(data), keep_default_na=False), arrays
