"""Peak memory of `amid-extract run` on one clip of 10 s, 2 h and 4 h (bench/extract.py, part l).

Each clip is a 16 kHz mono 16-bit wav (a tone in noise), written block by
block into a temporary folder, alone in a one-row manifest; a fresh Python
process runs `amid-extract run -m audio -q` with the demo's audio extractor
(`logmel`, `pooling: stats`) or the one given, and the peak resident memory
of that child (`RUSAGE_CHILDREN`'s maxrss, read by a parent made for it
alone) is printed with the wall time. Memory should be flat in the clip's
length: long clips are streamed (docs/data.md, "Long media").
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import yaml

RATE = 16000


def write_clip(path: Path, seconds: float, block_seconds: float = 60.0) -> Path:
    """A tone in noise, written in blocks so the benchmark itself stays small."""
    rng = np.random.default_rng(0)
    with sf.SoundFile(str(path), "w", RATE, 1, subtype="PCM_16", format="WAV") as f:
        done, total = 0, int(seconds * RATE)
        while done < total:
            n = min(int(block_seconds * RATE), total - done)
            t = (done + np.arange(n)) / RATE
            f.write((0.3 * np.sin(2 * np.pi * 440 * t) + 0.05 * rng.standard_normal(n))
                    .astype(np.float32))
            done += n
    return path


def peak_rss(root: Path, seconds: float, extractor: str, params: dict) -> tuple[float, float]:
    """(peak RSS in MiB, wall seconds) of one extraction of a clip of `seconds`."""
    folder = root / f"clip{int(seconds)}"
    folder.mkdir(parents=True, exist_ok=True)
    write_clip(folder / "clip.wav", seconds)
    manifest = "sample_id,label,split,audio_path\nclip,a,train,clip.wav\n"
    (folder / "manifest.csv").write_text(manifest)
    config = {"dataset": {"name": "long", "root": str(folder),
                          "manifest": str(folder / "manifest.csv"),
                          "cache_dir": str(folder / "cache"), "target": ["audio"],
                          "auxiliary": []},
              "extract": {"audio": {"extractor": extractor, "params": params}}}
    (folder / "params.yaml").write_text(yaml.safe_dump(config))
    # A fresh parent per clip: RUSAGE_CHILDREN's maxrss is the largest child so far.
    probe = (
        "import resource, subprocess, sys; "
        "subprocess.run([sys.executable, '-m', 'amid.extract.cli', 'run', '-m', 'audio', "
        f"'-p', {str(folder / 'params.yaml')!r}, '-q'], check=True); "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
    )
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True,
                         text=True)
    seconds_taken = time.perf_counter() - t0
    (folder / "clip.wav").unlink()  # 460 MB for 4 h: free it before the next clip
    return int(out.stdout.split()[-1]) / 1024, seconds_taken


def report(root: Path, durations: list[float], extractor: str = "logmel",
           params: dict | None = None) -> None:
    params = params if params is not None else {"sample_rate": RATE, "pooling": "stats"}
    print(f"peak RSS of `amid-extract run -m audio` on one 16 kHz clip ({extractor} {params}):")
    for seconds in durations:
        mib, taken = peak_rss(root, seconds, extractor, params)
        label = f"{seconds / 3600:.0f} h" if seconds >= 3600 else f"{seconds:.0f} s"
        print(f"  {label:>5}: {mib:7.0f} MiB peak RSS, {taken:6.1f} s")


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        report(Path(tmp), [10.0, 7200.0, 14400.0])
