"""Training never runs on something other than what its configuration and checkpoint say
(issue 14, items 1, 2 and 8): caches of other settings, a resume on other features,
schedules that train nothing, corrupt rows; and what it writes is bit-reproducible."""

from __future__ import annotations

import copy
import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from amid.cache import cache_path, read_cache, write_cache
from amid.distill.train import data_from_config, train
from amid.errors import CacheError, CheckpointError, ConfigError
from amid.schema import to_dict

from ..distill.conftest import make_dataset, set_options


def _rewrite(syn, modality: str, *, params: dict | None = None, scale: float = 1.0,
             dim: int | None = None, row: tuple[int, float] | None = None,
             empty: str | None = None) -> Path:
    """Write the modality's cache again: other params, other values, another width,
    one corrupt value, or one sample with no steps."""
    path = cache_path(syn.root / "cache", "synth", modality, "synthetic")
    old = read_cache(path)
    rng = np.random.default_rng(7)
    seqs = []
    for k, sid in enumerate(old.ids):
        x = old.sequence(k) * scale
        if dim is not None:
            x = rng.normal(size=(len(x), dim))
        if row is not None and k == row[0]:
            x = x.copy()
            x[0, 0] = row[1]
        if sid == empty:
            x = x[:0]
        seqs.append(x.astype(np.float32))
    write_cache(path, old.ids, seqs, {"modality": modality, "extractor": "synthetic",
                                     "model": "none", "params": params or {}})
    return path


def test_a_cache_made_with_other_settings_is_refused_naming_the_keys(tmp_path):
    syn = make_dataset(tmp_path)
    _rewrite(syn, "visual", params={"grid": 8, "fps": 2.0})
    cfg = copy.deepcopy(syn.cfg)
    cfg.extract["visual"].params = {"grid": 4, "fps": 2.0}  # as `--set ...grid=4` would
    with pytest.raises(CacheError, match=r"visual__synthetic.h5 was made with other settings "
                                         r"than extract.visual says \(params.grid: expected 4, "
                                         r"cache has 8\); run `amid-extract run -m visual`"):
        train("baseline", cfg, tmp_path / "run", live=False)
    assert not (tmp_path / "run" / "config.json").exists()  # nothing recorded as trained
    cfg.extract["visual"].params = {"grid": 8, "fps": 2.0}
    assert train("baseline", copy.deepcopy(cfg), tmp_path / "ok", live=False)


