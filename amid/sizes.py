"""Upper bounds on sizes, checked when the configuration is loaded (`amid.config.validate`).

A typo (`hidden: 1000000000`) is refused at load, naming the key and the memory
it would need, instead of a traceback from torch's or numpy's allocator after
minutes of swapping. The model's count follows `amid.distill.models`
(tests/reliability/test_names_and_bounds.py compares it with torch's own count).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from amid.errors import ConfigError

if TYPE_CHECKING:  # amid.config imports this module
    from amid.config import DemoConfig, ModelConfig

MODEL_BUDGET_GIB = 64  # training state of the networks (more than any one GPU holds)
TRAIN_BYTES_PER_PARAMETER = 16  # float32 weight, gradient and Adam's two moments
DEMO_BUDGET_GIB = 1  # one demo sample's media in memory while it is made


def _gib(nbytes: float) -> float:
    # a value like rnn_layers: 10**400 passes float's range: say "inf GiB", not OverflowError
    return float(min(nbytes, 10**300)) / 2**30


def _mlp_parameters(sizes: list[int]) -> int:
    return sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:], strict=False))


def model_parameters(model: ModelConfig) -> int:
    """A lower bound of the parameters of `model`'s networks: the student's encoder of a
    1-wide feature (`amid.distill.models.SequenceEncoder`), the teacher head and AMID's
    5-layer discriminator (real features are wider, and there are more networks)."""
    h, d, dirs = model.hidden, model.dim, 2 if model.bidirectional else 1
    if model.student == "pool":
        encoder = _mlp_parameters([2, h, d])
    else:
        gates = 3 if model.student == "gru" else 4  # per layer: gates x (W_ih, W_hh, 2 biases)
        first, later = gates * h * (1 + h + 2), gates * h * (h * dirs + h + 2)
        encoder = dirs * (first + (model.rnn_layers - 1) * later) + h * dirs * d + d
    head = _mlp_parameters([2 * d, h, d])
    discriminator = _mlp_parameters([d] + [model.disc_hidden] * 4 + [1])
    return encoder + head + discriminator


def check_model_size(model: ModelConfig) -> None:
    count = model_parameters(model)
    need = _gib(count * TRAIN_BYTES_PER_PARAMETER)
    if need <= MODEL_BUDGET_GIB:
        return
    # name the key whose value does the most: the one that, at its default, shrinks it most
    keys = ("hidden", "dim", "rnn_layers", "disc_hidden")
    culprit = min(keys, key=lambda k: model_parameters(
        model.model_copy(update={k: type(model).model_fields[k].default})))
    raise ConfigError(
        f"train.model.{culprit} is {getattr(model, culprit)}: the networks would have at least "
        f"{float(min(count, 10**300)):.3g} parameters, {need:.3g} GiB to train "
        f"({TRAIN_BYTES_PER_PARAMETER} bytes each: weight, gradient, Adam's two moments), "
        f"over the budget of {MODEL_BUDGET_GIB} GiB; lower train.model.{culprit}")


def check_demo_size(demo: DemoConfig) -> None:
    # float64 noise, digit + noise and the clipped frames, then uint8 RGB: ~27 bytes a pixel
    video = _gib(demo.frames * demo.frame_size**2 * 27)
    # float64 time axis, tone and noise, then the float32 clip: ~28 bytes a sample
    audio = _gib(demo.duration * demo.sample_rate * 28)
    if video > DEMO_BUDGET_GIB:
        raise ConfigError(
            f"demo.frames {demo.frames} x demo.frame_size {demo.frame_size}^2: one sample's "
            f"video would need {video:.3g} GiB in memory, over the budget of "
            f"{DEMO_BUDGET_GIB} GiB; lower demo.frame_size or demo.frames")
    if audio > DEMO_BUDGET_GIB:
        raise ConfigError(
            f"demo.duration {demo.duration:g} s at demo.sample_rate {demo.sample_rate} Hz: one "
            f"sample's audio would need {audio:.3g} GiB in memory, over the budget of "
            f"{DEMO_BUDGET_GIB} GiB; lower demo.duration")
