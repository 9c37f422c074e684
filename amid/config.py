"""The one typed configuration, read from `params.yaml`.

Every stage loads it once (`load_config`) and then hands explicit values to
library functions; nothing below the CLIs reads `params.yaml`. Loading is
strict: an unknown key (a misspelled `dvc exp run -S train.loss.alfa=2`, which
DVC itself accepts silently), a wrong type or an out-of-range value is a
`ConfigError` that names the dotted key.

Each stage section owns its dataclass; `dvc.yaml` lists, per stage, only the
dotted keys that stage reads.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from amid.errors import ConfigError

# ---------------------------------------------------------------- sections


@dataclass
class DemoConfig:
    """The embedded demo dataset (`amid-extract demo`), built on sklearn's digits."""

    out: str = "data/demo"
    n_per_class: int = 60  # 10 digit classes; 60% train, 20% val, 20% test
    frames: int = 6  # frames per video
    frame_size: int = 32  # pixels, square
    visual_noise: float = 0.9  # std of per-frame pixel noise (image in [0, 1])
    visual_blur: float = 1.2  # Gaussian blur sigma (8x8 digit pixels)
    sample_rate: int = 16000
    duration: float = 0.5  # seconds of audio per sample
    audio_noise: float = 0.6  # std of white noise (tone amplitude 1)
    text_noise: float = 0.3  # chance a transcript's cue word is replaced
    seed: int = 0


@dataclass
class DatasetConfig:
    """Which manifest, which cache folder, which modalities play which role."""

    name: str = "demo"
    adapter: str = "demo"  # how `amid-extract prepare` reads the layout (or "csv")
    adapter_options: dict[str, Any] = field(default_factory=dict)
    root: str = "data/demo"
    manifest: str = "data/manifests/demo.csv"
    cache_dir: str = "cache"
    target: list[str] = field(default_factory=lambda: ["visual"])
    auxiliary: list[str] = field(default_factory=lambda: ["audio", "text"])
    fold: int | None = None  # fold-based datasets: the held-out test fold


@dataclass
class ModalityExtractConfig:
    """How one modality's cache is made: extractor name and its parameters."""

    extractor: str = "pixels"
    params: dict[str, Any] = field(default_factory=dict)
    batch_size: int = 16
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    num_workers: int = 0  # decoding threads; 0 decodes in the main thread
    dtype: Literal["float16", "float32"] = "float32"  # storage type in the cache
    amp: Literal["none", "bf16", "fp16"] = "bf16"  # autocast of neural extractors, GPU only


@dataclass
class ModelConfig:
    """Encoders, teacher head, classifier and discriminators (DESIGN 4)."""

    dim: int = 128  # representation dimension d
    hidden: int = 128  # hidden width of RNNs and MLPs
    student: Literal["gru", "lstm", "pool"] = "gru"
    rnn_layers: int = 1
    bidirectional: bool = False
    dropout: float = 0.1
    teacher_encoders: Literal["shared", "separate"] = "shared"
    # encoder of a multi-step auxiliary modality; clip-level ones (T = 1) get an MLP
    auxiliary: Literal["gru", "lstm", "pool"] = "gru"
    disc_hidden: int = 128  # width of both discriminators


@dataclass
class LossConfig:
    """Weights and switches of the AMID objective and its ablations (DESIGN 4.1-4.5)."""

    alpha: float = 4.0  # L_TS
    beta: float = 1.5  # L_TA
    gamma: float = 1.0  # L_adv
    jsd: float = 1.0  # L_JSD
    tau: float = 0.1
    mu: float = 0.9  # moving average of the discriminator weights
    mi_variant: Literal["amid", "ccl"] = "amid"
    warmup_epochs: int = 5
    enhanced_disc: bool = True
    dynamic_weights: bool = True
    fixed_teacher: bool = False
    # fixed_teacher: CE pre-training epochs of the teacher inside the run (the
    # first teacher_epochs of train.epochs), unless teacher_run names the run
    # folder of a `teacher` method to load instead
    teacher_epochs: int = 10
    teacher_run: str = ""
    # competing methods (DESIGN 4.5; crd and crcd use the fixed teacher above);
    # constants their papers fix (128-d heads, temperatures, momentum) live in the methods
    crd_weight: float = 0.8  # CRD term, both directions (Tian et al.'s beta)
    crd_negatives: int = 4096  # memory-bank negatives per anchor (at most train size - 1)
    gmc_weight: float = 1.0  # NT-Xent summed over the modalities
    ccl_nce_weight: float = 1.0  # class-aware NCE on (s, t) and (s, a)
    ccl_kl_weight: float = 0.5  # symmetric KL between the student's and teacher's logits
    crcd_weight: float = 1.0  # relation contrastive term