def test_the_cli_refuses_it_in_one_line(tmp_path):
    syn = make_dataset(tmp_path)
    _rewrite(syn, "visual", params={"grid": 8})
    cfg = to_dict(syn.cfg)
    cfg["extract"]["visual"]["params"] = {"grid": 8}
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(cfg))
    exe = Path(sys.executable).with_name("amid-train")
    out = subprocess.run([str(exe), "-m", "baseline", "-p", str(params), "-o",
                          str(tmp_path / "r"), "-S", "extract.visual.params.grid=4", "-q"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("amid-train: error: ")
    assert "params.grid: expected 4, cache has 8" in lines[0]


@pytest.mark.parametrize("change", ["values", "width"])
def test_a_resume_on_other_features_is_refused(tmp_path, change):
    syn = make_dataset(tmp_path)
    cfg = copy.deepcopy(syn.cfg)
    cfg.train.epochs = 2
    run = tmp_path / "run"
    train("amid", cfg, run, live=False)
    before = (run / "checkpoint.pt").read_bytes()
    # re-extracted in between: same ids, other numbers (or another feature width)
    _rewrite(syn, "visual", scale=0.5 if change == "values" else 1.0,
             dim=7 if change == "width" else None)
    longer = copy.deepcopy(cfg)
    longer.train.epochs = 4
    with pytest.raises(CheckpointError, match=r"checkpoint.pt was trained on other features "
                                              r"\(visual cache .*visual__synthetic.h5 changed"):
        train("amid", longer, run, live=False)
    assert (run / "checkpoint.pt").read_bytes() == before  # the run is left as it was


@pytest.mark.parametrize("method", ["amid", "kd", "crd"])
def test_a_fixed_teacher_schedule_that_trains_nothing_is_refused(tmp_path, method):
    syn = make_dataset(tmp_path)
    cfg = copy.deepcopy(syn.cfg)
    cfg.train.epochs = 5
    fixed = {} if method == "crd" else {"fixed_teacher": True}
    data = data_from_config(cfg, torch.device("cpu"))
    untrained = set_options(copy.deepcopy(cfg), method, teacher_epochs=0, **fixed)
    with pytest.raises(ConfigError, match=rf"methods.{method}.teacher_epochs \(now 0\) must be "
                                          r">= 1 and below train.epochs \(5\)"):
        train(method, untrained, tmp_path / "a", data=data, live=False)
    no_student = set_options(copy.deepcopy(cfg), method, teacher_epochs=10, **fixed)
    with pytest.raises(ConfigError, match=rf"methods.{method}.teacher_epochs \(now 10\)") as err:
        train(method, no_student, tmp_path / "b", data=data, live=False)
    # where the method has an online mode, the message offers it (crd has none)
    offered = f"set methods.{method}.fixed_teacher false" in str(err.value)
    assert offered == (method != "crd")
    missing = set_options(copy.deepcopy(cfg), method, teacher_run=str(tmp_path / "nope"),
                          **fixed)
    with pytest.raises(ConfigError, match=rf"methods.{method}.teacher_run: .*nope/teacher."
                                          r"safetensors does not exist"):
        train(method, missing, tmp_path / "c", data=data, live=False)


def test_one_corrupt_value_that_would_swamp_the_normalisation_is_refused(tmp_path):
    syn = make_dataset(tmp_path)
    sid = syn.ids[3]  # a training sample
    _rewrite(syn, "visual", row=(3, 3e38))
    with pytest.raises(CacheError, match=rf"sample '{sid}' has the value 3e\+38 in feature 0"):
        data_from_config(syn.cfg, torch.device("cpu"))


def test_a_large_but_ordinary_spread_is_not_refused(tmp_path):
    syn = make_dataset(tmp_path)
    _rewrite(syn, "visual", scale=1e6)  # big numbers, all of them: nothing is an outlier
    data = data_from_config(syn.cfg, torch.device("cpu"))
    assert np.isfinite(data.target["visual"].std).all()


def test_a_sample_without_steps_is_refused(tmp_path):
    syn = make_dataset(tmp_path)
    _rewrite(syn, "visual", empty=syn.ids[5])
    with pytest.raises(CacheError, match=rf"1 sample\(s\) have no feature steps at all "
                                         rf"\(first: '{syn.ids[5]}'\)"):
        data_from_config(syn.cfg, torch.device("cpu"))


def _digest(run: Path) -> dict[str, str]:
    return {name: hashlib.sha256((run / name).read_bytes()).hexdigest()
            for name in ("student.safetensors", "teacher.safetensors", "outputs.h5",
                         "checkpoint.pt", "config.json")}


@pytest.mark.slow
def test_two_processes_train_bit_identical_files_even_beside_a_busy_core(tmp_path):
    """Same configuration and seed: the same bytes, whatever else the machine is doing."""
    syn = make_dataset(tmp_path)
    cfg = to_dict(syn.cfg)
    cfg["train"]["epochs"] = 3
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(cfg))
    exe = Path(sys.executable).with_name("amid-train")

    def run(out: Path) -> None:
        subprocess.run([str(exe), "-m", "amid", "-p", str(params), "-o", str(out), "-q"],
                       check=True, timeout=600, capture_output=True)

    run(tmp_path / "a")
    burner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        run(tmp_path / "b")
    finally:
        burner.kill()
        burner.wait()
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
