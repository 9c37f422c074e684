"""Which device a stage runs on, and where it may use mixed precision.

One place for both stages: `train.device` and `extract.<m>.device` resolve the
same way ("auto": the GPU when there is one), and autocast is used only on
`AMP_DEVICES`.
"""

from __future__ import annotations

import torch

from amid.errors import ConfigError

# Autocast only on GPUs, where it is the difference between model speed and a fraction
# of it; a CPU without bf16 units runs it slower than fp32. Tests add "cpu" to run the
# mixed-precision path (its dtype handling) without a GPU.
AMP_DEVICES = ("cuda",)


def resolve_device(name: str, option: str = "device") -> torch.device:
    """`auto` -> cuda when available, else cpu; a CUDA device without CUDA is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"{option} is {name!r} but no CUDA device is available")
    try:
        return torch.device(name)
    except RuntimeError as exc:  # e.g. "gpu", "cuda:x"
        raise ConfigError(f"{option}: {exc}") from None


def amp_allowed(device: torch.device) -> bool:
    """Whether autocast may run on `device` (see `AMP_DEVICES`)."""
    return device.type in AMP_DEVICES
