"""`amid-evaluate`: thin commands over the library (stage three).

One style with the other commands (amid/cli.py): `-o/--out` is always the
output and has a default where one makes sense, `-p/--params` and `-S/--set`
where the configuration is read, `-q/--quiet`; a mistake the user can fix is
one line `amid-evaluate: error: ...` on stderr and exit status 2.
`amid-predict` lives in predict_cli.py; `amid-evaluate predict` is the same
command.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import typer

from amid.cli import (
    errors,
    group_callback,
    group_options,
    quiet_option,
    set_option,
    setup_logging,
)
from amid.config import Config, EvaluateConfig, load_config
from amid.errors import AmidError
from amid.evaluate import predict_cli

# Each command imports its work inside the function: `--help` loads no torch or
# matplotlib, and each stage loads only the modules it runs (dvc.yaml's deps;
# tests/test_pipeline.py).
PROG = "amid-evaluate"
predict_app = predict_cli.predict_app  # the `amid-predict` app, for callers of this module
log = logging.getLogger(__name__)

app = typer.Typer(
    add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
    help="Stage three of AMID: metrics, fold summaries, sweeps, paper tables and figures, "
         "export; `predict` is amid-predict.",
)
PARAMS_HELP = "Configuration file (default: ./params.yaml when present, else the defaults)."
# `amid-evaluate -p FILE run ...` as well as `amid-evaluate run -p FILE ...` (amid.cli)
app.callback()(group_callback)


def _config(params: Path | None, overrides: list[str]) -> Config | None:
    """The configuration, or None when no params.yaml is given or present (defaults apply)."""
    if params is None:
        if not Path("params.yaml").exists():
            if overrides:
                raise AmidError("--set needs a params.yaml (none here; pass --params)")
            return None
        params = Path("params.yaml")
    return load_config(params, overrides)


def _evaluate_config(params: Path | None, overrides: list[str]) -> EvaluateConfig:
    cfg = _config(params, overrides)
    return cfg.evaluate if cfg is not None else EvaluateConfig()


def _pct(value: Any) -> str:
    return f"{100 * value:.1f}" if isinstance(value, int | float) else "–"


def _note_omitted(metrics: dict[str, Any], where: Path | str) -> None:
    """One line naming the metrics left out as 100 % by construction (never silently)."""
    omitted = metrics.get("omitted") or {}
    if omitted:
        reasons = ", ".join(f"{key} ({why.split(':')[0]})" for key, why in omitted.items())
        log.warning("%s: left out as trivially 100 %%: %s", where, reasons)



def run_name(folder: Path) -> str:
    """The name of the folder as given (`runs/.` is `runs`): a symbolic link's own name,
    not its target's, since the user named the link (`os.path.abspath` does not follow
    links, `Path.resolve` does)."""
    return Path(os.path.abspath(folder)).name

@app.command("run")
def run_command(
    ctx: typer.Context,
    run_dir: Path = typer.Argument(..., help="Run folder of amid-train (or its outputs.h5), "
                                   "or the folder of amid-train --repeat-seeds (holds "
                                   "sweep.json): then each of its runs is scored."),
    out: Path | None = typer.Option(
        None, "--out", "-o", help="Metrics JSON to write (default: metrics/<run name>.json); "
        "the plot CSVs go into the folder of the same name (metrics/<run name>/). For a "
        "folder of runs, the folder of the files (default: metrics)."),
    params: Path | None = typer.Option(None, "--params", "-p", help=PARAMS_HELP),
    overrides: list[str] = set_option(),
    quiet: bool = quiet_option(),
) -> None:
    """Score one run: Top-1/Top-5/WA/UA, retrieval R@K, teacher metrics.

    Metrics that are 100 % by construction (Top-5 with at most 5 classes, R@K
    with K at or above the gallery size) are left out with a note; with
    evaluate.split equal to evaluate.gallery_split each query is left out of
    its own gallery.
    """
    from amid.evaluate.evaluate import evaluate_run

    setup_logging(quiet)
    params, overrides = group_options(ctx, params, overrides)
    with errors(PROG):
        cfg = _evaluate_config(params, overrides)
        if (run_dir / "sweep.json").is_file():  # a method's seeds, trained as one stack:
            from amid.evaluate.sweep import read_sweep  # one process scores them all

            folder = out if out is not None else Path("metrics")
            jobs = [(run_dir / m["name"] / "outputs.h5", folder / f"{m['name']}.json")
                    for m in read_sweep(run_dir)["members"]]
        else:
            outputs = run_dir if run_dir.suffix == ".h5" else run_dir / "outputs.h5"
            jobs = [(outputs, out if out is not None
                     else Path("metrics") / f"{run_name(outputs.parent)}.json")]
        scored = [(evaluate_run(
            outputs, path, ks=cfg.ks, chunk_size=cfg.chunk_size, split=cfg.split,
            gallery_split=cfg.gallery_split, projection=cfg.projection,
            gallery_chunk_size=cfg.gallery_chunk_size,
        ), path) for outputs, path in jobs]
    for metrics, path in scored:
        _note_omitted(metrics, path)
        role = "student" if "student" in metrics else "teacher"
        block = metrics[role]
        if not quiet:
            typer.echo(f"{metrics['method']} ({role}): top1 {_pct(block.get('top1'))}  "
                       f"ua {_pct(block.get('ua'))}  -> {path}")


def _summary_path(files: list[Path]) -> Path:
    """`metrics/amid_fold1.json ...` -> `metrics/amid.json`, when that is unambiguous."""
    from amid.evaluate.report import variant_name

    names = {(f.parent, variant_name(f)) for f in files}
    if len(names) == 1:
        (folder, name), = names
        path = folder / f"{name}.json"
        if path not in files:
            return path
    raise AmidError("give --out: the files do not share one name apart from a "
                    "_fold<k> / _seed<k> suffix")


@app.command("summarize")
def summarize_command(
    files: list[Path] = typer.Argument(..., help="Per-fold or per-seed metrics JSON files."),
    out: Path | None = typer.Option(
        None, "--out", "-o", help="Summary JSON to write (default: the files' common name "
        "without its _fold<k>/_seed<k> suffix, e.g. metrics/amid.json)."),
    quiet: bool = quiet_option(),
) -> None:
    """Mean and std of every metric over folds or seeds (a non-numeric or NaN metric is an
    error naming the file and key)."""
    from amid.evaluate.evaluate import write_metrics
    from amid.evaluate.summary import summarize

    setup_logging(quiet)
    with errors(PROG):
        out = out if out is not None else _summary_path(files)
        if out.is_dir():
            raise AmidError(f"--out {out} is a folder; give the summary file to write")
        write_metrics(summarize(files), out)
    if not quiet:
        typer.echo(f"summary of {len(files)} file(s) -> {out}")


@app.command("sweep")
def sweep_command(
    ctx: typer.Context,
    folder: Path = typer.Argument(..., help="Sweep folder of amid-train --sweep/--grid "
                                  "(holds sweep.json)."),
    out: Path | None = typer.Option(
        None, "--out", "-o", help="Grouped metrics JSON to write (default: "
        "metrics/sweeps/<folder name>.json); the ablation table goes beside it as .md, each "
        "member's metrics into the folder of the same name."),
    params: Path | None = typer.Option(None, "--params", "-p", help=PARAMS_HELP),
    overrides: list[str] = set_option(),
    quiet: bool = quiet_option(),
) -> None:
    """Score every member of a sweep; mean ± std over seeds per setting of the other axes."""
    from amid.evaluate.sweep import evaluate_sweep

    setup_logging(quiet)
    params, overrides = group_options(ctx, params, overrides)
    with errors(PROG):
        cfg = _evaluate_config(params, overrides)
        out = out if out is not None else Path("metrics/sweeps") / f"{run_name(folder)}.json"
        result = evaluate_sweep(folder, out, cfg.ks, cfg.chunk_size, cfg.split,
                                cfg.gallery_split, gallery_chunk_size=cfg.gallery_chunk_size)
    for name, s in result["groups"].items():
        _note_omitted(s, f"{out} (group {name})")
        top1 = s.get("student", s.get("teacher", {})).get("top1")
        if not quiet:
            typer.echo(f"{name}: top1 {_pct(top1)} (n={s['n']})")
    if not quiet:
        typer.echo(f"-> {out} and {out.with_suffix('.md')}")


@app.command("report")
def report_command(
    ctx: typer.Context,
    metrics: list[str] = typer.Option(["metrics/*.json"], "--metrics", "-m", help="Glob(s) "
                                      "of metrics JSON files (quote it)."),
    runs: Path | None = typer.Option(Path("runs"), "--runs", help="Run folders (dvclive "
                                     "histories for the per-epoch figures)."),
    out: Path = typer.Option(Path("reports"), "--out", "-o", help="Folder for results.md, "
                             "figures and curves.csv; report files of an earlier report that "
                             "this one does not write are removed."),
    compare: list[str] = typer.Option(["amid", "baseline"], "--compare", help="The two "
                                      "methods of the per-class figure."),
    dataset: str | None = typer.Option(
        None, "--dataset", "-d", help="Report this dataset only (default: dataset.name of "
        "the params file when there is one; without one, every dataset gets its own table)."),
    params: Path | None = typer.Option(None, "--params", "-p", help=PARAMS_HELP),
    overrides: list[str] = set_option(),
    quiet: bool = quiet_option(),
) -> None:
    """Paper-style Markdown tables and figures from the metrics files present."""
    from amid.evaluate.report import find_metrics, write_report

    setup_logging(quiet)
    params, overrides = group_options(ctx, params, overrides)
    with errors(PROG):
        if dataset is None:
            cfg = _config(params, overrides)
            dataset = cfg.dataset.name if cfg is not None else None
        files, skipped = find_metrics(metrics)
        for path in skipped:
            log.warning("skipping %s: not a metrics file", path)
        if not files:
            raise AmidError(f"no metrics files match {' '.join(metrics)}")
        written = write_report(files, out, runs, compare, dataset)
    if not quiet:
        typer.echo(f"report of {dataset or 'every dataset'}: {len(written)} file(s) in {out}")


@app.command("export")
def export_command(
    run_dir: Path = typer.Argument(..., help="Run folder written by amid-train."),
    fmt: str = typer.Option("torchscript", "--format", "-f", help="torchscript or onnx."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Output file (default: "
                                    "exports/<run>/student.pt or .onnx, <run> the run's path "
                                    "below runs/: outside the run folder, a DVC output); its "
                                    "metadata goes beside it as <file>.json, with the model "
                                    "file's SHA-256; both are replaced together."),
    quiet: bool = quiet_option(),
) -> None:
    """Export the student for deployment without this package."""
    from amid.evaluate.export import export_student

    setup_logging(quiet)
    with errors(PROG):
        path = export_student(run_dir, fmt, out)
    if not quiet:
        typer.echo(f"exported {fmt} -> {path}")


app.command("predict", help=predict_cli.HELP)(predict_cli.evaluate_predict)


def main() -> None:
    app(prog_name=PROG)


def predict_main() -> None:
    predict_cli.main()
