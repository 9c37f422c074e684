"""Device names of both stages resolve the same way, with errors naming the option."""

from __future__ import annotations

import pytest
import torch

from amid import devices
from amid.devices import amp_allowed, resolve_device
from amid.errors import ConfigError


def test_auto_and_explicit_devices(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ConfigError, match=r"extract\.audio\.device is 'cuda:1' but no CUDA"):
        resolve_device("cuda:1", "extract.audio.device")
    with pytest.raises(ConfigError, match=r"train\.device: .*gpu"):
        resolve_device("gpu", "train.device")


def test_autocast_only_on_the_listed_devices(monkeypatch):
    assert amp_allowed(torch.device("cuda", 0)) and not amp_allowed(torch.device("cpu"))
    monkeypatch.setattr(devices, "AMP_DEVICES", ("cuda", "cpu"))
    assert amp_allowed(torch.device("cpu"))
