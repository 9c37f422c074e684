"""Exporting a run's student for use without this package (TorchScript, ONNX).

The exported model takes flat tensors, two per target modality in the order
recorded with it: features `x_<m>` (B, T, D) float32, zero-padded, and
`len_<m>` (B,) int64; it returns (embeddings (B, d), logits (B, C),
probabilities (B, C)). Sequences longer than the run's `max_steps` should be
subsampled the way `amid.distill.features.pad_sequences` does before calling it.
The metadata (modalities, feature dims, classes, max_steps) travels inside
the TorchScript file (`meta.json` extra file) and next to either export as
`<file>.json`, with the SHA-256 of the model file it belongs to; the two are
replaced together (`amid.storage.replace_together`). The default place is
`exports/<run>/`, outside the run folder (a DVC output).

Tracing is used instead of scripting: the student's forward takes a dict and
unpacks it, which TorchScript cannot compile, while a trace of the flat wrapper
records the time and batch sizes as dynamic shapes (checked in the tests on a
batch of another size and length than the trace's).

ONNX goes through the TorchScript-based exporter (`dynamo=False`), which emits
native ONNX GRU/LSTM ops whose batch and time axes stay symbolic. torch 2.11's
default dynamo exporter fixes the RNN's time axis to the example's length (an
input declared dynamic comes out as a fixed 5) and takes seconds where this
takes a fraction of one. Variable lengths inside a batch need nothing special:
the student masks instead of packing (see `amid.distill.models`), so the same
gather/where ops run in the exported graph. Each modality gets its own time
axis name, since their sequences have unrelated lengths.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import os
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from amid.distill.inference import load_student
from amid.errors import AmidError, OutputError
from amid.storage import replace_together

FORMATS = ("torchscript", "onnx")


class FlatStudent(nn.Module):
    """The student with positional tensor inputs: (x_m1, len_m1, x_m2, len_m2, ...)."""

    def __init__(self, student: nn.Module, modalities: list[str]) -> None:
        super().__init__()
        self.student = student
        self.modalities = list(modalities)

    def forward(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        inputs = {m: (tensors[2 * k], tensors[2 * k + 1]) for k, m in enumerate(self.modalities)}
        embeddings, logits = self.student(inputs)
        return embeddings, logits, logits.softmax(dim=1)


def example_inputs(
    meta: dict[str, Any], batch: int = 3, steps: int = 5
) -> tuple[torch.Tensor, ...]:
    """Random padded inputs of the right dims (lengths vary, one at full length)."""
    generator = torch.Generator().manual_seed(0)
    tensors: list[torch.Tensor] = []
    for m in meta["target"]:
        dim = int(meta["feature_dims"][m])
        tensors.append(torch.randn(batch, steps, dim, generator=generator))
        lengths = torch.randint(1, steps + 1, (batch,), generator=generator)
        lengths[0] = steps
        tensors.append(lengths.to(torch.int64))
    return tuple(tensors)


def export_meta(meta: dict[str, Any], fmt: str) -> dict[str, Any]:
    inputs = [name for m in meta["target"] for name in (f"x_{m}", f"len_{m}")]
    return {
        "format": fmt, "inputs": inputs, "outputs": ["embeddings", "logits", "probabilities"],
        "target": list(meta["target"]), "feature_dims": meta["feature_dims"],
        "classes": meta["classes"], "max_steps": meta.get("max_steps"),
        "method": meta.get("method"), "dataset": meta.get("dataset"),
    }


def onnx_axes(info: dict[str, Any]) -> dict[str, dict[int, str]]:
    """Symbolic axes: batch everywhere, and a separate time axis per modality."""
    axes: dict[str, dict[int, str]] = {}
    for name in info["inputs"]:
        axes[name] = {0: "batch", 1: f"steps_{name[2:]}"} if name.startswith("x_") else {0: "batch"}
    axes |= {name: {0: "batch"} for name in info["outputs"]}
    return axes


def export_student(run_dir: str | Path, fmt: str = "torchscript", out: str | Path | None = None
                   ) -> Path:
    """Export the run's student; returns the written file (metadata beside it as .json)."""
    if fmt not in FORMATS:
        raise AmidError(f"unknown export format {fmt!r}; known: {', '.join(FORMATS)}")
    if fmt == "onnx" and importlib.util.find_spec("onnx") is None:
        raise AmidError(
            "ONNX export needs the `onnx` package, which is not installed "
            "(pip install onnx); --format torchscript needs nothing extra"
        )
    run_dir = Path(run_dir)
    student, meta = load_student(run_dir, device="cpu")
    flat = FlatStudent(student, meta["target"]).eval()
    example = example_inputs(meta)
    info = export_meta(meta, fmt)
    name = "student.pt" if fmt == "torchscript" else "student.onnx"
    path = Path(out) if out is not None else default_export(run_dir, name)
    if path.is_dir():
        raise OutputError(f"--out {path} is a folder; give the file to write "
                          f"(e.g. {path / name})")
    # The model is serialised in memory and written as plain bytes: torch's zip
    # writer aborts the whole process (SIGABRT) when a write fails for lack of
    # space, and the ONNX exporter leaves a truncated file where a good one was.
    buffer = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        # The trace is checked for shape generality in the tests; torch's generic
        # tracer and deprecation notices would only alarm the user here.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        # The exporter warns that a GRU exported at batch > 1 may fail at another
        # batch size unless h0 is an input; the student never passes h0, so ONNX
        # starts from zeros at any batch size (the tests run another batch size).
        warnings.filterwarnings("ignore", message=r"Exporting a model to ONNX with a batch_size")
        # ... and that gathered indices must not be negative: they are `lengths - 1`
        # with lengths >= 1, and row numbers.
        warnings.filterwarnings("ignore", message=r"Exporting aten::index operator")
        if fmt == "torchscript":
            traced = torch.jit.trace(flat, example, check_trace=False)
            torch.jit.save(traced, buffer, _extra_files={"meta.json": json.dumps(info)})
        else:
            torch.onnx.export(flat, example, buffer, input_names=info["inputs"],
                              output_names=info["outputs"], dynamic_axes=onnx_axes(info),
                              dynamo=False)
    data = buffer.getvalue()
    # the metadata names the model bytes it describes: a pair mixed by a kill between
    # the two renames shows (`check_export`)
    text = json.dumps({**info, "sha256": hashlib.sha256(data).hexdigest()}, indent=2,
                      allow_nan=False) + "\n"
    meta_path = Path(f"{path}.json")
    # both written first, then renamed together, each space reserved: a full disk or a
    # blocked destination is a one-line error and both previous files stay
    with replace_together([path, meta_path], OutputError,
                          reserve=[len(data), len(text.encode())]) as (tmp, tmp_meta):
        tmp.write_bytes(data)
        tmp_meta.write_text(text, encoding="utf-8")
    return path


