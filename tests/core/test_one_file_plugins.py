"""A new method, extractor or dataset adapter is one file: dropped into its folder, it
is found by its registry (amid.registry.import_all) with no import line to add.

The package is laid out in a temporary folder (the package-dir mapping of
pyproject.toml), the three files of tests/core/plugins/ are copied into their
folders, and a fresh interpreter uses them through the public entry points.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PLUGINS = Path(__file__).parent / "plugins"

SCRIPT = r"""
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, sys.argv[2])  # tests/distill: the synthetic dataset writer
from conftest import make_dataset  # noqa: E402

from amid.distill.methods import METHODS
from amid.distill.train import train
from amid.extract.adapters import ADAPTERS
from amid.extract.extractors import EXTRACTORS, build_extractor

assert "toy" in METHODS and "toy-bins" in EXTRACTORS and "toy" in ADAPTERS

work = Path(sys.argv[1])
# the adapter
for label in ("a", "b"):
    (work / "media" / label).mkdir(parents=True)
    (work / "media" / label / f"{label}1.wav").write_bytes(b"")
df = ADAPTERS.get("toy")(work / "media")
assert list(df["sample_id"]) == ["a1", "b1"] and list(df["label"]) == ["a", "b"]
# the extractor, with its parameters checked by the shared machinery
ex = build_extractor("toy-bins", {"bins": 2}, "extract.audio.params")
(feat,) = ex.embed([np.arange(16, dtype=np.float32)])
assert feat.tolist() == [[3.5, 11.5]], feat
# the method: trained by the shared loop, its term logged
syn = make_dataset(work / "data", per_class=10)
syn.cfg.train.epochs = 1
history = train("toy", syn.cfg, work / "run", live=False)
assert "smoothed" in " ".join(history[-1]), history[-1]
print("ok")
"""


def test_a_method_an_extractor_and_an_adapter_each_added_by_one_file(tmp_path):
    pkg = tmp_path / "pkg"
    shutil.copytree(ROOT / "amid", pkg / "amid", ignore=shutil.ignore_patterns("__pycache__"))
    for part in ("extract", "distill", "evaluate"):
        shutil.copytree(ROOT / part, pkg / "amid" / part,
                        ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(PLUGINS / "toy_method.py", pkg / "amid" / "distill" / "methods" / "toy.py")
    shutil.copy(PLUGINS / "toy_extractor.py", pkg / "amid" / "extract" / "extractors" / "toy.py")
    shutil.copy(PLUGINS / "toy_adapter.py", pkg / "amid" / "extract" / "adapters" / "toy.py")
    work = tmp_path / "work"
    work.mkdir()
    # run from the temporary folder: its `amid` comes before the installed one
    args = [sys.executable, "-c", SCRIPT, str(work), str(ROOT / "tests" / "distill")]
    env = {"PYTHONPATH": str(pkg), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    done = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().endswith("ok")


def test_the_installed_registries_list_every_module_of_their_folders():
    """What the folder holds is what the registry offers: no hand-kept import list."""
    from amid.distill.methods import METHODS
    from amid.extract.adapters import ADAPTERS
    from amid.extract.extractors import EXTRACTORS

    assert {"baseline", "teacher", "kd", "ts", "ts_ta", "amid", "crd", "gmc", "ccl",
            "crcd"} <= set(METHODS.names())
    assert {"ucf51", "activitynet", "iemocap", "csv", "demo"} <= set(ADAPTERS.names())
    assert {"pixels", "logmel", "hashing", "wav2vec2", "bert", "densenet",
            "panns-cnn14"} <= set(EXTRACTORS.names())
