"""The one typed configuration, read from `params.yaml`.

Every command loads it once (`load_config`) and hands explicit values to the
library; nothing below the CLIs reads `params.yaml`. Loading is strict (see
`amid.schema`): an unknown key (a misspelled `dvc exp run -S
methods.amid.alfa=2`, which DVC accepts silently) is an error naming the key,
and the `--set` it came from. The core does not import the stages, so
`methods.<name>` and `extract.<m>.params` stay plain (finite) data here; the
stage that reads them types them with its own models before it starts
(`check=check_method_options` in amid-train; `expected_identity` in amid-extract).
`dvc.yaml` lists, per stage, the sections that stage reads.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml

from amid.errors import ConfigError
from amid.schema import (
    SEED_MAX,
    FreeMap,
    PathComponent,
    Schema,
    Split,
    apply_override,
    check_path_component,
    load,
    option,
    parse_yaml,
    rule,
)
from amid.sizes import check_demo_size, check_model_size

log = logging.getLogger(__name__)

# ---------------------------------------------------------------- sections


class DemoConfig(Schema):
    """The embedded demo dataset (`amid-extract demo`), built on sklearn's digits."""

    out: str = "data/demo"
    n_per_class: int = option(60, ge=5)  # 10 classes; 60/20/20 % train/val/test
    frames: int = option(6, ge=1)  # frames per video
    frame_size: int = option(32, ge=8)  # pixels, square
    visual_noise: float = option(0.9, ge=0)  # std of per-frame pixel noise (image in [0, 1])
    visual_blur: float = option(1.2, ge=0)  # Gaussian blur sigma (8x8 digit pixels)
    sample_rate: int = option(16000, ge=8000)
    duration: float = option(0.5, gt=0)  # seconds of audio per sample
    audio_noise: float = option(0.6, ge=0)  # std of white noise (tone amplitude 1)
    text_noise: float = option(0.3, ge=0, le=1)  # chance a transcript's cue word is replaced
    # fraction of training annotations that name a wrong class (the media show the true
    # one; validation and test stay correct): noisy labels a teacher can see through
    label_noise: float = option(0.0, ge=0, lt=1)
    seed: int = option(0, ge=0, le=SEED_MAX)


class DatasetConfig(Schema):
    """Which manifest, which cache folder, which modalities play which role."""

    name: PathComponent = "demo"  # the cache's folder under cache_dir
    adapter: str = "demo"  # how `amid-extract prepare` reads the layout (or "csv")
    adapter_options: FreeMap = option({})  # checked by the adapter's Options
    root: str = "data/demo"
    manifest: str = "data/manifests/demo.csv"  # the manifest `prepare` writes, everyone reads
    cache_dir: str = "cache"
    target: list[str] = option(["visual"])
    auxiliary: list[str] = option(["audio", "text"])
    fold: int | None = None  # fold-based datasets: the held-out test fold
    # Fewer labelled training samples, to study small-data regimes: a stratified
    # subsample of the TRAINING split only, drawn with train.seed (every method
    # sees the same rows for one seed); validation and test stay whole.
    train_per_class: int | None = option(None, ge=1)
    train_fraction: float | None = option(None, gt=0, le=1)


class ModalityExtractConfig(Schema):
    """How one modality's cache is made: extractor name and its parameters."""

    extractor: str = "pixels"
    params: FreeMap = option({})  # checked by the extractor's Params
    batch_size: int = option(16, ge=1)
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    num_workers: int = option(0, ge=0)  # decoding threads; 0: the main thread
    dtype: Literal["float16", "float32"] = "float32"  # storage type in the cache
    amp: Literal["none", "bf16", "fp16"] = "bf16"  # autocast of neural extractors, GPU only


class ModelConfig(Schema):
    """Encoders, teacher head, classifier and discriminators (docs/method.md)."""

    dim: int = option(128, ge=1)  # representation dimension d
    hidden: int = option(128, ge=1)  # hidden width of RNNs and MLPs
    student: Literal["gru", "lstm", "pool"] = "gru"
    rnn_layers: int = option(1, ge=1, le=100)  # each its own module: deeper stacks are a typo
    bidirectional: bool = False
    dropout: float = option(0.1, ge=0, lt=1)
    teacher_encoders: Literal["shared", "separate"] = "shared"
    # encoder of a multi-step auxiliary modality; clip-level ones (T = 1) get an MLP
    auxiliary: Literal["gru", "lstm", "pool"] = "gru"
    disc_hidden: int = option(128, ge=1)  # width of both discriminators


