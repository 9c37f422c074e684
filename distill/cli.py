"""`amid-train`: train one method on cached features into a run folder.

    amid-train --method amid [--params params.yaml] [-o runs/amid] [--set methods.amid.alpha=2]
    amid-train --method amid --sweep 'methods.amid.alpha=[1,2,4]' --sweep 'train.seed=[0,1]'
    amid-train --grid alpha          # the grid sweeps.alpha of params.yaml (DVC: sweep@alpha)
    amid-train --grid alpha --reuse runs/amid   # points equal to a finished run: copied
    amid-train --method amid --repeat-seeds -o runs/amid   # train.seed + pipeline.repeat_seeds
    amid-train --method amid_ccl     # a variant: methods.amid_ccl = {method: amid, mi_variant: ccl}
    amid-train --list                # the methods, their options and presets; the variants

Thin by design: load the configuration once, hand explicit values to
`amid.distill.train`. Errors a user can fix print one line, exit code 2.
"""

from __future__ import annotations

from pathlib import Path

import typer

from amid.cli import errors, params_option, quiet_option, set_option, setup_logging
from amid.config import TrainConfig, load_config
from amid.errors import AmidError
from amid.schema import check_path_component, per_member_keys

PROG = "amid-train"
app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


@app.command(help="Train a method (baseline, teacher, ts, ts_ta, amid, kd, crd, gmc, ccl, crcd) "
                  "on cached features; its options live under methods.<name> in params.yaml. "
                  "A section methods.<name> with `method: <registered method>` is a named "
                  "variant (e.g. amid_ccl), trained by --method <name> into runs/<name>. "
                  "Rerunning the same command resumes from the run folder's last checkpoint.")
def train_command(
    method: str | None = typer.Option(None, "--method", "-m",
                                      help="Method name (an unknown name lists them). Required "
                                           "unless --grid names one."),
    params: Path = params_option(),
    out: Path | None = typer.Option(None, "--out", "-o",
                                    help="Run folder (default: runs/<method>; for a grid, "
                                         "runs/sweeps/<NAME> or runs/<method>-sweep)."),
    overrides: list[str] = set_option(),
    quiet: bool = quiet_option(),
    sweep: list[str] = typer.Option(
        [], "--sweep",
        help="Train a grid in one process: 'methods.amid.alpha=[1,2,4]' (repeatable; the grid "
             "is the product of the axes) or a YAML file mapping dotted keys to lists. One run "
             "folder per member under --out, listed in sweep.json. Members differing only in "
             "per-member values (train.seed, lr, weight_decay, disc_lr and each method's "
             "weights and temperatures; see --list) train together as one stack; others one "
             "after another in the same process."),
    grid: str | None = typer.Option(
        None, "--grid",
        help="Train the grid `sweeps.NAME` of the params file (its method and axes; more "
             "--sweep axes multiply it). Default --out: runs/sweeps/NAME. Rerunning resumes."),
    repeat_seeds: bool = typer.Option(
        False, "--repeat-seeds",
        help="Train the method at train.seed and at each of pipeline.repeat_seeds as one "
             "stack in one process (dvc.yaml's train@<name>): run folders <out>/<name> "
             "(train.seed) and <out>/<name>_seed<k>, <name> being --out's folder name "
             "(default --out: runs/<method>). Rerunning resumes."),
    reuse: list[Path] = typer.Option(
        [], "--reuse", metavar="DIR",
        help="(--grid/--sweep) A folder of finished runs, e.g. runs/amid (repeatable): a grid "
             "point whose run configuration equals one of them is a copy of that run folder, "
             "not trained again. Taken only from a finished run (all train.epochs, outputs "
             "written) of the same method with an identical configuration (every key) and "
             "identical caches (their fingerprints); any other point trains as usual. "
             "sweep.json names the source (reused_from). A folder that does not exist is "
             "an error."),
    list_methods: bool = typer.Option(False, "--list", help="List the methods, their options "
                                      "(defaults), presets and which ones may vary within a "
                                      "stack, and the variants of the params file."),
) -> None:
    setup_logging(quiet)
    with errors(PROG):
        from amid.distill.methods import check_method_options

        if list_methods:
            typer.echo(method_listing(params, overrides))
            return
        axes: list = []
        if grid is not None:
            method, axes = _named_grid(params, overrides, grid, method)
        elif method is None:
            raise AmidError("give --method (or --grid NAME for a grid of the params file)")
        _check_method(method, params, overrides)  # an unknown name fails before any data
        if repeat_seeds and (sweep or grid is not None):
            raise AmidError("--repeat-seeds trains one configuration at several seeds; "
                            "give it without --sweep/--grid (a grid sets train.seed itself)")
        if reuse and not (sweep or grid is not None):
            raise AmidError("--reuse takes finished runs for the points of a grid: give it "
                            "with --grid or --sweep")
        run = out or Path("runs") / method
        if sweep or grid is not None or repeat_seeds:
            from amid.distill.sweep import parse_axes, run_repeats, run_sweep

            if repeat_seeds:
                done = run_repeats(method, params, overrides, run)
            else:
                default = Path("runs") / ("sweeps" if grid else "") / (grid or f"{method}-sweep")
                done = run_sweep(method, params, overrides, axes + parse_axes(sweep),
                                 out or default, reuse=reuse)
            for name, res in done.items():
                row = res.history[-1] if res.history else {}
                acc = {k: round(v, 4) for k, v in row.items() if k.startswith("val_acc")}
                mode = f"reused from {res.source}" if res.source else res.mode
                typer.echo(f"{method} {name}: {len(res.history)} epochs ({mode}) -> "
                           f"{res.run} {acc}")
            return
        from amid.distill.train import train

        history = train(method, load_config(params, overrides, check=check_method_options), run)
    last = history[-1] if history else {}
    shown = {k: round(v, 4) for k, v in last.items() if k.endswith(("acc_student", "acc_teacher"))}
    typer.echo(f"{method}: {len(history)} epochs -> {run} {shown}")


