"""Prediction on new media in one command: a folder or CSV of clips -> predictions.

    amid-predict runs/amid --media new_clips/ -o preds.csv
    amid-predict runs/amid --media new.csv --root /data/new -o preds.csv --cache-dir cache/new

1. A manifest of the new media (`manifest_for`): a folder is scanned (one
   sample per file stem: video, audio and `.txt` transcript files sharing a
   stem are one sample; `sample_id` is the path below the folder without its
   extension), or a manifest CSV is read. Labels, splits and folds are not
   needed: rows may leave them empty. A label given is kept and written beside
   the prediction.
2. The student's target modalities are extracted (`extract_caches`) with the
   extractor the run's training caches were made with: the identity recorded
   in student.json (`inputs`), or the run's config.json `extract.<modality>`
   for older runs, through the stage-one library (`build_extractor`,
   `run_extraction`), into `--cache-dir` (kept, and reused by a rerun) or a
   scratch folder removed afterwards.
3. `amid.evaluate.predict` checks and runs them like any other caches.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import pandas as pd

from amid.cache import read_errors
from amid.devices import resolve_device
from amid.errors import AmidError, ConfigError, ManifestError
from amid.evaluate.predict import Student
from amid.evaluate.runfolder import IGNORED_IDENTITY_PARAMS, expected_identity, recorded_inputs
from amid.extract.extractors import build_extractor
from amid.extract.extractors.weights import TorchExtractor
from amid.extract.run import run_extraction
from amid.manifest import Manifest, read_manifest, validate

log = logging.getLogger(__name__)

VIDEO = (".avi", ".mp4", ".mkv", ".mov", ".webm", ".mpg", ".mpeg", ".m4v", ".wmv", ".flv")
AUDIO = (".wav", ".flac", ".mp3", ".ogg", ".m4a", ".opus", ".aac")
TEXT = (".txt",)
# the manifest columns a modality's media can come from (audio: a video's soundtrack too)
SOURCES = {"visual": ("video_path",), "audio": ("audio_path", "video_path"), "text": ("text",)}


def manifest_for(media: Path, target: list[str], root: Path | None = None) -> Manifest:
    """The manifest of the new media: a folder scanned, or a manifest CSV / Parquet read."""
    media = Path(media)
    if media.is_dir():
        if root is not None:
            raise AmidError("--root applies to a manifest CSV; a folder given to --media is "
                            "its own root")
        return Manifest(scan_folder(media, target), media, media)
    if media.suffix.lower() in (".csv", ".parquet"):
        return read_manifest(media, root, require_labels=False)
    if not media.exists():
        raise AmidError(f"--media {media} does not exist")
    raise AmidError(f"--media {media}: expected a folder of media files or a manifest CSV "
                    "(columns sample_id, video_path / audio_path / text, ...)")


def _column(path: Path) -> str | None:
    ext = path.suffix.lower()
    return ("video_path" if ext in VIDEO else "audio_path" if ext in AUDIO
            else "text" if ext in TEXT else None)


def scan_folder(folder: Path, target: list[str]) -> pd.DataFrame:
    """One unlabeled manifest row per file stem below `folder`, in path order.

    Only files a target modality can use are taken, so a README or a stray
    image beside the clips does not become a sample.
    """
    usable = {c for m in target for c in SOURCES.get(m, ())}
    rows: dict[str, dict[str, str]] = {}
    broken = []
    for path in sorted(folder.rglob("*")):
        column = _column(path)
        if column is None or column not in usable \
                or any(part.startswith(".") for part in path.relative_to(folder).parts):
            continue
        if path.is_symlink() and not path.exists():  # is_file() is False: it was skipped
            broken.append(f"{path} -> {os.readlink(path)}")  # unnamed, and 0 errors logged
            continue
        if not path.is_file():
            continue
        rel = path.relative_to(folder)
        sid = rel.with_suffix("").as_posix()
        row = rows.setdefault(sid, {"sample_id": sid, "label": "", "split": ""})
        if row.get(column):
            raise ManifestError(f"{folder}: sample {sid!r} has two {column} files "
                                f"({row[column] if column != 'text' else 'a .txt'} and "
                                f"{rel.as_posix()}); rename one")
        if column == "text":
            try:
                row["text"] = path.read_text(encoding="utf-8").strip()
            except UnicodeDecodeError as exc:
                raise ManifestError(f"{path}: not UTF-8 text (byte {exc.start})") from None
        else:
            row[column] = rel.as_posix()
    if broken:
        log.warning("%d media file(s) below %s are broken symbolic links, not predicted: %s",
                    len(broken), folder, "; ".join(broken[:10]) + (" ..." if len(broken) > 10
                                                                  else ""))
    if not rows:
        kinds = sorted({e for m in target for c in SOURCES.get(m, ())
                        for e in {"video_path": VIDEO, "audio_path": AUDIO, "text": TEXT}[c]})
        raise ManifestError(f"{folder}: no media file for the student's modalities "
                            f"({', '.join(target)}): looked for {' '.join(kinds)}")
    return validate(pd.DataFrame(list(rows.values())), str(folder), folder,
                    require_labels=False)


def known_labels(manifest: Manifest) -> dict[str, str]:
    """sample_id -> label for the rows that give one."""
    df = manifest.df
    return {sid: lab for sid, lab in zip(df["sample_id"], df["label"], strict=True) if lab}


def _extractor_spec(student: Student, modality: str) -> tuple[str, dict[str, Any], dict]:
    """(extractor name, params, config.json's extract section) the training caches used."""
    spec = (student.config.extract(modality) if student.config else None) or {}
    inputs = recorded_inputs(student.run_dir, student.meta)
    identity = expected_identity(*inputs, modality) if inputs else None
    if identity is not None and isinstance(identity.get("extractor"), str):
        params = {k: v for k, v in (identity.get("params") or {}).items()
                  if k not in IGNORED_IDENTITY_PARAMS}
        return identity["extractor"], params, spec
    if spec:
        return spec["extractor"], dict(spec.get("params") or {}), spec
    where = student.config.path if student.config else student.run_dir / "config.json"
    raise AmidError(f"{where}: no record of how the student's {modality} features were made "
                    f"(no inputs.{modality} in student.json, no extract.{modality}); extract "
                    f"the media yourself and pass --cache {modality}=PATH")


def extract_caches(student: Student, manifest: Manifest, cache_dir: Path, device: str,
                   progress: bool) -> tuple[dict[str, Path], dict[str, dict[str, str]]]:
    """Each target modality of `manifest` extracted into `cache_dir` as the run's caches were.

    Returns the cache paths and, per modality, the samples that could not be
    decoded with the reason (the caches' errors sidecars).
    """
    torch_device = resolve_device(device, "--device")
    paths, failed = {}, {}
    for modality in student.target:
        name, params, spec = _extractor_spec(student, modality)
        try:
            extractor = build_extractor(name, params, f"the run's {modality} extractor params")
        except ConfigError:
            if not spec:
                raise
            # an identity recorded by another version may hold keys this one's
            # extractor does not take; config.json's section is what was asked for
            # (the cache made from it is still checked against the identity)
            name = spec["extractor"]
            extractor = build_extractor(name, dict(spec.get("params") or {}),
                                        f"{student.run_dir / 'config.json'}: extract.{modality}"
                                        ".params")
        extractor.to(torch_device)
        if isinstance(extractor, TorchExtractor):
            amp = spec.get("amp", "none")
            extractor.amp = None if amp == "none" else amp
        out = cache_dir / f"{modality}__{name}.h5"
        report = run_extraction(manifest, modality, extractor, out,
                                batch_size=int(spec.get("batch_size", 16)),
                                num_workers=int(spec.get("num_workers", 0)),
                                dtype=str(spec.get("dtype", "float32")), progress=progress)
        log.info("%s: %s; %d samples (%d extracted now), %d errors", report.path,
                 report.status, report.written, report.extracted, report.errors)
        paths[modality] = report.path
        failed[modality] = read_errors(report.path)
    return paths, failed


def describe_failures(failed: dict[str, dict[str, str]], total: int) -> str | None:
    """One warning naming the samples no prediction could be made for, or None."""
    bad: dict[str, str] = {}
    for modality, errors in failed.items():
        for sid, reason in errors.items():
            bad.setdefault(sid, f"{modality}: {reason}")
    if not bad:
        return None
    shown = "; ".join(f"{sid} ({why})" for sid, why in list(bad.items())[:5])
    more = f"; and {len(bad) - 5} more" if len(bad) > 5 else ""
    return f"{len(bad)} of {total} sample(s) could not be decoded, no prediction: {shown}{more}"