class TrainConfig(Schema):
    """`amid-train`: optimisation, shared by every method (their own options: `methods`)."""

    epochs: int = option(30, ge=1)
    batch_size: int = option(64, ge=2)
    lr: float = option(1e-3, gt=0, per_member=True)
    weight_decay: float = option(1e-4, ge=0, per_member=True)
    disc_lr: float = option(1e-4, gt=0, per_member=True)  # discriminators' Adam
    seed: int = option(0, ge=0, le=SEED_MAX, per_member=True)
    device: str = "auto"
    amp: bool = True  # bf16 autocast, on CUDA only
    eval_batch_size: int = option(512, ge=1)
    max_steps: int = option(512, ge=1)  # longer sequences: evenly subsampled
    # torch.compile the method's forward and loss terms (falls back to eager with a
    # warning when compilation fails); pays off on a GPU, where eager steps are launch-bound
    compile: bool = False
    # torch's CPU threads in amid-train; 0: torch's default (one per core). 1 when several
    # trainings share the cores (the demo's runs give the same bytes on 1 and 2 threads,
    # and take longer on 1 when they have the machine to themselves)
    threads: int = option(0, ge=0, le=1024)
    model: ModelConfig = option(ModelConfig())


class EvaluateConfig(Schema):
    """`amid-evaluate`: metrics and retrieval."""

    ks: Annotated[list[int], rule(lambda v: len(v) > 0 and min(v) >= 1,
                                  "a non-empty list of integers >= 1")] = option([1, 5, 10, 20, 50])
    chunk_size: int = option(4096, ge=1)  # retrieval queries per chunk
    gallery_chunk_size: int = option(8192, ge=1)  # gallery items per block
    split: Split = "test"  # the split that is scored (retrieval queries)
    gallery_split: Split = "train"  # the retrieval gallery
    projection: Literal["pca", "tsne"] = "pca"  # 2-D embedding plot data


class PipelineConfig(Schema):
    """What `dvc repro` runs: the generated datasets, one train@/evaluate@ pair per method."""

    # the embedded demo is generated only when listed here ([demo]); [] for data on disk
    generate: list[Literal["demo"]] = option([])
    methods: list[str] = option(["baseline", "teacher", "ts", "ts_ta", "amid"])
    # each method trained again with these train.seed values (stages train-seed@<m>-<k>,
    # runs/<m>_seed<k>); the report gives mean ± std over train.seed and these
    repeat_seeds: Annotated[list[int], rule(
        lambda v: len(set(v)) == len(v) and all(0 <= s <= SEED_MAX for s in v),
        f"distinct seeds in [0, {SEED_MAX}]")] = option([])


class SweepConfig(Schema):
    """One named ablation grid: `amid-train --grid NAME`, DVC stage `sweep@NAME`.

    `grid` nests keys down to lists of values, one axis per list (`{train: {seed:
    [0, 1]}, methods: {amid: {alpha: [0, 4]}}}`), nested so that `dvc exp run -S
    sweeps.NAME.grid.train.seed=[0,1]` edits one axis; the grid is their product.
    """

    method: PathComponent = "amid"
    grid: FreeMap = option({})


class Config(Schema):
    demo: DemoConfig = option(DemoConfig())
    dataset: DatasetConfig = option(DatasetConfig())
    extract: dict[str, ModalityExtractConfig] = option({})
    train: TrainConfig = option(TrainConfig())
    methods: dict[str, FreeMap] = option({})  # each method's own (typed: amid.distill.methods)
    evaluate: EvaluateConfig = option(EvaluateConfig())
    pipeline: PipelineConfig = option(PipelineConfig())
    sweeps: dict[str, SweepConfig] = option({})


# Keys that moved, and where to: an old params.yaml fails with the new name.
_LOSS_MOVES = {
    **{k: ("ts", "ts_ta", "amid") for k in ("alpha", "jsd", "tau", "mi_variant", "fixed_teacher",
                                            "teacher_epochs", "teacher_run")},
    "beta": ("ts_ta", "amid"),
    **{k: ("amid",) for k in ("gamma", "mu", "warmup_epochs", "enhanced_disc",
                              "dynamic_weights")},
}
_RENAMED = {"crd_weight": "crd.weight", "crd_negatives": "crd.negatives",
            "gmc_weight": "gmc.weight", "ccl_nce_weight": "ccl.nce_weight",
            "ccl_kl_weight": "ccl.kl_weight", "crcd_weight": "crcd.weight"}


