"""`amid-extract`: stage one's command line (thin: parse, load config once, call the library).

The conventions of `amid.cli` hold: `-p/--params`, `-S/--set`, `-o/--out`,
`-q/--quiet` wherever a command takes them; a mistake the user can fix is one
line, `amid-extract: error: ...`, and exit status 2.
"""

from __future__ import annotations

import datetime
import json
import os
from pathlib import Path
from typing import Any

import typer
import yaml

from amid.cache import cache_path, read_info
from amid.cli import (
    errors,
    group_callback,
    group_options,
    params_option,
    quiet_option,
    set_option,
    setup_logging,
)
from amid.config import DemoConfig, load_config
from amid.errors import ConfigError
from amid.manifest import read_manifest, validate, write_manifest
from amid.schema import parse_yaml, to_dict

# Each command imports its work inside the function: `--help` loads no torch, and a
# stage loads only the modules it runs (dvc.yaml's deps; tests/test_pipeline.py),
# so that `amid-extract run` does not depend on the adapters or the importers.
PROG = "amid-extract"
app = typer.Typer(
    help="Stage one: turn a dataset's raw media into per-modality HDF5 feature caches.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
# `amid-extract -p FILE run ...` as well as `amid-extract run -p FILE ...`
app.callback()(group_callback)


def _options(pairs: list[str] | None, where: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise ConfigError(f"{where} {pair!r} is not of the form key=value")
        key, value = pair.split("=", 1)
        try:
            out[key] = parse_yaml(value)  # as --set reads values: 1e-3 is a number
        except yaml.YAMLError:
            raise ConfigError(f"{where} {pair!r}: the value is not valid YAML") from None
    return out


def adapter_options(name: str, adapter: Any, options: dict[str, Any], where: str) -> dict:
    """The adapter's options checked against its `Options` (a typo is an error, not a crash)."""
    from amid.extract.adapters.registry import check_options

    for old, (new, meaning) in getattr(adapter, "renamed", {}).items():
        if old in options:
            raise ConfigError(f"{where}: the {name!r} adapter's option `{old}` is now called "
                              f"`{new}` ({meaning})")
    check_options(name, options, where)
    return options


@app.command()
def demo(
    ctx: typer.Context,
    out: Path = typer.Option(None, "--out", "-o", help="Folder to write (default: demo.out)."),
    params: Path = params_option(),
    overrides: list[str] = set_option(),
    quiet: bool = quiet_option(),
) -> None:
    """Generate the embedded demo dataset (raw video, audio, transcripts, manifest)."""
    setup_logging(quiet)
    params, overrides = group_options(ctx, params, overrides)
    with errors(PROG):
        from amid.extract.demo import DemoSpec, make_demo

        cfg = load_config(params, overrides) if params.exists() else None
        demo_cfg = to_dict(cfg.demo) if cfg else to_dict(DemoConfig())
        target = out or Path(demo_cfg.pop("out"))
        demo_cfg.pop("out", None)
        manifest = make_demo(target, DemoSpec(**demo_cfg))
    counts = manifest["split"].value_counts().to_dict()
    if not quiet:
        typer.echo(f"wrote {len(manifest)} samples to {target} ({counts}); manifest: "
                   f"{target / 'manifest.csv'}")


@app.command()
def prepare(
    ctx: typer.Context,
    dataset: str = typer.Argument(
        None, help="Adapter name (default: dataset.adapter); `amid-extract list` shows them."
    ),
    root: Path = typer.Option(
        None, "--root", help="The dataset's folder, as published (default: dataset.root)."
    ),
    out: Path = typer.Option(
        None, "--out", "-o", help="Manifest CSV to write (default: dataset.manifest)."
    ),
    option: list[str] = typer.Option(
        None, "--option", help="Adapter option key=value, repeatable (default: "
        "dataset.adapter_options); e.g. --option table=my_samples.csv for the csv adapter."
    ),
    params: Path = params_option(),
    overrides: list[str] = set_option(),
    quiet: bool = quiet_option(),
) -> None:
    """Write a manifest for a dataset on disk (ucf51, activitynet, iemocap, csv, demo)."""
    setup_logging(quiet)
    params, overrides = group_options(ctx, params, overrides)
    with errors(PROG):
        from amid.extract.adapters import ADAPTERS

        cfg = load_config(params, overrides).dataset if params.exists() else None
        if cfg is None and (dataset is None or root is None or out is None):
            raise ConfigError(f"{params} not found: give DATASET, --root and --out")
        name = dataset or cfg.adapter
        root = root or Path(cfg.root)
        out = out or Path(cfg.manifest)
        where = "--option" if option else "dataset.adapter_options"
        options = _options(option, "--option") if option else (cfg.adapter_options if cfg else {})
        adapter = ADAPTERS.get(name)
        df = adapter(root, **adapter_options(name, adapter, options, where))
        df = validate(df, f"{name} adapter on {root}", root)
        write_manifest(df, out)
    if not quiet:
        typer.echo(f"wrote {len(df)} rows to {out} ({df['label'].nunique()} classes)")


def _identity_and_builder(modality: str, spec: Any, device: Any) -> tuple[dict, Any]:
    """The cache identity from the configuration alone, and a function that loads the model.

    The identity needs no weights, so an up-to-date cache is recognised without
    loading anything; precision is the autocast the extractor will run in here.
    """
    from amid.devices import amp_allowed
    from amid.extract.extractors import EXTRACTORS, build_extractor, expected_identity
    from amid.extract.extractors.weights import TorchExtractor

    where = f"extract.{modality}.params"
    identity = expected_identity(spec.extractor, spec.params, where)
    torch_backed = issubclass(EXTRACTORS.get(spec.extractor), TorchExtractor)
    if torch_backed and spec.amp != "none" and amp_allowed(device):
        identity["params"]["precision"] = spec.amp

    def build() -> Any:
        extractor = build_extractor(spec.extractor, spec.params, where)
        extractor.to(device)
        if isinstance(extractor, TorchExtractor):
            extractor.amp = None if spec.amp == "none" else spec.amp
        return extractor

    return identity, build


@app.command()
def run(
    ctx: typer.Context,
    modality: str = typer.Option(..., "--modality", "-m", help="visual, audio or text."),
    params: Path = params_option(),
    overrides: list[str] = set_option(),
    out: Path = typer.Option(
        None, "--out", "-o",
        help="Cache file (default: <dataset.cache_dir>/<dataset>/<modality>__<extractor>.h5).",
    ),
    shard_size: int = typer.Option(
        64,
        "--shard-size",
        min=1,
        help="Samples committed at a time; a crash loses at most this many.",
    ),
    quiet: bool = quiet_option(),
) -> None:
    """Extract one modality of the configured dataset into its HDF5 cache (resumable).

    The dataset comes from `dataset.*`, the extractor from `extract.<modality>.*`;
    override either with --set, e.g. `--set extract.audio.params.n_mels=64`.
    Progress counts embedded samples: a bar on a terminal, a log line every 10 s
    otherwise. An up-to-date cache is recognised without loading the model.
    """
    setup_logging(quiet)
    params, overrides = group_options(ctx, params, overrides)
    with errors(PROG):
        report, world, rank, target, manifest = _run(modality, params, overrides, out,
                                                     shard_size, quiet)
        if not quiet:
            typer.echo(
                f"{report.path}: {report.status}; {report.written} samples "
                f"({report.extracted} extracted now), {report.errors} errors, "
                f"{report.seconds:.1f} s"
            )
        if world > 1:
            import torch.distributed as dist

            from amid.extract.run import merge_parts

            # Ranks finish at different times: wait as long as extraction may take.
            dist.init_process_group("gloo", timeout=datetime.timedelta(hours=48))
            dist.barrier()
            if rank == 0:
                merged = merge_parts(target, manifest.ids, world)
                if not quiet:
                    typer.echo(f"merged {world} parts into {merged}")
            dist.barrier()
            dist.destroy_process_group()


def _run(modality: str, params: Path, overrides: list[str], out: Path | None, shard_size: int,
         quiet: bool) -> tuple[Any, int, int, Path, Any]:
    cfg = load_config(params, overrides)
    if modality not in cfg.extract:
        raise ConfigError(
            f"no extract.{modality} section in {params} (have: {', '.join(cfg.extract) or 'none'})"
        )
    spec = cfg.extract[modality]
    manifest = read_manifest(cfg.dataset.manifest, cfg.dataset.root)
    # torch only now: a wrong key or manifest row is reported without its 2 s import
    import torch

    from amid.devices import resolve_device
    from amid.extract.run import run_extraction

    target = out or cache_path(cfg.dataset.cache_dir, cfg.dataset.name, modality, spec.extractor)
    # Under torchrun each rank takes every world_size-th row and writes its own
    # part; rank 0 merges once all are done.
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    device = resolve_device(spec.device, f"extract.{modality}.device")
    if world > 1 and device.type == "cuda" and device.index is None:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    identity, build = _identity_and_builder(modality, spec, device)
    report = run_extraction(
        manifest, modality, build, target, identity=identity, batch_size=spec.batch_size,
        num_workers=spec.num_workers, dtype=spec.dtype, shard_size=shard_size,
        progress="off" if quiet else "auto", rank=rank, world_size=world,
    )
    return report, world, rank, target, manifest


@app.command()
def merge(
    ctx: typer.Context,
    out: Path = typer.Argument(..., help="The cache to make from its part files."),
    world_size: int = typer.Option(..., "--world-size", min=2, help="Number of parts."),
    params: Path = params_option(),
    overrides: list[str] = set_option(),
    quiet: bool = quiet_option(),
) -> None:
    """Join the part files of a distributed extraction (if the ranks could not)."""
    setup_logging(quiet)
    params, overrides = group_options(ctx, params, overrides)
    with errors(PROG):
        from amid.extract.run import merge_parts

        cfg = load_config(params, overrides)
        manifest = read_manifest(cfg.dataset.manifest, cfg.dataset.root, check_media=False)
        merged = merge_parts(out, manifest.ids, world_size)
    if not quiet:
        typer.echo(f"wrote {merged}")


@app.command("import-ucf51")
def import_ucf51(
    ctx: typer.Context,
    archive: Path = typer.Argument(..., help="ucf51_cnn14_emb512.tar.gz (CCL's release)."),
    out: Path = typer.Option(None, "--out", "-o", help="Cache to write (default: "
                             "<dataset.cache_dir>/ucf51/audio__cnn14-emb512.h5)."),
    params: Path = params_option(),
    overrides: list[str] = set_option(),
    quiet: bool = quiet_option(),
) -> None:
    """Turn the published UCF51 CNN14 audio embeddings into a stage-two cache."""
    setup_logging(quiet)
    params, overrides = group_options(ctx, params, overrides)
    with errors(PROG):
        from amid.extract.importers import UCF51_CNN14_EXTRACTOR, import_ucf51_cnn14

        cache_dir = (load_config(params, overrides).dataset.cache_dir if params.exists()
                     else "cache")
        target = out or cache_path(cache_dir, "ucf51", "audio", UCF51_CNN14_EXTRACTOR)
        written = import_ucf51_cnn14(archive, target)
    if not quiet:
        typer.echo(f"wrote {written}")


@app.command()
def info(path: Path = typer.Argument(..., help="A feature cache (.h5).")) -> None:
    """Summarise a feature cache: provenance, shapes, completeness, errors.

    A cache of a format version this reader does not understand is an error.
    """
    with errors(PROG):
        attrs = read_info(path)
    for key, value in attrs.items():
        if key == "params" and isinstance(value, str):
            value = json.dumps(json.loads(value), sort_keys=True)
        typer.echo(f"{key:>18}: {value}")


@app.command("list")
def list_() -> None:
    """List the feature extractors and dataset adapters, with their parameters."""
    from amid.extract.adapters import ADAPTERS
    from amid.extract.adapters.registry import options_of
    from amid.extract.extractors import EXTRACTORS

    typer.echo("extractors:")
    for name in EXTRACTORS:
        cls = EXTRACTORS.get(name)
        typer.echo(f"  {name:<20} [{cls.modality}] {_defaults(cls.Params)}")
    typer.echo("dataset adapters (--option / dataset.adapter_options):")
    for name in ADAPTERS:
        typer.echo(f"  {name:<20} {_defaults(options_of(ADAPTERS.get(name))) or '(no options)'}")


def _defaults(model: Any) -> str:
    return ", ".join(f"{k}={f.get_default(call_default_factory=True)}"
                     for k, f in model.model_fields.items())


def main() -> None:
    app()


if __name__ == "__main__":
    main()
