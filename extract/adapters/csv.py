"""`csv`: a user's own manifest, validated (DESIGN 3.1)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from amid.errors import ManifestError
from amid.extract.adapters.registry import ADAPTERS
from amid.manifest import read_manifest


@ADAPTERS.register("csv")
def prepare_csv(root: Path, manifest: str | None = None) -> pd.DataFrame:
    """Validate an existing manifest (default `<root>/manifest.csv`) against its media."""
    if manifest is None:
        raise ManifestError("the csv adapter needs --manifest PATH (the user's own table)")
    return read_manifest(Path(manifest), root).df
