"""Extraction throughput: the pipeline end to end beside the model's own forward rate.

For CNN14 on 10 s clips (from wav files) and DenseNet-121 on 224x224 frames
(from MPEG-4 videos), prints items per second of

- model only: the extractor's network on ready tensors, same device and batch;
- pipeline: `run_extraction` from files on disk to a finished cache;

and their ratio, plus the video decode rate with 1, 2, 4, ... decoding
threads. Weights are random (shapes and cost are what matter); the device is
printed with the figures. A GPU run: `python bench/extract.py --device cuda`.

    python bench/extract.py                 # CPU, small sizes (about 2 minutes on 2 cores)
    python bench/extract.py --device cuda --clips 2048 --videos 256 --batch 64
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf
import torch

from amid.extract.demo import write_video
from amid.extract.extractors import build_extractor
from amid.extract.media import load_video
from amid.extract.run import run_extraction
from amid.manifest import read_manifest, write_manifest


def device_name(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def model_rate(module: torch.nn.Module, make: callable, n: int, batch: int, device: str,
               amp: str | None) -> float:
    """Items per second of `module` alone on ready device tensors."""
    x = make(batch).to(device)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp or "")
    ctx = torch.autocast("cuda", dtype=dtype, enabled=dtype is not None and "cuda" in device)
    with torch.inference_mode(), ctx:
        module(x)  # warm-up (cuDNN autotune, lazy init)
        sync(device)
        t0 = time.perf_counter()
        done = 0
        while done < n:
            module(x)
            done += batch
        sync(device)
    return done / (time.perf_counter() - t0)


def pipeline_rate(root: Path, manifest: pd.DataFrame, modality: str, name: str, params: dict,
                  batch: int, workers: int, device: str, amp: str | None) -> float:
    write_manifest(manifest, root / "manifest.csv")
    extractor = build_extractor(name, params).to(device)
    extractor.amp = amp
    out = root / f"{name}.h5"
    out.unlink(missing_ok=True)
    t0 = time.perf_counter()
    report = run_extraction(read_manifest(root / "manifest.csv", root), modality, extractor, out,
                            batch_size=batch, num_workers=workers, progress=False)
    sync(device)
    return report.written / (time.perf_counter() - t0)


def bench_cnn14(root: Path, n: int, batch: int, workers: int, device: str, amp: str | None
                ) -> tuple[float, float]:
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        sf.write(root / f"clip{i}.wav", 0.1 * rng.standard_normal(320_000).astype(np.float32),
                 32000, subtype="PCM_16")
        rows.append({"sample_id": f"clip{i}", "label": "x", "split": "train",
                     "audio_path": f"clip{i}.wav"})
    params = {"random_init": True}
    module = build_extractor("panns-cnn14", params).to(device).module
    model = model_rate(module, lambda b: torch.randn(b, 320_000), n, batch, device, amp)
    pipe = pipeline_rate(root, pd.DataFrame(rows), "audio", "panns-cnn14", params, batch,
                         workers, device, amp)
    return model, pipe


def bench_densenet(root: Path, n_videos: int, frames: int, batch: int, workers: int,
                   device: str, amp: str | None) -> tuple[float, float]:
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n_videos):
        video = rng.integers(0, 256, size=(frames, 224, 224, 3), dtype=np.uint8)
        write_video(root / f"video{i}.avi", video, fps=frames)
        rows.append({"sample_id": f"video{i}", "label": "x", "split": "train",
                     "video_path": f"video{i}.avi"})
    params = {"random_init": True, "fps": float(frames)}
    extractor = build_extractor("densenet", params).to(device)
    model = model_rate(extractor.module, lambda b: torch.randn(b, 3, 224, 224),
                       n_videos * frames, batch, device, amp)
    # the runner batches videos; frames per forward = videos per batch x frames per video
    pipe = pipeline_rate(root, pd.DataFrame(rows), "visual", "densenet", params,
                         max(1, batch // frames), workers, device, amp)
    return model, pipe * frames


def decode_rates(root: Path, n_videos: int, max_workers: int) -> dict[int, float]:
    """Frames per second decoded (PyAV) with 1, 2, 4, ... threads."""
    from concurrent.futures import ThreadPoolExecutor

    paths = sorted(root.glob("video*.avi"))[:n_videos]
    rates = {}
    workers = 1
    while workers <= max_workers:
        t0 = time.perf_counter()
        with ThreadPoolExecutor(workers) as pool:
            total = sum(len(f) for f in pool.map(lambda p: load_video(p, None), paths))
        rates[workers] = total / (time.perf_counter() - t0)
        workers *= 2
    return rates


def peak_rss_of_extraction(root: Path, n_per_class: int) -> tuple[int, float]:
    """(samples, peak RSS in MiB) of `amid-extract run -m visual` on a demo of that size."""
    import subprocess
    import sys

    import yaml

    from amid.extract.demo import DemoSpec, make_demo

    data = root / f"demo{n_per_class}"
    manifest = make_demo(data, DemoSpec(n_per_class=n_per_class))
    params = {"dataset": {"name": f"demo{n_per_class}", "root": str(data),
                          "manifest": str(data / "manifest.csv"), "cache_dir": str(root / "cache"),
                          "target": ["visual"], "auxiliary": []},
              "extract": {"visual": {"extractor": "pixels", "params": {"grid": 8}}}}
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    # A fresh parent per size: RUSAGE_CHILDREN's maxrss is the largest child so far.
    probe = (
        "import resource, subprocess, sys; "
        "subprocess.run([sys.executable, '-m', 'amid.extract.cli', 'run', '-m', 'visual', "
        f"'--params', {str(root / 'params.yaml')!r}, '--quiet'], check=True, "
        "capture_output=True); print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
    )
    out = subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True,
                         text=True)
    return len(manifest), int(out.stdout.split()[-1]) / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--amp", default="bf16", choices=["none", "bf16", "fp16"])
    ap.add_argument("--clips", type=int, default=16, help="10 s clips for CNN14")
    ap.add_argument("--videos", type=int, default=8, help="videos of --frames frames at 224")
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--workers", type=int, default=2, help="decoding threads of the pipeline")
    ap.add_argument("--rss-per-class", type=int, default=40,
                    help="demo size (x10 samples) of the 1x peak-memory run; 4x follows")
    args = ap.parse_args()
    amp = None if args.amp == "none" else args.amp
    print(f"device: {device_name(args.device)}; torch {torch.__version__}; amp {args.amp} "
          f"(GPU only); batch {args.batch}; decode threads {args.workers}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model, pipe = bench_cnn14(root, args.clips, args.batch, args.workers, args.device, amp)
        print(f"CNN14, 10 s clips : model only {model:9.1f} clips/s | pipeline {pipe:9.1f} "
              f"clips/s | pipeline / model {pipe / model:5.2f}")
        model, pipe = bench_densenet(root, args.videos, args.frames, args.batch, args.workers,
                                     args.device, amp)
        print(f"DenseNet-121, 224 : model only {model:9.1f} frames/s | pipeline {pipe:9.1f} "
              f"frames/s | pipeline / model {pipe / model:5.2f}")
        rates = decode_rates(root, args.videos, os.cpu_count() or 1)
        base = rates[1]
        print("video decode (PyAV): " + "; ".join(
            f"{w} thread(s) {r:8.1f} frames/s (x{r / base:.2f})" for w, r in rates.items()))
        sizes = [peak_rss_of_extraction(root, n) for n in (args.rss_per_class,
                                                            4 * args.rss_per_class)]
        print("peak RSS of `amid-extract run` (demo videos, pixels): " + "; ".join(
            f"{n} samples {mib:.0f} MiB" for n, mib in sizes))


if __name__ == "__main__":
    main()