@dataclass
class TrainConfig:
    """`amid-train`: optimisation and the methods that `dvc repro` trains."""

    methods: list[str] = field(default_factory=lambda: ["baseline", "teacher", "amid"])
    epochs: int = 30
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-4
    disc_lr: float = 1e-4
    seed: int = 0
    device: str = "auto"
    amp: bool = True  # bf16 autocast, on CUDA only
    eval_batch_size: int = 512
    max_steps: int = 512  # longer sequences are subsampled evenly to this many steps
    # torch.compile the method's forward and loss terms (falls back to eager with a
    # warning when compilation fails); pays off on a GPU, where eager steps are launch-bound
    compile: bool = False
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)


@dataclass
class EvaluateConfig:
    """`amid-evaluate`: metrics and retrieval."""

    ks: list[int] = field(default_factory=lambda: [1, 5, 10, 20, 50])
    chunk_size: int = 4096  # retrieval queries per chunk (bounds memory)
    gallery_chunk_size: int = 8192  # gallery items per retrieval block (bounds memory)
    split: str = "test"  # the split that is scored (queries for retrieval)
    gallery_split: str = "train"  # the retrieval gallery
    projection: Literal["pca", "tsne"] = "pca"  # 2-D embedding plot data


@dataclass
class SweepConfig:
    """One named ablation grid: `amid-train --grid NAME`, DVC stage `sweep@NAME`.

    `grid` nests configuration keys down to lists of values, one axis per
    list (`{train: {seed: [0, 1, 2], loss: {alpha: [0, 4]}}}`); the grid is
    their product. Nested rather than dotted keys so that `dvc exp run -S
    sweeps.NAME.grid.train.seed=[0,1]` edits one axis.
    """

    method: str = "amid"
    grid: dict[str, Any] = field(default_factory=dict)


