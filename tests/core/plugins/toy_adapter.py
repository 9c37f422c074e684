"""An adapter in one file: every `<label>/<id>.wav` under the root is a training sample."""

from pathlib import Path

import pandas as pd

from amid.extract.adapters.registry import ADAPTERS


@ADAPTERS.register("toy")
def prepare_toy(root: Path) -> pd.DataFrame:
    rows = [{"sample_id": p.stem, "label": p.parent.name, "split": "train",
             "audio_path": str(p.relative_to(root))} for p in sorted(Path(root).glob("*/*.wav"))]
    return pd.DataFrame(rows)
