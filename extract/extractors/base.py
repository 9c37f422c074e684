"""The extractor interface and its registry.

An extractor turns one sample's raw media into a sequence of feature vectors,
shape (T, D): audio windows, video frames or text tokens; a clip-level feature
is T = 1. Extraction is split in two so the runner can overlap them:

- `load(item)` decodes the media on the CPU (file reading, resampling, frame
  sampling). It raises `MediaError` for anything that cannot be decoded; the
  runner records the reason in the cache's `.errors.csv` sidecar and goes on.
- `embed(batch)` runs the frozen model on a list of loaded items and returns
  one float32 array of shape (T_i, D) per item.

Every parameter that changes the features is a field of the extractor's
`Params` model (an `ExtractorParams`, ranges beside the fields), so it ends
up in the cache's `params` attribute and its identity (docs/data.md). The
identity is computed from the parameters alone (`expected_identity`,
`model_name`), never from loaded weights: checking
that a cache is up to date, or that training reads the right cache, loads
no model. Register a new extractor with `@EXTRACTORS.register("name")` in its
own module and import that module in `amid.extract.extractors.__init__`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from pydantic import ConfigDict

from amid.errors import ConfigError, MediaError  # noqa: F401  (MediaError re-exported)
from amid.registry import Registry
from amid.samples import MediaItem  # noqa: F401  (re-exported: the extractors' input)
from amid.schema import Schema, load

if TYPE_CHECKING:  # weightless extractors never need torch
    import torch


class ExtractorParams(Schema):
    """Base of every extractor's `Params`: frozen, so a built extractor's identity holds."""

    model_config = ConfigDict(frozen=True)


class Extractor(ABC):
    """Base class: subclasses set `modality`, `Params`, `feature_dim`, `model`."""

    modality: ClassVar[str]  # "audio" | "visual" | "text"
    Params: ClassVar[type[ExtractorParams]]  # every feature-changing parameter
    name: ClassVar[str] = ""  # set by the registry lookup in `build_extractor`
    # Params added after caches were made with this extractor, and the default
    # that reproduces the features made before: left out of the identity at that
    # default, so adding a parameter does not invalidate every existing cache.
    LATE_DEFAULTS: ClassVar[dict[str, Any]] = {}
    # The distributions whose versions can change this extractor's features (its model
    # code, its media decoders: VIDEO_DECODERS, AUDIO_DECODERS). A cache records their
    # versions beside h5py's and numpy's (amid.cache) and no others, so a cache made
    # with pixels does not change when timm or transformers do.
    LIBRARIES: ClassVar[tuple[str, ...]] = ()

    def __init__(self, params: Any) -> None:
        self.params = params

    @property
    @abstractmethod
    def feature_dim(self) -> int: ...

    @classmethod
    def check(cls, params: Any, where: str) -> None:
        """Checks across parameters (beyond each field's own), without loading anything."""
        return None  # most extractors have none

    @classmethod
    def model_name(cls, params: Any) -> str:
        """Hub id or local path of the weights, "random-init(seed=N)", or "none" (weightless)."""
        return "none"

    @property
    def model(self) -> str:
        return self.model_name(self.params)

    def size(self, loaded: Any) -> int:
        """Length of a loaded item, for bucketing items of similar cost into one batch.

        Samples or frames (summed over a list of chunks); extractors whose
        loaded items are not sequences override it (text: the token count).
        """
        return _length(loaded)

    def to(self, device: str | torch.device) -> Extractor:
        """Move the model to `device` ("cpu", "cuda", ...); weightless ones ignore it."""
        return self

    @abstractmethod
    def load(self, item: MediaItem) -> Any:
        """Decode one sample's media (CPU); raise MediaError if it cannot be."""

    @abstractmethod
    def embed(self, batch: list[Any]) -> list[np.ndarray]:
        """Features of each loaded item, float32 arrays of shape (T_i, feature_dim)."""

    def identity(self) -> dict[str, Any]:
        """What makes two caches of this extractor interchangeable."""
        return identity_for(type(self), self.params, self.precision())

    def precision(self) -> str:
        """The arithmetic the model really runs in ("fp32"; torch extractors may autocast)."""
        return "fp32"


def _length(loaded: Any) -> int:
    if isinstance(loaded, list | tuple):
        return sum(_length(part) for part in loaded)
    try:
        return len(loaded)
    except TypeError:
        return 0


EXTRACTORS: Registry[type[Extractor]] = Registry("extractor")

# What decodes each modality's media (amid.extract.media, amid.extract.audio)
VIDEO_DECODERS = ("av", "torchvision")  # containers; frame folders' images
AUDIO_DECODERS = ("av", "soundfile", "torch", "torchaudio")  # files; sinc resampling


def libraries_of(extractor: str) -> tuple[str, ...]:
    """`LIBRARIES` of a registered extractor; () for other caches (imported features)."""
    return EXTRACTORS.get(extractor).LIBRARIES if extractor in EXTRACTORS else ()


def identity_for(cls: type[Extractor], params: Any, precision: str = "fp32") -> dict[str, Any]:
    """The identity ({modality, extractor, model, params}) of features made with `params`."""
    values = params.model_dump()
    for key, default in cls.LATE_DEFAULTS.items():
        # random weights are drawn from `seed`: their caches always record it
        if values.get(key) == default and not (key == "seed" and values.get("random_init")):
            del values[key]
    if precision != "fp32":  # autocast changes the features slightly
        values["precision"] = precision
    return {
        "extractor": cls.name,
        "modality": cls.modality,
        "model": cls.model_name(params),
        "params": values,
    }


def expected_identity(spec_extractor: str, params: dict[str, Any] | None, where: str
                      ) -> dict[str, Any]:
    """The identity a cache made with this extractor configuration carries; loads no weights.

    `params` are validated as `build_extractor` validates them (a bad one is a
    ConfigError naming `where`). The result has no `precision`: bf16/fp16
    autocast follows the machine, so compare with
    `amid.cache.identity_differences(expected, found, ignore=("precision",))`.
    """
    cls = _lookup(spec_extractor, where)
    built = build_params(cls, params or {}, where)
    cls.check(built, where)
    return identity_for(cls, built)


def _lookup(name: str, where: str) -> type[Extractor]:
    cls = EXTRACTORS.get(name)
    cls.name = name
    return cls


def build_params(cls: type[Extractor], values: dict[str, Any], where: str) -> Any:
    """`cls.Params` from a dict, naming the option at fault on a bad key, type or range.

    A value out of range would otherwise fail later inside torch on every
    sample (grid 0, n_fft 0) or surface as a library error at construction.
    """
    unknown = (f"{{where}}: unknown parameter(s) {{names}} for extractor {cls.name!r}; "
               "known: {known}")
    return load(cls.Params, values, where, unknown=unknown)


def build_extractor(
    name: str, params: dict[str, Any] | None = None, where: str = "params"
) -> Extractor:
    """Look up an extractor by name and construct it with validated parameters."""
    cls = _lookup(name, where)
    built = build_params(cls, params or {}, where)
    cls.check(built, where)
    try:
        return cls(built)
    except (ValueError, RuntimeError) as exc:  # a combination the library refuses
        raise ConfigError(f"{where}: {exc}") from None
