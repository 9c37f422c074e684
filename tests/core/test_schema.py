"""amid.schema: one base model and one error formatter for every option of the project.

Expectations are written out by hand from the rules (a range's brackets, the dotted path
of a list item, the closest known key), not taken from the code's output.
"""

from __future__ import annotations

from typing import Annotated, Literal

import pytest
import yaml
from repo_data import DEMO_PARAMS

from amid.config import load_config
from amid.distill.methods import check_method_options
from amid.errors import ConfigError
from amid.extract.adapters.registry import check_options
from amid.extract.extractors import EXTRACTORS
from amid.extract.extractors.base import ExtractorParams, build_extractor
from amid.schema import Schema, load, option, per_member_keys, renamed, to_dict


class Inner(Schema):
    rate: float = option(0.5, ge=0, lt=1, per_member=True)
    steps: list[int] = option([1, 2])


class Outer(Schema):
    size: int = option(8, ge=1, le=256, note="(cells a side)")
    temperature: float = option(1.0, gt=0)
    # `z` is the old name of `a`: a file that still says it is refused with the new one
    mode: Annotated[Literal["a", "b"], renamed({"z": ("a", "the first mode")})] = "a"
    flag: bool = False
    inner: Inner = option(Inner())


@pytest.mark.parametrize(("data", "message"), [
    ({"size": 0}, "x.size must be in [1, 256] (cells a side), got 0"),
    ({"temperature": 0}, "x.temperature must be > 0, got 0.0"),  # shown as read: a float
    ({"inner": {"rate": 1}}, "x.inner.rate must be in [0, 1), got 1.0"),
    ({"inner": {"steps": [1, "2"]}}, "x.inner.steps[1]: expected an integer, got '2'"),
    ({"size": 2.5}, "x.size: expected an integer, got 2.5"),
    ({"size": True}, "x.size: expected an integer, got True"),
    ({"flag": "yes"}, "x.flag: expected true or false, got 'yes'"),
    ({"mode": "c"}, "x.mode: must be one of 'a', 'b', got 'c'"),
    ({"mode": "z"}, "x.mode: 'z' was renamed 'a' (the first mode)"),
    ({"mode": ["z"]}, "x.mode: must be one of 'a', 'b', got ['z']"),  # not a name: typed as ever
    ({"temperature": float("nan")}, "x.temperature: expected a finite number, got nan"),
    ({"inner": 3}, "x.inner: expected a mapping, got 3"),
    ({"inner": {"rat": 0.1}},
     "unknown configuration key(s) x.inner.rat; known here: rate, steps; did you mean rate?"),
    ({"sise": 1, "zzz": 2},
     "unknown configuration key(s) x.sise, x.zzz; known here: flag, inner, mode, size, "
     "temperature; did you mean size?"),
])
def test_each_mistake_is_one_line_naming_the_dotted_key(data, message):
    with pytest.raises(ConfigError) as info:
        load(Outer, data, "x")
    assert str(info.value) == message


def test_values_are_typed_and_defaults_are_per_instance():
    built = load(Outer, {"temperature": 2, "inner": None})  # an empty YAML section: defaults
    assert built.temperature == 2.0 and isinstance(built.temperature, float)
    assert to_dict(built) == {"size": 8, "temperature": 2.0, "mode": "a", "flag": False,
                              "inner": {"rate": 0.5, "steps": [1, 2]}}
    built.inner.steps.append(3)
    assert Outer().inner.steps == [1, 2]  # a default is never shared between instances
    assert per_member_keys(Outer, "o") == ["o.inner.rate"]


def test_a_set_and_the_same_value_written_in_the_file_fail_alike(tmp_path):
    """`dvc exp run -S` writes the value into params.yaml; `--set` applies it on top."""
    data = yaml.safe_load(DEMO_PARAMS.read_text())
    data["methods"]["amid"]["alfa"] = 2
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError) as written:
        load_config(path, check=check_method_options)
    with pytest.raises(ConfigError) as given:
        load_config(DEMO_PARAMS, ["methods.amid.alfa=2"], check=check_method_options)
    assert str(written.value) == f"{path}: " + str(given.value).split(": ", 1)[1]
    assert str(given.value).endswith("did you mean alpha?")


def test_extractor_params_are_checked_with_their_reason_and_frozen():
    with pytest.raises(ConfigError, match=r"^p\.sample_rate must be in \[1000, 768000\] Hz "
                                          r"\(a 1 s clip is 4 bytes a sample\), got 10$"):
        build_extractor("logmel", {"sample_rate": 10}, "p")
    with pytest.raises(ConfigError, match=r"^p: unknown parameter\(s\) n_mel for extractor "
                                          r"'logmel'; known: .*; did you mean n_mels\?$"):
        build_extractor("logmel", {"n_mel": 3}, "p")
    params = build_extractor("pixels", {"grid": 4}, "p").params
    with pytest.raises(ValueError, match="frozen"):
        params.grid = 5  # a built extractor's identity cannot drift from its features
    for name in EXTRACTORS:  # every extractor declares its parameters on the one base
        assert issubclass(EXTRACTORS.get(name).Params, ExtractorParams), name


def test_adapter_options_are_typed():
    assert check_options("ucf51", {"split": 2}, "--option").split == 2
    with pytest.raises(ConfigError, match=r"^--option\.split: must be one of 1, 2, 3, got 4$"):
        check_options("ucf51", {"split": 4}, "--option")
    with pytest.raises(ConfigError, match=r"^--option\.missing: must be one of 'skip', "
                                          r"'error', got 'ignore'$"):
        check_options("activitynet", {"missing": "ignore"}, "--option")
    with pytest.raises(ConfigError, match=r"^--option: unknown option\(s\) with_sound for the "
                                          r"'ucf51' adapter; its options: lists, split, videos, "
                                          r"with_audio; did you mean with_audio\?$"):
        check_options("ucf51", {"with_sound": True}, "--option")
