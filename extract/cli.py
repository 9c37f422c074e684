"""`amid-extract`: stage one's command line (thin: parse, load config once, call the library)."""

from __future__ import annotations

import datetime
import json
import logging
import os
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
from amid.storage import NO_SPACE, write_failure

app = typer.Typer(
    help="Stage one: turn a dataset's raw media into per-modality HDF5 feature caches.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

PARAMS = typer.Option(Path("params.yaml"), "--params", help="The project configuration.")
SET = typer.Option(
    None, "--set", "-S", help="Override a configuration key: key=value (repeatable)."
)


def friendly(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Print an AmidError's message (it names the file/row/key) instead of a traceback."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except AmidError as exc:
            typer.secho(f"error: {exc}", fg="red", err=True)
            raise typer.Exit(2) from None
        except OSError as exc:
            if exc.errno not in NO_SPACE:
                raise
            typer.secho(f"error: {write_failure(exc.filename, exc)}", fg="red", err=True)
            raise typer.Exit(2) from None

    return wrapper


def _options(pairs: list[str] | None, where: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise ConfigError(f"{where} {pair!r} is not of the form key=value")
        key, value = pair.split("=", 1)
        try:
            out[key] = yaml.safe_load(value)
        except yaml.YAMLError:
            raise ConfigError(f"{where} {pair!r}: the value is not valid YAML") from None
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
    typer.echo(
        f"wrote {len(manifest)} samples to {target} ({counts}); manifest: {target / 'manifest.csv'}"
    )


@app.command()
@friendly
def prepare(
    dataset: str = typer.Argument(
        None, help="Adapter name (default: dataset.adapter); `amid-extract list` shows them."
    ),
    root: Path = typer.Option(
        None, "--root", help="The dataset's folder, as published (default: dataset.root)."
    ),
    out: Path = typer.Option(
        None, "--out", help="Manifest CSV to write (default: dataset.manifest)."
    ),
    option: list[str] = typer.Option(
        None, "--option", "-o", help="Adapter option key=value (default: dataset.adapter_options)."
    ),
    params: Path = PARAMS,
    overrides: list[str] = SET,
) -> None:
    """Write a manifest for a dataset on disk (ucf51, activitynet, iemocap, csv, demo)."""
    from amid.extract.adapters import ADAPTERS
    from amid.manifest import validate, write_manifest

    cfg = load_config(params, overrides).dataset if params.exists() else None
    if cfg is None and (dataset is None or root is None or out is None):
        raise ConfigError(f"{params} not found: give DATASET, --root and --out")
    name = dataset or cfg.adapter
    root = root or Path(cfg.root)
    out = out or Path(cfg.manifest)
    options = _options(option, "--option") if option else (cfg.adapter_options if cfg else {})
    df = ADAPTERS.get(name)(root, **options)
    df = validate(df, f"{name} adapter on {root}", root)
    write_manifest(df, out)
    typer.echo(f"wrote {len(df)} rows to {out} ({df['label'].nunique()} classes)")


@app.command()
@friendly
def run(
    modality: str = typer.Option(..., "--modality", "-m", help="visual, audio or text."),
    params: Path = PARAMS,
    overrides: list[str] = SET,
    out: Path = typer.Option(
        None, "--out", help="Cache file (default: cache/<dataset>/<modality>__<extractor>.h5)."
    ),
    shard_size: int = typer.Option(
        64,
        "--shard-size",
        min=1,
        help="Samples committed at a time; a crash loses at most this many.",
    ),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
) -> None:
    """Extract one modality of the configured dataset into its HDF5 cache (resumable).

    The dataset comes from `dataset.*`, the extractor from `extract.<modality>.*`;
    override either with --set, e.g. `--set extract.audio.params.n_mels=64`.
    """
    import torch

    from amid.devices import resolve_device
    from amid.extract.extractors import build_extractor
    from amid.extract.extractors.weights import TorchExtractor
    from amid.extract.run import merge_parts, run_extraction
    from amid.manifest import read_manifest

    cfg = load_config(params, overrides)
    if modality not in cfg.extract:
        raise ConfigError(
            f"no extract.{modality} section in {params} (have: {', '.join(cfg.extract) or 'none'})"
        )
    spec = cfg.extract[modality]
    manifest = read_manifest(cfg.dataset.manifest, cfg.dataset.root)
    extractor = build_extractor(spec.extractor, spec.params, f"extract.{modality}.params")
    target = out or cache_path(cfg.dataset.cache_dir, cfg.dataset.name, modality, spec.extractor)
    # Under torchrun each rank takes every world_size-th row and writes its own
    # part; rank 0 merges once all are done.
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    device = resolve_device(spec.device, f"extract.{modality}.device")
    if world > 1 and device.type == "cuda" and device.index is None:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    extractor.to(device)
    if isinstance(extractor, TorchExtractor):
        extractor.amp = None if spec.amp == "none" else spec.amp
    report = run_extraction(
        manifest,
        modality,
        extractor,
        target,
        batch_size=spec.batch_size,
        num_workers=spec.num_workers,
        dtype=spec.dtype,
        shard_size=shard_size,
        progress=not quiet and sys.stderr.isatty(),
        rank=rank,
        world_size=world,
    )
    typer.echo(
        f"{report.path}: {report.status}; {report.written} samples "
        f"({report.extracted} extracted now), {report.errors} errors, "
        f"{report.seconds:.1f} s"
    )
    if world > 1:
        import torch.distributed as dist

        # Ranks finish at different times: wait as long as extraction may take.
        dist.init_process_group("gloo", timeout=datetime.timedelta(hours=48))
        dist.barrier()
        if rank == 0:
            merged = merge_parts(target, manifest.ids, world)
            typer.echo(f"merged {world} parts into {merged}")
        dist.barrier()
        dist.destroy_process_group()


@app.command()
@friendly
def merge(
    out: Path = typer.Argument(..., help="The cache to make from its part files."),
    world_size: int = typer.Option(..., "--world-size", min=2, help="Number of parts."),
    params: Path = PARAMS,
    overrides: list[str] = SET,
) -> None:
    """Join the part files of a distributed extraction (if the ranks could not)."""
    from amid.extract.run import merge_parts
    from amid.manifest import read_manifest

    cfg = load_config(params, overrides)
    manifest = read_manifest(cfg.dataset.manifest, cfg.dataset.root, check_media=False)
    typer.echo(f"wrote {merge_parts(out, manifest.ids, world_size)}")


@app.command("import-ucf51")
@friendly
def import_ucf51(
    archive: Path = typer.Argument(..., help="ucf51_cnn14_emb512.tar.gz (CCL's release)."),
    out: Path = typer.Option(None, "--out", help="Cache to write (default: "
                             "<dataset.cache_dir>/ucf51/audio__cnn14-emb512.h5)."),
    params: Path = PARAMS,
) -> None:
    """Turn the published UCF51 CNN14 audio embeddings into a stage-two cache."""
    from amid.extract.importers import UCF51_CNN14_EXTRACTOR, import_ucf51_cnn14

    cache_dir = load_config(params).dataset.cache_dir if params.exists() else "cache"
    target = out or cache_path(cache_dir, "ucf51", "audio", UCF51_CNN14_EXTRACTOR)
    typer.echo(f"wrote {import_ucf51_cnn14(archive, target)}")


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
