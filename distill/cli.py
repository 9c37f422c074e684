"""`amid-train`: train one method on cached features into a run folder.

    amid-train --method amid [--params params.yaml] [--out runs/amid] [--set train.loss.alpha=2]
    amid-train --method amid --sweep 'train.loss.alpha=[1,2,4]' --sweep 'train.seed=[0,1]'
    amid-train --grid seeds          # the grid sweeps.seeds of params.yaml (DVC: sweep@seeds)

Thin by design: load the configuration once, hand explicit values to
`amid.distill.train.train`. Errors a user can fix print one line, exit code 2.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import typer

from amid.config import load_config
from amid.errors import AmidError
from amid.storage import NO_SPACE, write_failure

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


@app.command(help="Train a method (baseline, teacher, ts, ts_ta, amid, ...) on cached features. "
                  "Rerunning the same command resumes from the run folder's last checkpoint.")
def train_command(
    method: str | None = typer.Option(None, "--method", "-m",
                                      help="Method name: baseline, teacher, ts, ts_ta, amid, or "
                                           "any other registered one (an unknown name lists "
                                           "them). Required unless --grid names one."),
    params: Path = typer.Option(Path("params.yaml"), "--params", "-p",
                                help="Configuration file (strict: unknown keys are errors)."),
    out: Path | None = typer.Option(None, "--out", "-o",
                                    help="Run folder (default: runs/<method>)."),
    overrides: list[str] = typer.Option([], "--set", "-S", "-s",
                                        help="Override a key, e.g. --set train.loss.alpha=2 "
                                             "(repeatable; value parsed as YAML)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Only warnings and errors."),
    sweep: list[str] = typer.Option(
        [], "--sweep",
        help="Train a grid in one process: 'train.loss.alpha=[1,2,4]' (repeatable; the grid is "
             "the product of the axes) or a YAML file mapping dotted keys to lists. One run "
             "folder per member under --out (default runs/<method>-sweep), listed in sweep.json. "
             "Members differing only in seed, lr, weight_decay, disc_lr, alpha, beta, gamma, "
             "jsd, tau or mu train together as a stacked ensemble (methods baseline, teacher, "
             "ts, ts_ta, amid without fixed_teacher, every auxiliary modality present); all "
             "others train one after another in the same process."),
    grid: str | None = typer.Option(
        None, "--grid",
        help="Train the grid `sweeps.NAME` of the params file (its method and axes; more "
             "--sweep axes multiply it). Default --out: runs/sweeps/NAME. Rerunning resumes."),
) -> None:
    from amid.distill.methods import METHODS
    from amid.distill.train import train

    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        if grid is not None:
            method, axes = _named_grid(params, overrides, grid, method)
        elif method is None:
            raise AmidError("give --method (or --grid NAME for a grid of the params file)")
        METHODS.get(method)  # an unknown name fails before any data is loaded
        if sweep or grid is not None:
            from amid.distill.sweep import parse_axes, run_sweep

            axes = (axes if grid is not None else []) + parse_axes(sweep)
            default = Path("runs") / ("sweeps" if grid else "") / (grid or f"{method}-sweep")
            folder = out if out is not None else default
            done = run_sweep(method, params, overrides, axes, folder)
            for name, res in done.items():
                row = res.history[-1] if res.history else {}
                acc = {k: round(v, 4) for k, v in row.items() if k.startswith("val_acc")}
                typer.echo(f"{method} {name}: {len(res.history)} epochs -> {res.run} {acc}")
            return
        cfg = load_config(params, overrides)
        run = out if out is not None else Path("runs") / method
        history = train(method, cfg, run)
    except AmidError as exc:
        typer.echo(f"amid-train: error: {exc}", err=True)
        raise typer.Exit(2) from None
    except OSError as exc:  # a full disk under dvclive or another writer
        if exc.errno not in NO_SPACE:
            raise
        typer.echo(f"amid-train: error: {write_failure(exc.filename, exc)}", err=True)
        raise typer.Exit(2) from None
    last = history[-1] if history else {}
    shown = {k: round(v, 4) for k, v in last.items() if k.endswith(("acc_student", "acc_teacher"))}
    typer.echo(f"{method}: {len(history)} epochs -> {run} {shown}")


def _named_grid(params: Path, overrides: list[str], name: str,
                method: str | None) -> tuple[str, list]:
    from amid.distill.sweep import grid_axes

    sweeps = load_config(params, overrides).sweeps
    if name not in sweeps:
        raise AmidError(f"--grid {name}: {params} has no sweeps.{name} (has: "
                        f"{', '.join(sweeps) or 'none'})")
    spec = sweeps[name]
    if method is not None and method != spec.method:
        raise AmidError(f"--method {method} contradicts sweeps.{name}.method {spec.method!r}")
    return spec.method, grid_axes(spec.grid, f"{params}: sweeps.{name}.grid")


def main() -> None:
    """Console-script entry point (`amid-train`)."""
    try:
        app(prog_name="amid-train")
    except AmidError as exc:  # raised outside the command body (should not happen)
        print(f"amid-train: error: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
