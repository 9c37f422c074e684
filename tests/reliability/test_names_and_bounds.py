"""Names that become path parts, seeds and sizes: refused at load, naming the key (issue 23).

Cases 4, 8 and 9 of issue 23. Causes: `dataset.name`, the `extract` and
`sweeps` keys and `pipeline.methods` were free strings that end up in paths
(`<cache_dir>/<dataset.name>/<modality>__<extractor>.h5`, `runs/sweeps/<NAME>`),
so `../../escaped` wrote outside `cache_dir`; `train.seed` had no range while
numpy takes only [0, 2**32 - 1]; and no size had an upper bound, so a typo
like `hidden: 1000000000` reached torch's allocator. Each is now one
`error:` line naming the key, and a size names the memory it would need.
"""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from amid.config import load_config
from amid.distill.cli import app as train_app
from amid.errors import ConfigError
from amid.extract.cli import app as extract_app

from .conftest import DEMO_PARAMS, assert_user_error, make_project, make_train_project

runner = CliRunner()


def _train(params, out, *extra: str):
    return runner.invoke(train_app, ["--method", "baseline", "--params", str(params), "--out",
                                     str(out), "-q", *extra])


# ------------------------------------------------------------ path components (case 4)
def test_a_dataset_name_that_leaves_the_cache_folder_is_refused(tmp_path, tiny_demo):
    work = tmp_path / "deep" / "er"
    work.mkdir(parents=True)
    params = make_project(work, tiny_demo)
    result = runner.invoke(extract_app, ["run", "-m", "text", "--params", str(params), "--set",
                                         "dataset.name=../../escaped"])
    assert_user_error(result, "dataset.name", "'../../escaped'", "one folder or file name")
    # nothing was written anywhere: not inside cache_dir, not beside it
    assert not list(tmp_path.rglob("*.h5")), list(tmp_path.rglob("*.h5"))


@pytest.mark.parametrize("override, key", [
    ("dataset.name=/abs", "dataset.name"),
    ("dataset.name=a/b", "dataset.name"),
    ("dataset.name=..", "dataset.name"),
    ("dataset.name=''", "dataset.name"),
    ("dataset.name=.hidden", "dataset.name"),
    ("sweeps={'../up': {method: amid}}", "sweeps"),
    ("extract={'../x': {extractor: pixels}}", "extract"),
    ("pipeline.methods=[baseline, ../amid]", "pipeline.methods[1]"),
    ("sweeps.alpha.method=../amid", "sweeps.alpha.method"),
])
def test_names_that_become_path_parts_must_be_one_safe_component(override, key):
    with pytest.raises(ConfigError, match=r"must be one folder or file name") as info:
        load_config(DEMO_PARAMS, [override])
    assert key in str(info.value) and f"--set {override}" in str(info.value)


def test_ordinary_names_still_load():
    cfg = load_config(DEMO_PARAMS, ["dataset.name=ucf51-split_1.v2",
                                             "sweeps={tau+beta: {method: amid}}"])
    assert cfg.dataset.name == "ucf51-split_1.v2" and "tau+beta" in cfg.sweeps


# ------------------------------------------------------------------ seeds (case 8)
@pytest.mark.parametrize("seed", ["-1", str(2**64), str(2**32)])
def test_a_seed_out_of_numpys_range_is_refused_at_load(tmp_path, seed):
    params = make_train_project(tmp_path, epochs=1)
    assert_user_error(_train(params, tmp_path / "run", "--set", f"train.seed={seed}"),
                      f"train.seed must be in [0, {2**32 - 1}], got {seed}")
    assert not (tmp_path / "run").exists()


def test_the_largest_seed_numpy_takes_still_trains(tmp_path):
    params = make_train_project(tmp_path, epochs=1)
    result = _train(params, tmp_path / "run", "--set", f"train.seed={2**32 - 1}")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "run" / "outputs.h5").exists()


@pytest.mark.parametrize("override, key", [
    ("demo.seed=-3", "demo.seed"),
    ("pipeline.repeat_seeds=[1, 99999999999]", "pipeline.repeat_seeds"),
])
def test_every_seed_has_the_same_range(override, key):
    with pytest.raises(ConfigError, match=key):
        load_config(DEMO_PARAMS, [override])


