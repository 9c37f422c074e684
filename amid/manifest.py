"""The dataset manifest (docs/data.md): one row per sample, validated on load.

Errors name the file and the line (the header is line 1), so a researcher can
open the CSV and fix it. Media paths must stay inside the dataset root,
lexically (`../`) and after following symlinks.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from amid.errors import ManifestError
from amid.storage import write_text

COLUMNS = ["sample_id", "label", "split", "fold", "audio_path", "video_path", "start", "end",
           "text"]
REQUIRED = ["sample_id", "label"]
SPLITS = ("train", "val", "test")
# Optional: the audio file's own segment, replacing start/end for the audio modality.
AUDIO_SEGMENT = ("audio_start", "audio_end")
# Which manifest column holds each modality's media; audio falls back to the
# video's soundtrack when a dataset ships no separate audio files (UCF-101).
MEDIA_COLUMN = {"audio": "audio_path", "visual": "video_path"}
_SHOW = 10  # rows listed in an error message before "..."


def _lines(index: pd.Index) -> str:
    rows = [str(int(i) + 2) for i in index[:_SHOW]]
    more = f" (and {len(index) - _SHOW} more)" if len(index) > _SHOW else ""
    return ", ".join(rows) + more


def _refuse(bad: pd.Index, source: object, problem: str, after: str = "") -> None:
    """`<source>: <problem> on line(s) <lines><after>` if any row is `bad`."""
    if len(bad):
        raise ManifestError(f"{source}: {problem} on line(s) {_lines(bad)}{after}")


@dataclass
class Manifest:
    """A validated manifest; `root` is the folder media paths are relative to."""

    df: pd.DataFrame
    path: Path
    root: Path

    def __len__(self) -> int:
        return len(self.df)

    @property
    def ids(self) -> list[str]:
        return self.df["sample_id"].tolist()

    @property
    def classes(self) -> list[str]:
        return sorted(self.df["label"].unique().tolist())

    def label_indices(self, classes: list[str] | None = None) -> np.ndarray:
        lookup = {c: i for i, c in enumerate(classes or self.classes)}
        return self.df["label"].map(lookup).to_numpy(dtype=np.int64)

    def media_path(self, row: int, modality: str) -> Path | None:
        """Absolute path of a row's media for `modality`, or None (text, or absent)."""
        column = MEDIA_COLUMN.get(modality)
        if column is None:
            return None
        value = self.df.at[row, column]
        if not value and modality == "audio":
            value = self.df.at[row, "video_path"]
        return self.root / value if value else None

    def split_mask(self, split: str, fold: int | None = None) -> np.ndarray:
        """Boolean mask of a split; with `fold`, that fold is `test`, the rest `train`. Every
        row must carry what the mode reads, else it would be dropped without a word."""
        if fold is None:
            if (self.df["split"] == "").all():
                raise ManifestError(f"{self.path}: the manifest uses folds (no split column "
                                    "values); set dataset.fold to the held-out fold")
            _refuse(self.df.index[self.df["split"] == ""], self.path, "no `split`",
                    " (they have a `fold`) while other rows have one; give every row a split, "
                    "or set dataset.fold and give every row a fold")
            return (self.df["split"] == split).to_numpy()
        folds = self.df["fold"]
        if not (folds == fold).any():
            known = sorted(set(folds.dropna().astype(int)))
            raise ManifestError(f"{self.path}: fold {fold} does not exist; folds: {known}")
        _refuse(self.df.index[folds.isna()], self.path,
                f"dataset.fold is {fold}, but there is no `fold`", " (they have only a split); "
                "give every row a fold, or set dataset.fold to null to use the split column")
        if split == "test":
            return (folds == fold).to_numpy(dtype=bool)
        if split == "train":
            return (folds != fold).to_numpy(dtype=bool)
        return np.zeros(len(self.df), dtype=bool)


