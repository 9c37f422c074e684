"""Without downloadable weights: what to do, said at once.

Issue 12 item 5. Causes: a missing-weights error said where it looked but not
what to do, and without HF_HUB_OFFLINE a hub-backed extractor spent ~50 s in
huggingface_hub's retries (ten warnings) before failing.
"""

from __future__ import annotations

import logging

import pytest

from amid.errors import CheckpointError
from amid.extract.extractors import build_extractor
from amid.extract.extractors import weights as weights_module

POINTER = 'See the README section "Working offline"'


@pytest.fixture
def no_hub(monkeypatch, tmp_path):
    """Online mode, an empty HF cache, and a hub address that refuses connections."""
    for key in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HTTPS_PROXY", "https_proxy",
                "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # discard port: nothing listens

    def never(*args, **kwargs):
        raise AssertionError("a download was attempted although the hub cannot be reached")

    import huggingface_hub
    import transformers

    monkeypatch.setattr(transformers.AutoModel, "from_pretrained", never)
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", never)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", never)


def test_unreachable_hub_fails_at_once_with_what_to_do(no_hub, caplog):
    with caplog.at_level(logging.WARNING), pytest.raises(CheckpointError) as err:
        build_extractor("bert", {})
    message = str(err.value)
    assert message.startswith("cannot load tokenizer 'bert-base-uncased': the Hugging Face hub "
                              "cannot be reached and the model is not in the cache")
    assert "the hub: cannot be reached (127.0.0.1:9: Connection refused)" in message
    assert "HF_HUB_OFFLINE=1" in message and POINTER in message
    assert "Retrying" not in caplog.text  # no retry loop ran


def test_unreachable_hub_timm_weights_fail_at_once(no_hub):
    with pytest.raises(CheckpointError) as err:
        build_extractor("densenet", {"model": "test_resnet"})
    assert "the hub: cannot be reached (127.0.0.1:9: Connection refused)" in str(err.value)
    assert "Set params.checkpoint to a local weight file" in str(err.value)
    assert POINTER in str(err.value)


def test_missing_weights_say_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    for name, params in (("panns-cnn14", {"checkpoint": str(tmp_path / "absent.pth")}),
                         ("densenet", {"checkpoint": str(tmp_path / "absent.pth")}),
                         ("wav2vec2", {"model": str(tmp_path / "absent-folder")}),
                         ("bert", {}), ("densenet", {})):
        with pytest.raises(CheckpointError) as err:
            build_extractor(name, params)
        assert POINTER in str(err.value), name
        assert "random_init: true" in str(err.value), name


def test_the_probe_reports_a_live_endpoint_as_reachable(monkeypatch):
    import socket

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    try:
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.getsockname()[1]}")
        for key in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
            monkeypatch.delenv(key, raising=False)
        assert weights_module.hub_unreachable() is None
    finally:
        server.close()
