"""`csv`: a researcher's own table of samples, validated (docs/data.md).

The option `table` names the input table, resolved against the dataset root
(`dataset.root` / `--root`) unless absolute; its media paths are relative to
the root too. It is not `dataset.manifest`: that is the manifest `prepare`
writes (and every later stage reads). The option used to be called
`manifest`, which meant the other file; that name is refused, naming `table`.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from amid.errors import ManifestError
from amid.extract.adapters.registry import AdapterOptions, adapter
from amid.manifest import read_manifest


class Options(AdapterOptions):
    table: str = "manifest.csv"  # relative to the dataset root unless absolute


@adapter("csv", Options)
def prepare_csv(root: Path, opts: Options) -> pd.DataFrame:
    """Validate a table of samples (default `<root>/manifest.csv`) against its media."""
    table = opts.table
    path = Path(table).expanduser()
    path = path if path.is_absolute() else root / path
    if not path.is_file():
        raise ManifestError(
            f"csv adapter: table {path.absolute()} does not exist (option table: {table!r}, "
            f"relative to the dataset root {root.absolute()} unless absolute)"
        )
    return read_manifest(path, root).df


# Old option names: refused with one line naming the new one (amid.extract.cli).
prepare_csv.renamed = {  # type: ignore[attr-defined]
    "manifest": ("table", "the input table, relative to the dataset root; dataset.manifest is "
                 "the manifest `amid-extract prepare` writes"),
}
