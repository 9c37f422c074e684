"""`amid-extract`: stage one's command line (thin: parse, load config once, call the library)."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any

import typer
import yaml

from amid.cache import cache_path, read_info
from amid.config import DemoConfig, load_config, to_dict
from amid.errors import AmidError, ConfigError

app = typer.Typer(
    help="Stage one: turn a dataset's raw media into per-modality HDF5 feature caches.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

PARAMS = typer.Option(Path("params.yaml"), "--params", help="The project configuration.")
SET = typer.Option(None, "--set", "-S", help="Override a configuration key: key=value (repeatable).")


def friendly(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Print an AmidError's message (it names the file/row/key) instead of a traceback."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except AmidError as exc:
            typer.secho(f"error: {exc}", fg="red", err=True)
            raise typer.Exit(2) from None

    return wrapper


def _options(pairs: list[str] | None, where: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise ConfigError(f"{where} {pair!r} is not of the form key=value")
        key, value = pair.split("=", 1)
        out[key] = yaml.safe_load(value)
    return out


@app.command()
@friendly
def demo(
    out: Path = typer.Option(None, "--out", help="Folder to write (default: demo.out)."),
    params: Path = PARAMS,
    overrides: list[str] = SET,
) -> None:
    """Generate the embedded demo dataset (raw video, audio, transcripts, manifest)."""
    from amid.extract.demo import DemoSpec, make_demo

    cfg = load_config(params, overrides) if params.exists() else None
    demo_cfg = to_dict(cfg.demo) if cfg else to_dict(DemoConfig())
    target = out or Path(demo_cfg.pop("out"))
    demo_cfg.pop("out", None)
    manifest = make_demo(target, DemoSpec(**demo_cfg))
    counts = manifest["split"].value_counts().to_dict()
    typer.echo(f"wrote {len(manifest)} samples to {target} ({counts}); manifest: "
               f"{target / 'manifest.csv'}")


@app.command()
@friendly
def prepare(
    dataset: str = typer.Argument(..., help="Adapter name (`amid-extract list` shows them)."),
    root: Path = typer.Option(..., "--root", help="The dataset's folder, as published."),
    out: Path = typer.Option(..., "--out", help="Manifest CSV to write."),
    option: list[str] = typer.Option(None, "--option", "-o", help="Adapter option key=value."),
) -> None:
    """Write a manifest for a dataset on disk (ucf51, activitynet, iemocap, csv, demo)."""
    from amid.extract.adapters import ADAPTERS
    from amid.manifest import validate, write_manifest

    adapter = ADAPTERS.get(dataset)
    df = adapter(root, **_options(option, "--option"))
    df = validate(df, f"{dataset} adapter on {root}", root)
    write_manifest(df, out)
    typer.echo(f"wrote {len(df)} rows to {out}")


@app.command()
@friendly
def run(
    modality: str = typer.Option(..., "--modality", "-m", help="visual, audio or text."),
    params: Path = PARAMS,
    overrides: list[str] = SET,
    out: Path = typer.Option(None, "--out", help="Cache file (default: cache/<dataset>/"
                             "<modality>__<extractor>.h5)."),
    shard_size: int = typer.Option(64, "--shard-size", min=1, help="Samples committed at a "
                                   "time; a crash loses at most this many."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
) -> None:
    """Extract one modality of the configured dataset into its HDF5 cache (resumable).

    The dataset comes from `dataset.*`, the extractor from `extract.<modality>.*`;
    override either with --set, e.g. `--set extract.audio.params.n_mels=64`.
    """
    from amid.extract.extractors import build_extractor
    from amid.extract.run import resolve_device, run_extraction
    from amid.manifest import read_manifest

    cfg = load_config(params, overrides)
    if modality not in cfg.extract:
        raise ConfigError(f"no extract.{modality} section in {params} "
                          f"(have: {', '.join(cfg.extract) or 'none'})")
    spec = cfg.extract[modality]
    manifest = read_manifest(cfg.dataset.manifest, cfg.dataset.root)
    extractor = build_extractor(spec.extractor, spec.params, f"extract.{modality}.params")
    extractor.to(resolve_device(spec.device))
    target = out or cache_path(cfg.dataset.cache_dir, cfg.dataset.name, modality, spec.extractor)
    report = run_extraction(manifest, modality, extractor, target, batch_size=spec.batch_size,
                            num_workers=spec.num_workers, dtype=spec.dtype, shard_size=shard_size,
                            progress=not quiet and sys.stderr.isatty())
    typer.echo(f"{report.path}: {report.status}; {report.written} samples "
               f"({report.extracted} extracted now), {report.errors} errors, "
               f"{report.seconds:.1f} s")


@app.command()
@friendly
def info(path: Path = typer.Argument(..., help="A feature cache (.h5).")) -> None:
    """Summarise a feature cache: provenance, shapes, completeness, errors."""
    for key, value in read_info(path).items():
        if key == "params" and isinstance(value, str):
            value = json.dumps(json.loads(value), sort_keys=True)
        typer.echo(f"{key:>18}: {value}")


@app.command("list")
@friendly
def list_() -> None:
    """List the feature extractors and dataset adapters, with their parameters."""
    import dataclasses

    from amid.extract.adapters import ADAPTERS
    from amid.extract.extractors import EXTRACTORS

    typer.echo("extractors:")
    for name in EXTRACTORS:
        cls = EXTRACTORS.get(name)
        fields = ", ".join(f"{f.name}={_default(f)}" for f in dataclasses.fields(cls.Params))
        typer.echo(f"  {name:<20} [{cls.modality}] {fields}")
    typer.echo("dataset adapters: " + ", ".join(ADAPTERS))


def _default(field: Any) -> Any:
    import dataclasses

    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return "<required>"


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    app()


if __name__ == "__main__":
    main()
