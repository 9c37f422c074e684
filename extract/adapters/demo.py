"""`demo`: the manifest of a tree written by `amid-extract demo` (see amid.extract.demo)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from amid.errors import ManifestError
from amid.extract.adapters.registry import ADAPTERS
from amid.extract.adapters.text import read_text


@ADAPTERS.register("demo")
def prepare_demo(root: Path) -> pd.DataFrame:
    """Manifest of a demo tree (`<split>/<label>/<id>.{avi,wav,txt}`), sorted by id."""
    root = Path(root)
    rows = []
    for video in sorted(root.glob("*/*/*.avi")):
        split, label = video.parent.parent.name, video.parent.name
        transcript = video.with_suffix(".txt")
        rows.append(
            {
                "sample_id": video.stem,
                "label": label,
                "split": split,
                "video_path": video.relative_to(root).as_posix(),
                "audio_path": video.with_suffix(".wav").relative_to(root).as_posix(),
                "text": read_text(transcript).strip() if transcript.exists() else "",
            }
        )
    if not rows:
        raise ManifestError(
            f"{root}: no demo videos (<split>/<label>/<id>.avi); run `amid-extract demo`"
        )
    return pd.DataFrame(rows).sort_values("sample_id", ignore_index=True)