def _check_method(name: str, params: Path, overrides: list[str]) -> None:
    """A registered method, or a variant that the params file defines (`methods.<name>`
    with a `method` key); refused in one line otherwise."""
    from amid.distill.methods import METHODS, check_method_options
    from amid.distill.methods.base import known_method

    check_path_component(name, "--method")
    if name in METHODS:
        return
    if not params.exists():
        METHODS.get(name)  # unknown, and no params file that could define it
    known_method(name, load_config(params, overrides, check=check_method_options), "--method")


def _named_grid(params: Path, overrides: list[str], name: str,
                method: str | None) -> tuple[str, list]:
    from amid.distill.methods import check_method_options
    from amid.distill.sweep import grid_axes

    sweeps = load_config(params, overrides, check=check_method_options).sweeps
    if name not in sweeps:
        raise AmidError(f"--grid {name}: {params} has no sweeps.{name} (has: "
                        f"{', '.join(sweeps) or 'none'})")
    spec = sweeps[name]
    if method is not None and method != spec.method:
        raise AmidError(f"--method {method} contradicts sweeps.{name}.method {spec.method!r}")
    return spec.method, grid_axes(spec.grid, f"{params}: sweeps.{name}.grid")


def method_listing(params: Path | None = None, overrides: list[str] | None = None) -> str:
    """Every method with its options, defaults, presets and per-member marks; then the
    variants the params file defines (when it loads)."""
    from amid.distill.methods import METHODS, check_method_options
    from amid.distill.methods.base import registered_method

    lines = ["methods (options under methods.<name>; * may differ within one stack):"]
    for name in METHODS:
        cls = METHODS.get(name)
        free = {k.rsplit(".", 1)[1] for k in per_member_keys(cls.Options, "o")}
        fields = [f"{k}={f.get_default(call_default_factory=True)!r}{'*' if k in free else ''}"
                  for k, f in cls.Options.model_fields.items()]
        doc = (cls.__doc__ or "").strip().splitlines()[0]
        lines.append(f"  {name:<9} {doc}")
        if fields:
            lines.append(f"            {', '.join(fields)}")
        for preset, values in cls.presets.items():
            shown = ", ".join(f"{k}={v!r}" for k, v in values.items()) or "the defaults above"
            lines.append(f"            preset={preset!r}: {shown}")
    shared = ", ".join(k.split(".", 1)[1] for k in per_member_keys(TrainConfig, "train"))
    lines.append(f"train.* keys that may differ within one stack: {shared}")
    lines.append("A preset fills only the keys its section leaves out. A section "
                 "methods.<name> with `method: <one above>` is a variant: "
                 "amid-train --method <name> trains that method with its options into "
                 "runs/<name>.")
    if params is not None and params.exists():
        try:
            cfg = load_config(params, overrides or [], check=check_method_options)
        except AmidError as exc:
            lines.append(f"variants of {params}: not listed ({exc})")
        else:
            variants = [(n, raw) for n, raw in cfg.methods.items() if "method" in raw]
            if variants:
                lines.append(f"variants in {params}:")
            for n, raw in variants:
                keys = ", ".join(f"{k}={v!r}" for k, v in raw.items() if k != "method")
                lines.append(f"  {n} -> {registered_method(n, raw)}"
                             + (f" ({keys})" if keys else ""))
    return "\n".join(lines)


def main() -> None:
    """Console-script entry point (`amid-train`)."""
    app(prog_name=PROG)


if __name__ == "__main__":
    main()
