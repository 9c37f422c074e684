"""CNN14 against an independent numpy reference (fixtures/make_panns_fixture.py),
strict checkpoint loading, padding of short clips, sliding windows."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from repo_data import AUDIOSET_WAV as WAV  # tests/extract/fixtures, on pytest's pythonpath

from amid.errors import CheckpointError, ConfigError
from amid.extract.extractors import panns
from amid.extract.extractors.base import EXTRACTORS, MediaItem, build_extractor, build_params

FIXTURES = Path(__file__).parent / "fixtures"


def _import(name: str):
    spec = importlib.util.spec_from_file_location(f"amid_test_{name}", FIXTURES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


ref = _import("make_panns_fixture")


@pytest.fixture(scope="module")
def expected() -> dict[str, np.ndarray]:
    return dict(np.load(FIXTURES / "panns_reference.npz"))


def _published_state(embed_dim: int, filterbank: np.ndarray) -> dict[str, torch.Tensor]:
    """The reference weights plus the frozen front-end tensors, as a PANNs .pth holds them."""
    state = {k: torch.from_numpy(v) for k, v in ref.state_dict(ref.SEED, embed_dim).items()}
    n = np.arange(1024)
    k = np.arange(513)[:, None]
    window = 0.5 - 0.5 * np.cos(2 * np.pi * n / 1024)
    dft = np.exp(-2j * np.pi * k * n / 1024) * window  # torchlibrosa's conv kernels
    state["spectrogram_extractor.stft.conv_real.weight"] = torch.tensor(dft.real[:, None]).float()
    state["spectrogram_extractor.stft.conv_imag.weight"] = torch.tensor(dft.imag[:, None]).float()
    state["logmel_extractor.melW"] = torch.tensor(np.ascontiguousarray(filterbank)).float()
    return state


@pytest.fixture(scope="module")
def state_512(expected) -> dict[str, torch.Tensor]:
    return _published_state(512, expected["filterbank"])


@pytest.fixture(scope="module")
def checkpoint_2048(tmp_path_factory, expected) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "Cnn14_mAP=0.431.pth"
    torch.save({"iteration": 0, "model": _published_state(2048, expected["filterbank"])}, path)
    return path


def test_front_end_matches_reference(expected) -> None:
    front = panns.LogMel(32000, 1024, 320, 64, 50.0, 14000.0)
    np.testing.assert_allclose(front.melW.numpy(), expected["filterbank"], atol=1e-7)
    for k in range(2):
        mel = front(torch.from_numpy(expected[f"wave{k}"])[None])[0, 0].numpy()
        assert mel.shape == expected[f"logmel{k}"].shape
        np.testing.assert_allclose(mel, expected[f"logmel{k}"], atol=2e-3)


def test_embedding_matches_reference_from_published_checkpoint(checkpoint_2048, expected) -> None:
    ex = build_extractor("panns-cnn14", {"checkpoint": str(checkpoint_2048)})
    assert ex.feature_dim == 2048 and ex.model == str(checkpoint_2048)
    # two clips of different lengths in one batch
    out = ex.embed([ex.windows(expected["wave0"]), ex.windows(expected["wave1"])])
    for k in range(2):
        assert out[k].shape == (1, 2048) and out[k].dtype == np.float32
        np.testing.assert_allclose(out[k][0], expected[f"embedding{k}_2048"], rtol=1e-4, atol=1e-5)
        wave = torch.from_numpy(expected[f"wave{k}"])[None]
        with torch.inference_mode():
            clipwise = ex.module(wave)[1][0].numpy()
        np.testing.assert_allclose(clipwise, expected[f"clipwise{k}_2048"], atol=1e-5)


def test_emb512_variant_from_safetensors_and_media_item(tmp_path, expected, state_512) -> None:
    from safetensors.torch import save_file

    path = tmp_path / "Cnn14_emb512.safetensors"
    save_file(state_512, str(path))
    ex = build_extractor("panns-cnn14-emb512", {"checkpoint": str(path)})
    assert ex.feature_dim == 512
    # through load(): the real clip read from disk, cut by start/end
    loaded = ex.load(MediaItem("clip", WAV, start=3.0, end=3.7))
    np.testing.assert_array_equal(loaded[0], expected["wave1"])
    out = ex.embed([loaded])[0]
    np.testing.assert_allclose(out[0], expected["embedding1_512"], rtol=1e-4, atol=1e-5)


def test_bad_checkpoints_are_refused(state_512) -> None:
    model = panns.Cnn14(embed_dim=512)
    good = state_512
    panns.load_cnn14_state(model, good, "ok.pth")  # the reference loads

    wrong_mel = dict(good)  # a 16 kHz front end's filterbank (fmax 8000)
    wrong_mel["logmel_extractor.melW"] = torch.tensor(
        ref.mel_filterbank(fmax=8000.0)).float()
    with pytest.raises(CheckpointError, match="melW differs"):
        panns.load_cnn14_state(model, wrong_mel, "x.pth")
    extra = {**good, "spec_augmenter.stripes": torch.zeros(1)}
    with pytest.raises(CheckpointError, match=r"unexpected keys \['spec_augmenter.stripes'\]"):
        panns.load_cnn14_state(model, extra, "x.pth")
    missing = {k: v for k, v in good.items() if k != "conv_block3.bn2.running_var"}
    with pytest.raises(CheckpointError, match=r"missing keys \['conv_block3.bn2.running_var'\]"):
        panns.load_cnn14_state(model, missing, "x.pth")
    with pytest.raises(CheckpointError, match=r"fc1.weight \(512, 2048\) != \(2048, 2048\)"):
        panns.load_cnn14_state(panns.Cnn14(embed_dim=2048), good, "x.pth")


def test_checkpoint_files_and_settings(tmp_path, checkpoint_2048) -> None:
    with pytest.raises(ConfigError, match="params.checkpoint: .*needs the path of a PANNs CNN14"):
        build_extractor("panns-cnn14", {})
    with pytest.raises(CheckpointError, match="not found"):
        build_extractor("panns-cnn14", {"checkpoint": str(tmp_path / "absent.pth")})
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(checkpoint_2048.read_bytes()[:5000])
    with pytest.raises(CheckpointError, match="cannot be read"):
        build_extractor("panns-cnn14", {"checkpoint": str(truncated)})
    # the 32 kHz checkpoint with 16 kHz settings: caught by the front-end check
    with pytest.raises(CheckpointError, match="differs from this front end"):
        build_extractor("panns-cnn14", {"checkpoint": str(checkpoint_2048),
                                        "sample_rate": 16000, "fmax": 8000.0})


def test_short_clip_is_zero_padded_not_a_crash(tmp_path) -> None:
    ex = build_extractor("panns-cnn14-emb512", {"random_init": True})
    assert ex.model.startswith("random-init")
    short = (np.random.default_rng(0).standard_normal(1600) * 0.1).astype(np.float32)  # 0.05 s
    path = tmp_path / "short.wav"
    sf.write(str(path), short, 32000, subtype="FLOAT")
    loaded = ex.load(MediaItem("s", path))
    assert loaded.shape == (1, 31 * 320 + 1)  # the fewest samples that give 32 frames
    padded = np.zeros(31 * 320 + 1, np.float32)
    padded[:1600] = short
    out = ex.embed([loaded])[0]
    assert out.shape == (1, 512) and np.isfinite(out).all()
    with torch.inference_mode():
        direct = ex.module(torch.from_numpy(padded)[None])[0].numpy()
    np.testing.assert_allclose(out, direct, rtol=1e-5, atol=1e-6)
    # seeded: two random-init extractors give the same features (CI is reproducible)
    again = build_extractor("panns-cnn14-emb512", {"random_init": True})
    np.testing.assert_array_equal(again.embed([loaded])[0], out)


def test_sliding_windows(expected) -> None:
    ex = build_extractor("panns-cnn14-emb512",
                         {"random_init": True, "window_seconds": 0.5, "hop_seconds": 0.25})
    wave = np.concatenate([expected["wave0"], expected["wave1"][:3200]])  # 1.1 s
    windows = ex.windows(wave)
    # 0.5 s windows every 0.25 s at 32 kHz: 1 + ceil((1.1 - .5) / .25) = 4, the last padded
    assert windows.shape == (4, 16000)
    np.testing.assert_array_equal(windows[2], wave[16000:32000])
    np.testing.assert_array_equal(windows[3][:11200], wave[24000:])
    assert not windows[3][11200:].any()
    seq = ex.embed([windows])[0]
    assert seq.shape == (4, 512)
    with torch.inference_mode():  # the second window on its own, as a clip
        alone = ex.module(torch.from_numpy(wave[8000:24000])[None])[0][0].numpy()
    np.testing.assert_allclose(seq[1], alone, rtol=1e-5, atol=1e-6)


def test_registry_and_params() -> None:
    assert {"panns-cnn14", "panns-cnn14-emb512"} <= set(EXTRACTORS.names())
    cls = EXTRACTORS.get("panns-cnn14-emb512")
    params = build_params(cls, {"random_init": True, "hop_size": 160}, "p").model_dump()
    assert params["random_init"] is True and params["hop_size"] == 160
    assert params["window_seconds"] is None and params["checkpoint"] == ""
    with pytest.raises(ConfigError, match="unknown parameter"):
        build_extractor("panns-cnn14", {"random_init": True, "hopsize": 160})
