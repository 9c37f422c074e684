"""`amid-evaluate` and `amid-predict`: thin commands over the library.

Each command loads the configuration once (when it needs one) and calls one
library function. Errors the user can fix (`AmidError`) print one line on
stderr and exit with status 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import typer

from amid.config import EvaluateConfig, load_config
from amid.errors import AmidError

app = typer.Typer(
    add_completion=False, no_args_is_help=True,
    help="Stage three of AMID: metrics, fold summaries, paper tables and figures, inference.",
)
predict_app = typer.Typer(add_completion=False, help="Apply a trained student to feature caches.")


@contextmanager
def _user_errors() -> Iterator[None]:
    try:
        yield
    except AmidError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


def _evaluate_config(params: Path | None, overrides: list[str]) -> EvaluateConfig:
    """The `evaluate` section; defaults when no params.yaml is given or present."""
    if params is None:
        if not Path("params.yaml").exists():
            if overrides:
                raise AmidError("--set needs a params.yaml (none here; pass --params)")
            return EvaluateConfig()
        params = Path("params.yaml")
    return load_config(params, overrides).evaluate


def _pct(value: Any) -> str:
    return f"{100 * value:.1f}" if isinstance(value, int | float) else "–"


@app.command("run")
def run_command(
    run_dir: Path = typer.Argument(..., help="Run folder (or its outputs.h5) from amid-train."),
    out: Path = typer.Option(..., "--out", help="Metrics JSON to write (plot data goes next "
                             "to it, in a folder of the same name)."),
    params: Path | None = typer.Option(None, "--params", help="params.yaml (evaluate section)."),
    overrides: list[str] = typer.Option([], "--set", "-S", help="key=value override."),
) -> None:
    """Score one run: Top-1/Top-5/WA/UA, retrieval R@K, teacher metrics."""
    from amid.evaluate.evaluate import evaluate_run

    with _user_errors():
        cfg = _evaluate_config(params, overrides)
        outputs = run_dir if run_dir.suffix == ".h5" else run_dir / "outputs.h5"
        metrics = evaluate_run(
            outputs, out, ks=cfg.ks, chunk_size=cfg.chunk_size, split=cfg.split,
            gallery_split=cfg.gallery_split, projection=cfg.projection,
            gallery_chunk_size=cfg.gallery_chunk_size,
        )
    role = "teacher" if metrics["method"] == "teacher" or "student" not in metrics else "student"
    block = metrics[role]
    typer.echo(
        f"{metrics['method']} ({role}): top1 {_pct(block.get('top1'))}  "
        f"ua {_pct(block.get('ua'))}  -> {out}"
    )


@app.command("summarize")
def summarize_command(
    files: list[Path] = typer.Argument(..., help="Per-fold or per-seed metrics JSON files."),
    out: Path = typer.Option(..., "--out", help="Summary JSON to write."),
) -> None:
    """Mean and std of every metric over folds or seeds."""
    from amid.evaluate.evaluate import write_metrics
    from amid.evaluate.summary import summarize

    with _user_errors():
        write_metrics(summarize(files), out)
    typer.echo(f"summary of {len(files)} file(s) -> {out}")


@app.command("sweep")
def sweep_command(
    folder: Path = typer.Argument(..., help="Sweep folder of amid-train --sweep/--grid (holds "
                                  "sweep.json)."),
    out: Path = typer.Option(..., "--out", help="Grouped metrics JSON to write; the ablation "
                             "table goes beside it as .md, each member's metrics into a folder "
                             "of the same name."),
    params: Path | None = typer.Option(None, "--params", help="params.yaml (evaluate section)."),
    overrides: list[str] = typer.Option([], "--set", "-S", help="key=value override."),
) -> None:
    """Score every member of a sweep; mean ± std over seeds per setting of the other axes."""
    from amid.evaluate.sweep import evaluate_sweep

    with _user_errors():
        cfg = _evaluate_config(params, overrides)
        result = evaluate_sweep(folder, out, cfg.ks, cfg.chunk_size, cfg.split,
                                cfg.gallery_split, gallery_chunk_size=cfg.gallery_chunk_size)
    for name, s in result["groups"].items():
        top1 = s.get("student", s.get("teacher", {})).get("top1")
        typer.echo(f"{name}: top1 {_pct(top1)} (n={s['n']})")
    typer.echo(f"-> {out} and {out.with_suffix('.md')}")


@app.command("report")
def report_command(
    metrics: list[str] = typer.Option(["metrics/*.json"], "--metrics", help="Glob(s) of "
                                      "metrics JSON files (quote it)."),
    runs: Path | None = typer.Option(Path("runs"), "--runs", help="Run folders (dvclive "
                                     "histories for the per-epoch figures)."),
    out: Path = typer.Option(Path("reports"), "--out", help="Folder for results.md and PNGs."),
    compare: list[str] = typer.Option(["amid", "baseline"], "--compare", help="The two "
                                      "methods of the per-class figure."),
) -> None:
    """Paper-style Markdown tables and figures from the metrics files present."""
    from amid.evaluate.report import find_metrics, write_report

    with _user_errors():
        files, skipped = find_metrics(metrics)
        for path in skipped:
            typer.echo(f"skipping {path}: not a metrics file", err=True)
        if not files:
            raise AmidError(f"no metrics files match {' '.join(metrics)}")
        written = write_report(files, out, runs, compare)
    typer.echo(f"report of {len(files)} metrics file(s): {len(written)} file(s) in {out}")


def _predict(
    run_dir: Path, cache: list[str], out: Path, h5: Path | None, batch_size: int, device: str
) -> None:
    from amid.evaluate.predict import parse_cache_args, predict, write_predictions

    with _user_errors():
        result, classes = predict(run_dir, parse_cache_args(cache), batch_size, device)
        written = write_predictions(result, classes, out, h5)
    typer.echo(f"{len(result['ids'])} prediction(s) -> {', '.join(map(str, written))}")


_RUN = typer.Argument(..., help="Run folder written by amid-train.")
_CACHE = typer.Option([], "--cache", help="MODALITY=PATH of a feature cache (repeat per "
                      "target modality; default: the caches the run was trained on).")
_OUT = typer.Option(Path("predictions.csv"), "--out", help="CSV of labels and probabilities.")
_H5 = typer.Option(None, "--h5", help="HDF5 of ids, embeddings, probabilities "
                   "(default: the CSV path with .h5).")


@app.command("predict")
def predict_command(
    run_dir: Path = _RUN, cache: list[str] = _CACHE, out: Path = _OUT, h5: Path | None = _H5,
    batch_size: int = typer.Option(256, "--batch-size", min=1),
    device: str = typer.Option("cpu", "--device"),
) -> None:
    """Labels, probabilities and embeddings from target-modality caches alone."""
    _predict(run_dir, cache, out, h5, batch_size, device)


@predict_app.command()
def predict_only(
    run_dir: Path = _RUN, cache: list[str] = _CACHE, out: Path = _OUT, h5: Path | None = _H5,
    batch_size: int = typer.Option(256, "--batch-size", min=1),
    device: str = typer.Option("cpu", "--device"),
) -> None:
    """Labels, probabilities and embeddings from target-modality caches alone."""
    _predict(run_dir, cache, out, h5, batch_size, device)


@app.command("export")
def export_command(
    run_dir: Path = _RUN,
    fmt: str = typer.Option("torchscript", "--format", help="torchscript or onnx."),
    out: Path | None = typer.Option(None, "--out", help="Output file (default: in the run "
                                    "folder, student.pt or student.onnx)."),
) -> None:
    """Export the student for deployment without this package."""
    from amid.evaluate.export import export_student

    with _user_errors():
        path = export_student(run_dir, fmt, out)
    typer.echo(f"exported {fmt} -> {path}")


def main() -> None:
    app()


def predict_main() -> None:
    predict_app()
