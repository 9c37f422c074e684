"""The typed configuration: the repo's params.yaml loads; bad keys, types, ranges are named."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from amid.config import Config, load_config, to_dict
from amid.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def _write(tmp_path, data) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _params() -> dict:
    return yaml.safe_load((ROOT / "params.yaml").read_text())


def test_repo_params_load_and_match_defaults_where_unset():
    cfg = load_config(ROOT / "params.yaml")
    assert isinstance(cfg, Config)
    assert cfg.train.loss.alpha == 4.0 and cfg.train.loss.beta == 1.5
    assert set(cfg.dataset.target) | set(cfg.dataset.auxiliary) <= set(cfg.extract)


def test_override_parses_yaml_values(tmp_path):
    cfg = load_config(
        _write(tmp_path, _params()),
        ["train.loss.alpha=2", "train.methods=[amid]", "dataset.fold=3"],
    )
    assert cfg.train.loss.alpha == 2.0 and isinstance(cfg.train.loss.alpha, float)
    assert cfg.train.methods == ["amid"]
    assert cfg.dataset.fold == 3


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.loss.alfa=2", "train.loss.alfa"),
        ("train.epochs=ten", "train.epochs: expected an integer"),
        ("train.epochs=1.5", "train.epochs: expected an integer"),
        ("train.loss.enhanced_disc=yes please", "train.loss.enhanced_disc: expected true or false"),
        ("train.loss.mi_variant=infonce", "train.loss.mi_variant: must be one of"),
        ("train.loss.tau=0", "train.loss.tau must be > 0"),
        ("train.loss.alpha=-1", "train.loss.alpha must be >= 0"),
        ("dataset.target=[depth]", "no extract.depth section"),
        ("train.epochs", "not of the form key=value"),
    ],
)
def test_bad_values_name_the_key(tmp_path, override, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        load_config(_write(tmp_path, _params()), [override])


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "none.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_resolved_config_round_trips(tmp_path):
    cfg = load_config(ROOT / "params.yaml")
    again = load_config(_write(tmp_path, to_dict(cfg)))
    assert to_dict(again) == to_dict(cfg)


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_paper_configs_load_and_name_real_extractors_and_methods(path):
    from amid.distill.methods import METHODS
    from amid.extract.extractors import EXTRACTORS
    from amid.extract.extractors.base import build_params

    cfg = load_config(path)
    for modality, spec in cfg.extract.items():
        cls = EXTRACTORS.get(spec.extractor)
        assert cls.modality == modality
        build_params(cls, spec.params, f"{path.name}: extract.{modality}.params")
    for method in cfg.train.methods:
        METHODS.get(method)