@dataclass
class Config:
    demo: DemoConfig = field(default_factory=DemoConfig)
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    extract: dict[str, ModalityExtractConfig] = field(default_factory=dict)
    train: TrainConfig = field(default_factory=TrainConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    sweeps: dict[str, SweepConfig] = field(default_factory=dict)


# ------------------------------------------------------------ range checks
# (dotted key, predicate, what it must be); checked after loading.
_CHECKS: list[tuple[str, typing.Callable[[Any], bool], str]] = [
    ("demo.n_per_class", lambda v: v >= 5, ">= 5"),
    ("demo.frames", lambda v: v >= 1, ">= 1"),
    ("demo.frame_size", lambda v: v >= 8, ">= 8"),
    ("demo.sample_rate", lambda v: v >= 8000, ">= 8000"),
    ("demo.duration", lambda v: v > 0, "> 0"),
    ("train.epochs", lambda v: v >= 1, ">= 1"),
    ("train.batch_size", lambda v: v >= 2, ">= 2"),
    ("train.lr", lambda v: v > 0, "> 0"),
    ("train.weight_decay", lambda v: v >= 0, ">= 0"),
    ("train.disc_lr", lambda v: v > 0, "> 0"),
    ("train.eval_batch_size", lambda v: v >= 1, ">= 1"),
    ("train.max_steps", lambda v: v >= 1, ">= 1"),
    ("train.model.disc_hidden", lambda v: v >= 1, ">= 1"),
    ("train.loss.teacher_epochs", lambda v: v >= 0, ">= 0"),
    ("train.loss.crd_weight", lambda v: v >= 0, ">= 0"),
    ("train.loss.crd_negatives", lambda v: v >= 1, ">= 1"),
    ("train.loss.gmc_weight", lambda v: v >= 0, ">= 0"),
    ("train.loss.ccl_nce_weight", lambda v: v >= 0, ">= 0"),
    ("train.loss.ccl_kl_weight", lambda v: v >= 0, ">= 0"),
    ("train.loss.crcd_weight", lambda v: v >= 0, ">= 0"),
    ("train.model.dim", lambda v: v >= 1, ">= 1"),
    ("train.model.hidden", lambda v: v >= 1, ">= 1"),
    ("train.model.rnn_layers", lambda v: v >= 1, ">= 1"),
    ("train.model.dropout", lambda v: 0 <= v < 1, "in [0, 1)"),
    ("train.loss.alpha", lambda v: v >= 0, ">= 0"),
    ("train.loss.beta", lambda v: v >= 0, ">= 0"),
    ("train.loss.gamma", lambda v: v >= 0, ">= 0"),
    ("train.loss.jsd", lambda v: v >= 0, ">= 0"),
    ("train.loss.tau", lambda v: v > 0, "> 0"),
    ("train.loss.mu", lambda v: 0 <= v < 1, "in [0, 1)"),
    ("train.loss.warmup_epochs", lambda v: v >= 0, ">= 0"),
    ("evaluate.chunk_size", lambda v: v >= 1, ">= 1"),
    ("evaluate.gallery_chunk_size", lambda v: v >= 1, ">= 1"),
    ("evaluate.ks", lambda v: len(v) > 0 and min(v) >= 1, "a non-empty list of integers >= 1"),
    ("evaluate.split", lambda v: v in ("train", "val", "test"), "one of train, val, test"),
    ("evaluate.gallery_split", lambda v: v in ("train", "val", "test"), "one of train, val, test"),
]

# ------------------------------------------------------------------ loading


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _reject_nonfinite(value: Any, where: str) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{where}: expected a finite number, got {value!r}")
    if isinstance(value, dict):
        for k, v in value.items():
            _reject_nonfinite(v, f"{where}.{k}")
    elif isinstance(value, list | tuple):
        for i, v in enumerate(value):
            _reject_nonfinite(v, f"{where}[{i}]")


def coerce(value: Any, tp: Any, where: str) -> Any:
    """Check `value` against the annotation `tp`, converting where lossless.

    Accepts ints for floats (YAML writes `1` for 1.0) and nothing else loosely:
    "3" is not an int, 1.5 is not an int, "yes" is not a bool.
    """
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:  # free-form (extractor params): checked by their owner, but never NaN
        _reject_nonfinite(value, where)
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return coerce(value, arg, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(
                f"{where}: must be one of {', '.join(map(repr, args))}, got {value!r}"
            )
        return value
    if origin is list:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return [coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return {str(k): coerce(v, args[1], f"{where}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, where)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        if not math.isfinite(value):  # YAML's .nan/.inf pass every range check below
            raise ConfigError(f"{where}: expected a finite number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    raise TypeError(f"{where}: unsupported annotation {tp!r}")  # a bug, not user input


def from_dict(cls: type, data: Any, where: str = "") -> Any:
    """Build dataclass `cls` from a mapping; unknown keys are errors naming the key."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'config'}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        keys = ", ".join(f"{where}.{k}" if where else str(k) for k in unknown)
        known = ", ".join(sorted(names))
        raise ConfigError(f"unknown configuration key(s) {keys}; known here: {known}")
    kwargs = {k: coerce(v, hints[k], f"{where}.{k}" if where else k) for k, v in data.items()}
    return cls(**kwargs)


def _get(obj: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


def validate(cfg: Config) -> Config:
    for key, ok, must in _CHECKS:
        value = _get(cfg, key)
        if not ok(value):
            raise ConfigError(f"{key} must be {must}, got {value!r}")
    for role in ("target", "auxiliary"):
        for modality in getattr(cfg.dataset, role):
            if modality not in cfg.extract:
                raise ConfigError(
                    f"dataset.{role} names modality {modality!r}, which has no "
                    f"extract.{modality} section (have: {', '.join(cfg.extract) or 'none'})"
                )
    overlap = set(cfg.dataset.target) & set(cfg.dataset.auxiliary)
    if overlap:
        raise ConfigError(f"dataset.target and dataset.auxiliary share {sorted(overlap)}")
    if not cfg.dataset.target:
        raise ConfigError("dataset.target must name at least one modality")
    return cfg


def apply_override(data: dict[str, Any], assignment: str) -> None:
    """Apply one `dotted.key=value` (value parsed as YAML) to a raw mapping."""
    if "=" not in assignment:
        raise ConfigError(f"override {assignment!r} is not of the form key=value")
    key, raw = assignment.split("=", 1)
    parts = key.strip().split(".")
    node = data
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"override {key}: {part!r} is not a section")
        node = child
    try:
        node[parts[-1]] = yaml.safe_load(raw)
    except yaml.YAMLError as exc:  # e.g. `--set a=[1` or a `!!python/...` tag
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"override {key}: value {raw!r} is not valid YAML ({problem})") from None


def load_config(path: str | Path = "params.yaml", overrides: list[str] | None = None) -> Config:
    """Read `params.yaml`, apply `key=value` overrides, check everything."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"configuration file {path} does not exist") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start}: {exc.reason})") from None
    except OSError as exc:  # a folder, no permission
        raise ConfigError(f"configuration file {path} cannot be read: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    for assignment in overrides or []:
        apply_override(data, assignment)
    try:
        return validate(from_dict(Config, data))
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def to_dict(cfg: Any) -> dict[str, Any]:
    """The resolved configuration as plain data (stored with every run)."""
    return dataclasses.asdict(cfg)
