"""Shared pieces of the reliability suite: a tiny demo, a project around it, CLI runners."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from repo_data import DEMO_PARAMS  # the demo's committed params: tests/extract/fixtures

from amid.extract.demo import DemoSpec, make_demo

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def tiny_demo(tmp_path_factory) -> Path:
    """50 samples (10 classes x 5: 3 train, 1 val, 1 test), real .avi/.wav/.txt media."""
    out = tmp_path_factory.mktemp("tiny_demo")
    make_demo(out, DemoSpec(n_per_class=5))
    return out


def make_project(tmp_path: Path, demo: Path, **sections: dict) -> Path:
    """params.yaml in `tmp_path` pointing at `demo`, its manifest copied, cache in tmp_path."""
    params = yaml.safe_load(DEMO_PARAMS.read_text())
    params["dataset"].update(
        root=str(demo), manifest=str(tmp_path / "manifest.csv"), cache_dir=str(tmp_path / "cache")
    )
    for name, values in sections.items():
        params.setdefault(name, {}).update(values)
    shutil.copy(demo / "manifest.csv", tmp_path / "manifest.csv")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    return tmp_path / "params.yaml"


def cli(
    *args: str, cwd: Path, preexec=None, timeout: float = 120
) -> subprocess.CompletedProcess:
    """Run a console script (`amid-extract`, `amid-train`, ...) as a user would."""
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "OMP_NUM_THREADS": "1"}
    exe = Path(sys.executable).with_name(args[0])
    command = [str(exe), *args[1:]] if exe.exists() else [sys.executable, "-m", _module(args[0]),
                                                          *args[1:]]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env=env, preexec_fn=preexec)


def _module(script: str) -> str:
    return {"amid-extract": "amid.extract.cli", "amid-train": "amid.distill.cli",
            "amid-evaluate": "amid.evaluate.cli"}[script]


def assert_user_error(result, *fragments: str) -> None:
    """Exit 2, an `error:` line naming what is wrong, no traceback (subprocess or CliRunner)."""
    if isinstance(result, subprocess.CompletedProcess):
        code, err = result.returncode, result.stderr
    else:  # typer.testing.Result: an uncaught exception would be in result.exception
        code, err = result.exit_code, result.output
        assert isinstance(result.exception, SystemExit | None), repr(result.exception)
    assert code == 2, err
    assert "Traceback" not in err, err
    # `error:` or `<prog>: error:` (amid/cli.py's one style for every command)
    assert any(re.match(r"(amid-[a-z]+: )?error: ", line.lstrip())
               for line in err.splitlines()), err
    for fragment in fragments:
        assert fragment in err, (fragment, err)


def make_train_project(root: Path, *, per_class: int = 8, epochs: int = 4, seed: int = 0) -> Path:
    """A tiny 3-class dataset written through the real writers, and its params.yaml.

    visual: (T in 2..4, 6) frames; audio: (3, 4); text: (1, 5); 60/20/20 splits per class.
    """
    import numpy as np
    import pandas as pd

    from amid.cache import cache_path, write_cache
    from amid.manifest import write_manifest

    rng = np.random.default_rng(seed)
    dims = {"visual": 6, "audio": 4, "text": 5}
    protos = {m: rng.normal(size=(3, d)) for m, d in dims.items()}
    rows, seqs = [], {m: [] for m in dims}
    for c in range(3):
        for k in range(per_class):
            frac = k / per_class
            split = "train" if frac < 0.6 else "val" if frac < 0.8 else "test"
            rows.append({"sample_id": f"c{c}_{k:02d}", "label": f"class{c}", "split": split})
            for m, steps in (("visual", int(rng.integers(2, 5))), ("audio", 3), ("text", 1)):
                seqs[m].append((protos[m][c] + rng.normal(size=(steps, dims[m]))).astype("f4"))
    write_manifest(pd.DataFrame(rows), root / "manifest.csv")
    ids = [r["sample_id"] for r in rows]
    for m in dims:
        write_cache(cache_path(root / "cache", "synth", m, "synthetic"), ids, seqs[m],
                    {"modality": m, "extractor": "synthetic", "model": "none", "params": {}})
    params = yaml.safe_load(DEMO_PARAMS.read_text())
    params["dataset"].update(name="synth", root=str(root), manifest=str(root / "manifest.csv"),
                             cache_dir=str(root / "cache"))
    params["extract"] = {m: {"extractor": "synthetic"} for m in dims}
    params["train"].update(epochs=epochs, batch_size=8, device="cpu", seed=seed)
    params["train"]["model"].update(dim=8, hidden=8, disc_hidden=8)
    params["methods"]["amid"]["warmup_epochs"] = 1
    for options in params["methods"].values():  # the demo's frozen teachers need more
        if options.get("fixed_teacher"):          # epochs than these tiny runs have
            options["fixed_teacher"] = False
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    return root / "params.yaml"