def read_manifest(
    path: str | Path, root: str | Path | None = None, *, check_media: bool = True,
    require_labels: bool = True,
) -> Manifest:
    """Read and validate a manifest CSV (or Parquet); media paths checked when asked.
    `require_labels=False` (prediction on new media): `label`, `split`, `fold` may be empty.
    """
    path = Path(path)
    root = Path(root) if root is not None else path.parent
    if not path.exists():
        shown = "" if path.is_absolute() else f" (looked at {path.absolute()})"
        raise ManifestError(f"manifest {path} does not exist{shown}")
    if path.is_dir():
        raise ManifestError(f"manifest {path.absolute()} is a folder, not a CSV file")
    try:
        df = (pd.read_parquet(path) if path.suffix == ".parquet"
              else pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8"))
    except ImportError:  # no Parquet engine: pandas' own message is several lines about two
        raise ManifestError(f"{path}: reading a Parquet manifest needs pyarrow (pip install "
                            "pyarrow), or write the manifest as CSV") from None
    except UnicodeDecodeError as exc:
        raise ManifestError(f"{path}: not UTF-8 text (byte {exc.start}: {exc.reason})") from None
    except pd.errors.EmptyDataError:
        raise ManifestError(f"{path}: the file is empty (expected a header row and "
                            "samples)") from None
    except (pd.errors.ParserError, ValueError, OSError) as exc:
        raise ManifestError(f"{path}: cannot be read as a table: {exc}") from None
    if not isinstance(df.index, pd.RangeIndex):
        # pandas turns surplus leading fields into an index and shifts every
        # column silently (an unquoted comma in a transcript does it)
        raise ManifestError(f"{path}: cannot be read as a table: {_ragged(path)}")
    return Manifest(validate(df, str(path), root, check_media=check_media,
                             require_labels=require_labels), path, root)


def _ragged(path: Path) -> str:
    with open(path, newline="", encoding="utf-8") as fh:
        rows = csv.reader(fh)
        width = len(next(rows))
        bad = pd.Index([n for n, row in enumerate(rows) if row and len(row) != width])
    return (f"line(s) {_lines(bad)} have more fields than the {width} of the header "
            "(quote fields that contain commas)")


def validate(
    df: pd.DataFrame, source: str, root: Path, *, check_media: bool = True,
    require_labels: bool = True,
) -> pd.DataFrame:
    """Normalise the columns and check every manifest rule (docs/data.md); returns a clean copy.
    """
    missing = [c for c in (REQUIRED if require_labels else ["sample_id"]) if c not in df.columns]
    if missing:
        raise ManifestError(f"{source}: missing column(s) {', '.join(missing)}; "
                            f"columns found: {', '.join(map(str, df.columns))}")
    if require_labels and "split" not in df.columns and "fold" not in df.columns:
        raise ManifestError(f"{source}: needs a `split` or a `fold` column")
    df = df.copy().reset_index(drop=True)
    if df.empty:
        raise ManifestError(f"{source}: no samples (the manifest has only a header)")
    for column in COLUMNS:
        if column not in df.columns:
            df[column] = ""
        if column not in ("fold", "start", "end"):
            df[column] = df[column].fillna("").astype(str).str.strip()
    _refuse(df.index[df["sample_id"] == ""], source, "empty sample_id")
    dup = df.index[df["sample_id"].duplicated(keep=False)]
    _refuse(dup, source, f"duplicate sample_id {sorted(set(df.loc[dup, 'sample_id']))[:_SHOW]}")
    if require_labels:
        _refuse(df.index[df["label"] == ""], source, "label missing")
    bad = df.index[~df["split"].isin(("", *SPLITS))]
    _refuse(bad, source, f"unknown split value(s) {sorted(set(df.loc[bad, 'split']))}",
            f"; use {', '.join(SPLITS)} or leave empty and set `fold`")
    df["fold"] = _numeric(df, "fold", source, integer=True)
    for column in ("start", "end"):
        df[column] = _numeric(df, column, source)
    if require_labels:
        _refuse(df.index[(df["split"] == "") & df["fold"].isna()], source,
                "neither split nor fold")
    _refuse(df.index[(df["start"] < 0) | (df["end"] <= df["start"])], source,
            "need 0 <= start < end")
    if any(c in df.columns for c in AUDIO_SEGMENT):
        for column in AUDIO_SEGMENT:
            df[column] = _numeric(df, column, source) if column in df.columns else np.nan
        _refuse(df.index[(df["audio_start"] < 0) | (df["audio_end"] <= df["audio_start"])],
                source, "need 0 <= audio_start < audio_end")
    for column in ("audio_path", "video_path"):
        _check_paths(df, column, source, Path(root), check_media)
    return df[COLUMNS + [c for c in df.columns if c not in COLUMNS]]


def _numeric(df: pd.DataFrame, column: str, source: str, integer: bool = False) -> pd.Series:
    raw = df[column].replace("", np.nan)
    values = pd.to_numeric(raw, errors="coerce")
    # "inf" and "nan" parse as numbers but are no segment bound or fold
    bad = df.index[raw.notna() & ~np.isfinite(values.astype(float))]
    if integer:
        bad = bad.union(df.index[values.notna() & (values != values.round())])
    _refuse(bad, source, f"`{column}` must be {'an integer' if integer else 'a number'}")
    return values.astype("Int64") if integer else values.astype(float)


def _check_paths(df: pd.DataFrame, column: str, source: str, root: Path, check: bool) -> None:
    values = df[column]
    _refuse(df.index[values.map(lambda p: bool(p) and os.path.isabs(p))], source,
            f"`{column}` must be relative to the dataset root {root}, absolute")
    _refuse(df.index[values.map(lambda p: bool(p) and os.path.normpath(p).startswith(".."))],
            source, f"`{column}` escapes the dataset root {root}")
    if not check:
        return
    # The same rule after following symlinks: a link inside the root that points
    # elsewhere would otherwise bring in what `../` may not.
    inside = Path(os.path.realpath(root))
    outside = df.index[values.map(
        lambda p: bool(p) and not Path(os.path.realpath(root / p)).is_relative_to(inside))]
    if len(outside):
        first = values[outside[0]]
        raise ManifestError(
            f"{source}: `{column}` on line(s) {_lines(outside)} leads outside the dataset root "
            f"{root} through a symlink ({first} -> {os.path.realpath(root / first)}); put the "
            "media under the root, or make the root a folder that contains them"
        )
    gone = df.index[values.map(lambda p: bool(p) and not (root / p).exists())]
    if len(gone):
        listed = "\n  ".join(f"line {i + 2}: {root / values[i]}" for i in gone[:_SHOW])
        more = f"\n  ... and {len(gone) - _SHOW} more" if len(gone) > _SHOW else ""
        raise ManifestError(f"{source}: {len(gone)} media file(s) in `{column}` not found:"
                            f"\n  {listed}{more}")


def write_manifest(df: pd.DataFrame, path: str | Path) -> Path:
    """Write a manifest CSV atomically (`amid.storage.write_text`), columns in the standard
    order."""
    extra = [c for c in df.columns if c not in COLUMNS]
    return write_text(path, df.reindex(columns=COLUMNS + extra, fill_value="").to_csv(index=False))