# ------------------------------------------------------------ model sizes (case 9)
@pytest.mark.parametrize("override, fragments", [
    ("train.model.hidden=1000000000", ["train.model.hidden", "GiB", "budget"]),
    ("train.model.dim=1000000000", ["train.model.dim", "GiB", "budget"]),
    ("train.model.disc_hidden=10000000000", ["train.model.disc_hidden", "GiB", "budget"]),
    # a deep stack of tiny layers stays in budget, but builds a million modules
    ("train.model.rnn_layers=1000000", ["train.model.rnn_layers must be in [1, 100]"]),
])
def test_a_model_too_large_for_any_machine_is_refused_naming_the_memory(tmp_path, override,
                                                                       fragments):
    params = make_train_project(tmp_path, epochs=1)  # hidden, dim, disc_hidden: 8
    result = _train(params, tmp_path / "run", "--set", override)
    assert_user_error(result, *fragments)
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


def test_model_size_estimate_counts_the_parameters_torch_allocates():
    """The bound's count equals torch's, for the networks it stands for (independent count)."""
    from amid.config import ModelConfig
    from amid.distill.models import SequenceEncoder, discriminator, teacher_head
    from amid.sizes import model_parameters

    for kind, layers, bidirectional in (("gru", 1, False), ("lstm", 3, True), ("pool", 2, False)):
        model = ModelConfig(dim=24, hidden=40, rnn_layers=layers, disc_hidden=16,
                            bidirectional=bidirectional, student=kind)
        # the smallest these networks can be: a 1-wide input feature
        nets = [SequenceEncoder(1, 24, kind, 40, layers, bidirectional), teacher_head(24, 40),
                discriminator(24, 16, 5)]
        real = sum(p.numel() for net in nets for p in net.parameters())
        assert model_parameters(model) == real, (kind, model_parameters(model), real)


def test_a_large_but_real_model_is_accepted():
    cfg = load_config(DEMO_PARAMS, ["train.model={hidden: 4096, dim: 2048, "
                                             "rnn_layers: 4, bidirectional: true}"])
    assert cfg.train.model.hidden == 4096


# ------------------------------------------------ extractor sizes (case 9)
@pytest.mark.parametrize("override, key", [
    ("extract.audio.params.n_mels=1000000", "extract.audio.params.n_mels"),
    ("extract.audio.params.n_fft=1000000000", "extract.audio.params.n_fft"),
    ("extract.audio.params.sample_rate=1000000000", "extract.audio.params.sample_rate"),
    ("extract.text.params.n_features=1000000000000", "extract.text.params.n_features"),
])
def test_extractor_sizes_are_bounded_before_anything_is_allocated(tmp_path, tiny_demo,
                                                                  override, key):
    params = make_project(tmp_path, tiny_demo)
    modality = override.split(".")[1]
    result = runner.invoke(extract_app, ["run", "-m", modality, "--params", str(params),
                                         "--set", override])
    assert_user_error(result, key, "must be")
    assert not (tmp_path / "cache").exists()


# ------------------------------------------------------ demo ranges (case 9)
@pytest.mark.parametrize("override, fragments", [
    ("demo.duration=1000000", ["demo.duration", "GiB"]),
    ("demo.frame_size=100000", ["demo.frame_size", "GiB"]),
    ("demo.frames=100000000", ["demo.frames", "GiB"]),
    ("demo.audio_noise=-0.1", ["demo.audio_noise must be >= 0"]),
    ("demo.text_noise=-0.5", ["demo.text_noise must be in [0, 1]"]),
    ("demo.text_noise=1.5", ["demo.text_noise must be in [0, 1]"]),
    ("demo.visual_blur=-1", ["demo.visual_blur must be >= 0"]),
    ("demo.visual_noise=-1", ["demo.visual_noise must be >= 0"]),
])
def test_demo_options_are_bounded(tmp_path, override, fragments):
    result = runner.invoke(extract_app, ["demo", "--out", str(tmp_path / "d"), "--params",
                                         str(DEMO_PARAMS), "--set",
                                         "demo.n_per_class=5", "--set", override])
    assert_user_error(result, *fragments)
    assert not (tmp_path / "d").exists()


def test_make_demo_checks_its_spec_too(tmp_path):
    from amid.extract.demo import DemoSpec, make_demo

    with pytest.raises(ConfigError, match="demo.text_noise must be in"):
        make_demo(tmp_path / "d", DemoSpec(n_per_class=5, text_noise=-1.0))
    assert not (tmp_path / "d").exists()