def default_export(run_dir: Path, name: str) -> Path:
    """`exports/<run>/<name>`: outside the run folder, which is a DVC stage's output (a
    file written into it marks the stage changed). `<run>` is the run's path below `runs/`
    when it lies there (`runs/sweeps/alpha/seed=0` -> `exports/sweeps/alpha/seed=0`),
    else the folder's name."""
    parts = Path(os.path.abspath(run_dir)).parts
    below = parts[len(parts) - parts[::-1].index("runs"):] if "runs" in parts[:-1] else ()
    return Path("exports", *(below or parts[-1:]), name)


def check_export(path: str | Path) -> dict[str, Any]:
    """The metadata beside an export, refused when it describes other model bytes."""
    path = Path(path)
    meta = json.loads(Path(f"{path}.json").read_text(encoding="utf-8"))
    if meta.get("sha256") != hashlib.sha256(path.read_bytes()).hexdigest():
        raise OutputError(f"{path}.json does not describe {path} (written by another export, or "
                          "one killed between its two files): export again")
    return meta


def load_torchscript(path: str | Path) -> tuple[torch.jit.ScriptModule, dict[str, Any]]:
    """An exported TorchScript student and its metadata (no amid code needed to run it)."""
    extra = {"meta.json": ""}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        model = torch.jit.load(str(path), _extra_files=extra)
    return model, json.loads(extra["meta.json"])
