"""What the four commands (`amid-extract`, `amid-train`, `amid-evaluate`, `amid-predict`) share.

`-p/--params FILE` the configuration, `-S/--set key=value` an override
(repeatable; before a subcommand too: `group_options`), `-o/--out PATH` the
output, `-q/--quiet` only warnings and errors. A mistake the user can fix prints
ONE line, `<prog>: error: <message>`, and exits with status 2 (`errors(prog)`);
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import typer

from amid.errors import AmidError
from amid.storage import write_failure

PARAMS_HELP = "Configuration file (strict: unknown keys are errors)."
SET_HELP = "Override a configuration key, e.g. --set train.lr=1e-3 (repeatable; YAML value)."
QUIET_HELP = "Only warnings and errors: no progress bars or info lines (third-party ones too)."


def params_option(default: Path | None = Path("params.yaml"), more: str = "") -> Path | None:
    return typer.Option(default, "--params", "-p", help=PARAMS_HELP + more)


def set_option(more: str = "") -> list[str]:
    return typer.Option([], "--set", "-S", help=SET_HELP + more)


def quiet_option() -> bool:
    return typer.Option(False, "--quiet", "-q", help=QUIET_HELP)


def group_callback(ctx: typer.Context,
                   params: Path | None = params_option(None, " Here or after the command."),
                   overrides: list[str] = set_option(" Here or after the command.")) -> None:
    """The group's own `-p`/`-S` (`amid-extract -p FILE run`), kept for the subcommand."""
    ctx.obj = {"params": params, "overrides": list(overrides)}


def group_options(ctx: typer.Context, params: Path | None,
                  overrides: list[str]) -> tuple[Path | None, list[str]]:
    """A subcommand's `-p`/`-S`, with those given before it: a `-p` after the subcommand
    wins; `-S` before it come first, so a later `-S` on the same key wins."""
    given = (ctx.parent.obj if ctx.parent is not None else None) or {}
    before = given.get("params")
    # by name: typer vendors its own click, whose ParameterSource is another class
    source = ctx.get_parameter_source("params")
    if before is not None and getattr(source, "name", None) == "DEFAULT":
        params = before
    return params, [*given.get("overrides", []), *overrides]


def fail(prog: str, message: str) -> typer.Exit:
    """Print the one-line error and return the exit to raise."""
    first, *rest = str(message).splitlines() or [""]
    typer.echo(f"{prog}: error: {first}", err=True)
    for line in rest:  # details (a list of files, say) indented under the one line
        typer.echo(f"  {line.strip()}", err=True)
    return typer.Exit(2)


@contextlib.contextmanager
def errors(prog: str) -> Iterator[None]:
    """User-fixable errors as one line and exit status 2: `AmidError`'s message, or an
    OSError that escaped a writer (read-only folder, full disk) with its path."""
    try:
        yield
    except AmidError as exc:
        raise fail(prog, str(exc)) from None
    except OSError as exc:
        raise fail(prog, write_failure(exc.filename or "a file", exc)) from None


def duration(seconds: float) -> str:
    """A span for progress lines: 3h02m, 2m36s, 41s (`unknown` when not finite)."""
    if not math.isfinite(seconds):
        return "unknown"
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"


def setup_logging(quiet: bool) -> None:
    """INFO lines unless quiet; quiet also silences transformers' and tqdm's bars."""
    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s", force=True)
    if quiet:
        # read by transformers and huggingface_hub when they are imported later
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        os.environ.setdefault("TQDM_DISABLE", "1")
        if "transformers" in sys.modules:
            import transformers

            transformers.logging.set_verbosity_error()
            transformers.logging.disable_progress_bar()
