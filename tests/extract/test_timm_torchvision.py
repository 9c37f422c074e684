"""torchvision DenseNet checkpoints in the `densenet` extractor: both torchvision key layouts
load into timm's DenseNet-121, and the features equal torchvision's own forward pass."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision

from amid.errors import AmidError, CheckpointError
from amid.extract.extractors import timm_image  # noqa: F401  (registration)
from amid.extract.extractors.base import build_extractor


def _old_style(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """torchvision's 2017 layout: `denselayerN.norm.1.weight`, no BatchNorm step counters."""
    old = {}
    for key, value in state.items():
        if key.endswith("num_batches_tracked"):
            continue  # saved before PyTorch 0.4.1 added them
        old[re.sub(r"(denselayer\d+\.(?:norm|conv))([12])\.", r"\1.\2.", key)] = value
    return old


@pytest.fixture(scope="module")
def torchvision_net() -> torchvision.models.DenseNet:
    torch.manual_seed(7)
    net = torchvision.models.densenet121(weights=None).eval()
    # Random BatchNorm affine and running statistics (init leaves them 1/0): a tensor loaded
    # into the wrong layer, or left at its init, would then change the features.
    gen = torch.Generator().manual_seed(8)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                n = m.num_features
                m.weight.copy_(0.8 + 0.4 * torch.rand(n, generator=gen))
                m.bias.copy_(0.1 * torch.randn(n, generator=gen))
                m.running_mean.copy_(0.1 * torch.randn(n, generator=gen))
                m.running_var.copy_(0.5 + torch.rand(n, generator=gen))
                m.num_batches_tracked.fill_(123)
    return net


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory, torchvision_net) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tv")
    state = torchvision_net.state_dict()
    old = _old_style(state)
    # the fixture really is in the old layout
    assert "features.denseblock1.denselayer1.norm.1.weight" in old
    assert "features.denseblock4.denselayer16.conv.2.weight" in old
    assert not any("norm1" in k or "conv2" in k or "num_batches" in k for k in old)
    paths = {"new": root / "densenet121-new.pth", "old": root / "densenet121-a639ec97.pth"}
    torch.save(state, paths["new"])
    torch.save(old, paths["old"])
    return paths


@pytest.mark.parametrize("layout", ["new", "old"])
def test_torchvision_checkpoint_gives_torchvisions_features(layout, checkpoints,
                                                            torchvision_net) -> None:
    path = checkpoints[layout]
    ex = build_extractor("densenet", {"checkpoint": str(path)})
    assert ex.model == f"densenet121 ({path})"
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, size=(2, 64, 64, 3), dtype=np.uint8)
    x = ex.preprocess(frames)
    assert x.shape == (2, 3, 224, 224)
    feats = ex.embed([x])[0]
    # torchvision's DenseNet.forward up to its classifier: features -> relu -> global average
    with torch.no_grad():
        expect = torch.flatten(F.adaptive_avg_pool2d(F.relu(torchvision_net.features(x)), 1), 1)
    assert feats.shape == (2, 1024)
    np.testing.assert_allclose(feats, expect.numpy(), atol=1e-5, rtol=0)
    assert np.abs(feats[0] - feats[1]).max() > 1e-3  # the frames really differ


def test_unknown_key_in_torchvision_checkpoint_is_a_clear_error(tmp_path, checkpoints) -> None:
    for layout, extra in [("new", "features.denseblock1.denselayer1.extra.weight"),
                          ("old", "features.denseblock1.denselayer1.norm.3.weight")]:
        state = torch.load(checkpoints[layout], weights_only=True)
        state[extra] = torch.zeros(3)
        path = tmp_path / f"{layout}-extra.pth"
        torch.save(state, path)
        with pytest.raises(CheckpointError) as info:
            build_extractor("densenet", {"checkpoint": str(path)})
        message = str(info.value)
        assert isinstance(info.value, AmidError)
        assert str(path) in message and "densenet121" in message
        assert f"unexpected keys ['{extra}']" in message and "missing keys []" in message


def test_missing_tensor_in_old_checkpoint_is_still_refused(tmp_path, checkpoints) -> None:
    state = torch.load(checkpoints["old"], weights_only=True)
    del state["features.denseblock2.denselayer3.conv.1.weight"]
    path = tmp_path / "old-missing.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError,
                       match=r"missing keys \['features.denseblock2.denselayer3.conv1.weight'\]"):
        build_extractor("densenet", {"checkpoint": str(path)})
