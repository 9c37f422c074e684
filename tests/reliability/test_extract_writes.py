"""Every file stage one writes: a read-only folder or a full disk is one line, nothing lost.

Issue 14 items 10 and 11 for `amid-extract prepare`, `demo`, `run`,
`import-ucf51` and `merge`. Causes: the manifest was written through a fixed
`.manifest.csv.tmp` name outside amid.storage (`error: cannot write None`, a
stray temporary), demo media were written in place, and the cache writer's
lock and marker files raised raw OSErrors. A read-only folder is simulated at
the OS boundary (test_stage3_writes.ReadOnly: the suite runs as root, where
permission bits do not stop writes); a full disk is a real file-size limit in
a subprocess.
"""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from amid.extract.cli import app
from amid.extract.extractors import build_extractor
from amid.extract.run import run_extraction
from amid.manifest import read_manifest

from .conftest import assert_user_error, cli, make_project
from .test_stage3_writes import ReadOnly, _fsize_limit, _snapshot, _strays

runner = CliRunner()


def _archive(path: Path, n: int = 6) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for k in range(n):
            buffer = io.BytesIO()
            np.save(buffer, np.full(512, k, np.float32))
            info = tarfile.TarInfo(f"feats/A/v_A_g0{k % 9 + 1}_c01.npy")
            info.size = len(buffer.getvalue())
            tar.addfile(info, io.BytesIO(buffer.getvalue()))
    return path


def _commands(tmp_path: Path, tiny_demo: Path) -> dict[str, list[str]]:
    """Each command once with its output in `ro/` (the earlier, good outputs)."""
    ro = tmp_path / "ro"
    params = make_project(tmp_path, tiny_demo, dataset={"cache_dir": str(ro / "cache")})
    values = yaml.safe_load(params.read_text())
    values["demo"]["n_per_class"] = 5  # a 50-sample demo
    params.write_text(yaml.safe_dump(values))
    p = ["-p", str(params)]
    # two ranks' parts of a distributed extraction, for `merge`
    manifest = read_manifest(tmp_path / "manifest.csv", tiny_demo)
    for rank in (0, 1):
        run_extraction(manifest, "text", build_extractor("hashing", {}), ro / "merged.h5",
                       progress=False, rank=rank, world_size=2)
    commands = {
        "prepare": ["prepare", *p, "-o", str(ro / "manifest.csv")],
        "demo": ["demo", *p, "-o", str(ro / "demo")],
        "run": ["run", "-m", "visual", *p],
        "import-ucf51": ["import-ucf51", str(_archive(tmp_path / "a.tar.gz")), *p, "-o",
                         str(ro / "ucf51.h5")],
        "merge": ["merge", str(ro / "merged.h5"), "--world-size", "2", *p],
    }
    for name, args in commands.items():
        if name != "merge":  # the parts must stay for the read-only merge below
            result = runner.invoke(app, [*args, "-q"])
            assert result.exit_code == 0, (name, result.output)
    # an up-to-date cache writes nothing; other settings make the run write
    commands["run"] += ["-S", "extract.visual.params.grid=4"]
    return commands


@pytest.mark.slow
def test_read_only_folder_is_one_line_for_every_command(tmp_path, tiny_demo, monkeypatch):
    monkeypatch.chdir(tmp_path)
    commands = _commands(tmp_path, tiny_demo)
    before = _snapshot(tmp_path / "ro")
    with monkeypatch.context() as patch:
        ReadOnly(tmp_path / "ro", patch)
        for name, args in commands.items():
            result = runner.invoke(app, args)
            assert_user_error(result, "amid-extract: error: cannot ", str(tmp_path / "ro"),
                              "Read-only file system")
            lines = [n for n in result.output.strip().splitlines()
                     if not n.startswith("WARNING")]  # run says first that it re-extracts
            assert len(lines) == 1, (name, result.output)
    assert _snapshot(tmp_path / "ro") == before  # nothing lost, nothing half-written
    assert _strays(tmp_path / "ro") == []


@pytest.mark.slow
@pytest.mark.parametrize(("command", "target"), [
    ("prepare", "ro/manifest.csv"), ("demo", "ro/demo"), ("import-ucf51", "ro/ucf51.h5"),
])
def test_full_disk_is_one_line_and_keeps_the_good_file(tmp_path, tiny_demo, command, target):
    commands = _commands(tmp_path, tiny_demo)
    before = _snapshot(tmp_path / "ro")
    full = cli("amid-extract", *commands[command], cwd=tmp_path, preexec=_fsize_limit(1000))
    assert_user_error(full, "amid-extract: error: cannot write", str(tmp_path / target),
                      "disk full")
    assert _snapshot(tmp_path / "ro") == before
    assert _strays(tmp_path / "ro") == []
