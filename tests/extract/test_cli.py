"""`amid-extract` in the one CLI style of amid/cli.py, and its honest messages.

Issue 12 items 8 and 10 (`info` on format version 2), issue 14 item 13. Causes:
`-o` meant `--option` in `prepare`, `-q`/`-p` existed on some commands only,
errors were `error: ...` without the program name, `info` printed any HDF5
file's attributes, and "no sample could be extracted" pointed to an errors
file that was never written.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import typer
import yaml
from repo_data import UCF51_ARCHIVE as ARCHIVE  # tests/extract/fixtures, on the pythonpath
from repo_data import demo_params
from typer.testing import CliRunner

from amid.cache import errors_path, read_cache, read_errors, write_cache
from amid.extract.cli import app

runner = CliRunner()


def _project(tmp_path: Path, demo: Path) -> Path:
    params = demo_params()
    params["dataset"].update(root=str(demo), manifest=str(tmp_path / "manifest.csv"),
                             cache_dir=str(tmp_path / "cache"))
    shutil.copy(demo / "manifest.csv", tmp_path / "manifest.csv")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    return tmp_path / "params.yaml"


def _options(command: str) -> dict[str, list[str]]:
    """option name -> its flags, as typer declares them."""
    click_command = typer.main.get_command(app).commands[command]
    return {p.name: list(p.opts) for p in click_command.params if p.opts[0].startswith("-")}


@pytest.mark.parametrize("command", ["demo", "prepare", "run", "merge", "import-ucf51"])
def test_every_command_takes_the_shared_flags(command):
    flags = _options(command)
    assert flags["params"] == ["--params", "-p"] and flags["overrides"] == ["--set", "-S"]
    assert flags["quiet"] == ["--quiet", "-q"]
    if command != "merge":  # merge's output is its argument, the cache the parts make
        assert flags["out"] == ["--out", "-o"]
    assert all("-o" not in opts for name, opts in flags.items() if name != "out")


def test_short_flags_work_and_quiet_prints_nothing(tmp_path, small_demo):
    params = _project(tmp_path, small_demo)
    out = tmp_path / "t.h5"
    result = runner.invoke(app, ["run", "-m", "text", "-p", str(params), "-S",
                                 "extract.text.params.n_features=32", "-o", str(out), "-q"])
    assert result.exit_code == 0 and result.output == ""
    assert read_cache(out).feature_dim == 32
    manifest = tmp_path / "m2.csv"
    result = runner.invoke(app, ["prepare", "-p", str(params), "-o", str(manifest), "-q",
                                 "-S", f"dataset.root={small_demo}"])
    assert result.exit_code == 0 and result.output == "" and manifest.exists()
    result = runner.invoke(app, ["import-ucf51", str(ARCHIVE), "-o", str(tmp_path / "u.h5"),
                                 "-p", str(params), "-q"])
    assert result.exit_code == 0 and result.output == ""
    assert len(read_cache(tmp_path / "u.h5")) == 6837


def test_errors_are_one_line_with_the_program_name(tmp_path, small_demo):
    params = _project(tmp_path, small_demo)
    result = runner.invoke(app, ["run", "-m", "text", "-p", str(params), "-S",
                                 "extract.text.params.n_features=0"])
    assert result.exit_code == 2
    # one line: the program, the option, its bound (the range on the extractor's Params
    # says which), the value
    line = "amid-extract: error: extract.text.params.n_features must be "
    assert result.output.startswith(line) and result.output.endswith(", got 0\n")
    assert result.output.count("\n") == 1


def test_info_refuses_a_format_it_does_not_understand(tmp_path):
    path = write_cache(tmp_path / "c.h5", ["a"], [np.ones((1, 2), np.float32)],
                       {"modality": "audio", "extractor": "x", "model": "none", "params": {}})
    ok = runner.invoke(app, ["info", str(path)])
    assert ok.exit_code == 0 and "format_version: 1" in ok.output
    with h5py.File(path, "r+") as f:
        f.attrs["format_version"] = 2
    result = runner.invoke(app, ["info", str(path)])
    assert result.exit_code == 2
    assert result.output == (f"amid-extract: error: {path}: format_version is 2; this reader "
                             "understands only 1 (a cache from another version of the "
                             "format)\n")


def test_no_sample_extracted_names_the_reasons_not_a_missing_file(tmp_path, small_demo):
    root = tmp_path / "root"
    shutil.copytree(small_demo, root)
    params = _project(tmp_path, root)
    good = runner.invoke(app, ["run", "-m", "audio", "-p", str(params), "-q"])
    assert good.exit_code == 0, good.output
    path = tmp_path / "cache/demo/audio__logmel.h5"
    before = path.read_bytes()
    for wav in root.rglob("*.wav"):  # now every clip is silent: nothing can be extracted
        wav.write_bytes(wav.read_bytes()[:44] + bytes(len(wav.read_bytes()) - 44))
    result = runner.invoke(app, ["run", "-m", "audio", "-p", str(params)])
    assert result.exit_code == 2
    first = result.output.strip().splitlines()[-1]
    assert first.startswith(f"amid-extract: error: {path}: no sample could be extracted "
                            "(100 error(s): eight_")
    assert "audio is silent (every sample is zero)" in first and "(and 97 more))" in first
    assert ".errors.csv" not in result.output and not errors_path(path).exists()
    assert path.read_bytes() == before and read_errors(path) == {}  # the good cache stays