def moved_key(dotted: str) -> str | None:
    """Where an old key lives now, as a sentence, or None if it never existed."""
    if dotted == "train.methods":
        return "train.methods moved to pipeline.methods (it says which stages dvc repro runs)"
    if dotted == "train.loss" or dotted.startswith("train.loss."):
        leaf = dotted.split(".", 2)[2] if dotted.count(".") >= 2 else ""
        if leaf in _RENAMED:
            return f"{dotted} is now methods.{_RENAMED[leaf]}"
        if leaf in _LOSS_MOVES:
            where = ", ".join(f"methods.{m}.{leaf}" for m in _LOSS_MOVES[leaf])
            return f"{dotted} is now per method: {where}"
        return ("train.loss was split by method: each method's options live under "
                "methods.<name> (e.g. methods.amid.alpha)")
    return None


def validate(cfg: Config) -> Config:
    """Rules that join several keys."""
    # names that become one part of a path (cache folders, stage and run names)
    for section, names in (("extract", cfg.extract), ("sweeps", cfg.sweeps)):
        for name in names:
            check_path_component(name, f"{section}.{name}")
    for i, method in enumerate(cfg.pipeline.methods):
        check_path_component(method, f"pipeline.methods[{i}]")
    check_model_size(cfg.train.model)
    check_demo_size(cfg.demo)
    for role in ("target", "auxiliary"):
        for modality in getattr(cfg.dataset, role):
            if modality not in cfg.extract:
                have = ", ".join(cfg.extract) or "none"
                raise ConfigError(f"dataset.{role} names modality {modality!r}, which has no "
                                  f"extract.{modality} section (have: {have})")
    overlap = set(cfg.dataset.target) & set(cfg.dataset.auxiliary)
    if overlap:
        raise ConfigError(f"dataset.target and dataset.auxiliary share {sorted(overlap)}")
    if not cfg.dataset.target:
        raise ConfigError("dataset.target must name at least one modality")
    if cfg.dataset.train_per_class is not None and cfg.dataset.train_fraction is not None:
        raise ConfigError("set dataset.train_per_class or dataset.train_fraction, not both")
    return cfg


def read_params(path: str | Path) -> dict[str, Any]:
    """The raw mapping of a params file, with errors naming the file (and line)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"configuration file {path.resolve()} does not exist") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start}: {exc.reason})") from None
    except OSError as exc:  # a folder, no permission
        raise ConfigError(f"configuration file {path} cannot be read: {exc.strerror}") from None
    try:
        data = parse_yaml(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


def _extractors(data: dict[str, Any]) -> dict[str, Any]:
    sections = data.get("extract")
    if not isinstance(sections, dict):
        return {}
    default = ModalityExtractConfig.model_fields["extractor"].default
    return {m: v.get("extractor", default) for m, v in sections.items() if isinstance(v, dict)}


def _override(data: dict[str, Any], assignment: str) -> None:
    """Apply one `--set`; a modality given a new extractor starts from that one's parameters.

    The old extractor's parameters mean nothing to a new one (logmel's `n_mels` under
    `extract.audio={extractor: panns-cnn14}`) and no `--set` could remove them: they
    are dropped, with a warning, keeping only those this override gives.
    """
    before = _extractors(data)
    apply_override(data, assignment)
    given: dict[str, Any] = {}
    apply_override(given, assignment)  # what this override alone sets
    for modality, new in _extractors(data).items():
        old, section = before.get(modality), data["extract"][modality]
        if old is None or new == old or not isinstance(section.get("params"), dict):
            continue
        # a changed extractor was set by this override, so `given` holds its section
        own = dict(given["extract"][modality].get("params") or {})
        dropped = sorted(set(section["params"]) - set(own))
        section["params"] = own
        if dropped:
            log.warning("--set %s: extract.%s.extractor is now %r; extract.%s.params %s "
                        "belonged to %r and are dropped (%r starts from its own defaults)",
                        assignment, modality, new, modality, ", ".join(dropped), old, new)


def load_config(path: str | Path = "params.yaml", overrides: list[str] | None = None, *,
                check: Callable[[Config], None] | None = None) -> Config:
    """Read `params.yaml`, apply `key=value` overrides, check everything: the file alone
    first, then with each override in turn, so an error names where the bad value came
    from. `check` adds the checks of a part that owns its section (amid-train's methods).
    """
    path = Path(path)
    data = read_params(path)
    for assignment in [None, *(overrides or [])]:
        if assignment is not None:
            _override(data, assignment)
        try:
            cfg = validate(load(Config, data, moved=moved_key))
            if check is not None:
                check(cfg)
        except ConfigError as exc:
            origin = path if assignment is None else f"--set {assignment}"
            raise ConfigError(f"{origin}: {exc}") from None
    return cfg
