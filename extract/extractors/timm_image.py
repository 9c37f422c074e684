"""`densenet`: per-frame features of any timm image model (default DenseNet-121).

Frames are sampled from the video at `fps` (by timestamp, `media.load_video`;
`video_path` may also be a frame folder of .jpg/.png taken at `folder_fps`),
preprocessed with the model's own timm data config (`resolve_data_config` +
`create_transform`: resize the shorter side to size / crop_pct with the
config's interpolation, centre crop, mean/std normalisation; applied to
frame tensors), and passed through the network with its classifier removed
(`num_classes=0`), i.e. global-pooled backbone features, one row per frame.
`pooling: mean` averages the frames into one clip vector (T = 1).

Weights: `checkpoint` (a local .safetensors/.pth/.bin of the timm model), or,
when empty, the model's timm weights on the Hugging Face hub (its
`pretrained_cfg.hf_hub_id`), taken from the HF cache, or downloaded when
online. Both are loaded strictly here (timm's own loader only logs missing
keys once the classifier is dropped); `random_init: true` draws the weights
from `seed` instead (pipeline tests only; recorded as `random-init(seed=N)`).
For timm DenseNets, `checkpoint` may also be a torchvision DenseNet state dict
(`densenet121-a639ec97.pth` and the like): see `from_torchvision_densenet`.

Videos from which more than 512 frames would be sampled are streamed
(`extractors.long`): frames are decoded, preprocessed and embedded
`frame_batch` at a time, so memory does not grow with the video's length.
"""

from __future__ import annotations

import re
from typing import Any, Literal

import numpy as np
import torch

from amid.errors import CheckpointError, ConfigError
from amid.extract.extractors.base import (
    EXTRACTORS,
    VIDEO_DECODERS,
    ExtractorParams,
    MediaError,
    MediaItem,
)
from amid.extract.extractors.long import LongVideo, batches, long_video
from amid.extract.extractors.weights import (
    OFFLINE_HELP,
    TorchExtractor,
    check_random_init,
    hf_cache_dir,
    hub_unreachable,
    load_state_dict,
    offline,
    random_init_name,
)
from amid.extract.media import load_video
from amid.schema import option

HUB_FILES = ("model.safetensors", "pytorch_model.bin")
HUB_PREFIXES = ("hf-hub:", "hf_hub:")  # timm model names that are hub repositories
# torchvision's first DenseNet checkpoints named a dense layer's modules `norm.1`, `conv.2`
# (module names with dots, which later PyTorch versions refuse); now they are `norm1`, `conv2`.
_OLD_DENSE_KEY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.([12]\.(?:weight|bias|running_mean|running_var))$"
)


def hub_weights(repo_id: str) -> str:
    """Local path of a timm hub repository's weight file (cache first; download if allowed)."""
    from huggingface_hub import hf_hub_download

    errors = []
    for filename in HUB_FILES:  # the cache first: no network at all when it has them
        try:
            return hf_hub_download(repo_id, filename, local_files_only=True)
        except Exception as exc:  # not cached: try the next, then the hub
            errors.append(f"{filename}: {type(exc).__name__}")
    unreachable = None if offline() else hub_unreachable()
    if not offline() and not unreachable:
        for filename in HUB_FILES:
            try:
                return hf_hub_download(repo_id, filename)
            except Exception as exc:  # no such file, download failed: try the next
                errors.append(f"{filename}: {type(exc).__name__}")
    how = ("not tried (offline)" if offline() else f"cannot be reached ({unreachable})"
           if unreachable else "download failed")
    raise CheckpointError(
        f"no weights for timm model {repo_id!r}; looked at: Hugging Face cache {hf_cache_dir()} "
        f"({', '.join(errors)}); the hub: {how}. Set params.checkpoint to a local weight file\n"
        f"  {OFFLINE_HELP}"
    )


def hub_repo(model: str) -> str | None:
    """The hub repository of a timm model name's pretrained weights, without building it."""
    import timm
    from timm.models import get_pretrained_cfg

    for prefix in HUB_PREFIXES:  # `hf-hub:org/name`: the repository is the name
        if model.startswith(prefix):
            return model[len(prefix):]
    if not timm.is_model(model.split(".")[0]):
        return None
    cfg = get_pretrained_cfg(model)
    return getattr(cfg, "hf_hub_id", None) or None


def strip_classifier(state: dict[str, torch.Tensor], model: torch.nn.Module
                     ) -> dict[str, torch.Tensor]:
    """Drop the pretrained classifier's tensors: the model here has none (num_classes=0)."""
    names = model.pretrained_cfg.get("classifier") or ()
    names = (names,) if isinstance(names, str) else tuple(names)
    return {k: v for k, v in state.items() if not any(k.startswith(f"{n}.") for n in names)}


def from_torchvision_densenet(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A torchvision DenseNet state dict in timm's DenseNet names.

    timm's DenseNet uses torchvision's current module names (`features.denseblock1.
    denselayer1.norm1`, `classifier`), so only the old dotted names need renaming;
    timm-format keys pass unchanged.
    """
    return {_OLD_DENSE_KEY.sub(r"\1\2", k): v for k, v in state.items()}


def fill_batch_counters(state: dict[str, torch.Tensor], model: torch.nn.Module
                        ) -> dict[str, torch.Tensor]:
    """Add BatchNorm step counters that checkpoints from before PyTorch 0.4.1 lack.

    `num_batches_tracked` only counts training steps (used when momentum is None in
    training); it never changes eval features, so zero is as good as the lost count.
    """
    own = model.state_dict()
    extra = {k: torch.zeros_like(v) for k, v in own.items()
             if k.endswith(".num_batches_tracked") and k not in state}
    return {**state, **extra}


@EXTRACTORS.register("densenet")
class TimmImageExtractor(TorchExtractor):
    modality = "visual"
    LIBRARIES = (*VIDEO_DECODERS, "torch", "timm")  # torchvision: timm's transform too
    frame_batch = 64  # frames per forward pass: bounds activation memory
    LATE_DEFAULTS = {"seed": 0}  # added later; caches made before it stay valid

    class Params(ExtractorParams):
        model: str = "densenet121"  # any timm model name (with optional .tag)
        checkpoint: str = ""  # local weight file; empty: the model's timm hub weights
        random_init: bool = False  # tests/CI only
        fps: float = option(1.0, gt=0)
        max_frames: int | None = option(None, ge=1, note="(or null: no limit)")
        # frame folders: the rate their frames were taken at
        folder_fps: float = option(25.0, gt=0)
        pooling: Literal["none", "mean"] = "none"
        seed: int = 0  # the seed of random_init

    @classmethod
    def check(cls, params: Any, where: str) -> None:
        import timm

        check_random_init(cls.name, params, where, "checkpoint")
        if (not params.model.startswith(HUB_PREFIXES)
                and not timm.is_model(params.model.split(".")[0])):
            raise ConfigError(f"{where}.model: unknown timm model {params.model!r} "
                              f"(extractor {cls.name!r})")

    @classmethod
    def model_name(cls, params: Any) -> str:
        if params.random_init:
            source = random_init_name(params.seed)
        elif params.checkpoint:
            source = params.checkpoint
        else:
            repo = hub_repo(params.model)
            source = f"hf://{repo}" if repo else "no hub weights"
        return f"{params.model} ({source})"

    def __init__(self, params: Any) -> None:
        super().__init__(params)
        import timm
        from timm.data import create_transform, resolve_data_config

        p = params
        try:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(p.seed)
                model = timm.create_model(p.model, pretrained=False, num_classes=0)
        except RuntimeError as exc:  # unknown model name
            raise ConfigError(f"extractor {self.name!r}: {exc}") from None
        if not p.random_init:
            if p.checkpoint:
                path = p.checkpoint
            else:
                repo = model.pretrained_cfg.get("hf_hub_id")
                if not repo:
                    raise CheckpointError(f"timm model {p.model!r} has no hub weights; set "
                                          f"params.checkpoint to a local weight file\n"
                                          f"  {OFFLINE_HELP}")
                path = hub_weights(repo)
            self._load(model, path)
        self.module = self._frozen(model)
        self.data_config = resolve_data_config({}, model=model)
        self.transform = create_transform(**self.data_config)

    def _load(self, model: torch.nn.Module, path: str) -> None:
        from timm.models.densenet import DenseNet

        state = load_state_dict(path, "timm checkpoint")
        converted = ""
        if isinstance(model, DenseNet):
            state = fill_batch_counters(from_torchvision_densenet(state), model)
            converted = " (after renaming torchvision DenseNet keys)"
        state = strip_classifier(state, model)
        own = model.state_dict()
        missing = sorted(set(own) - set(state))
        unexpected = sorted(set(state) - set(own))
        wrong = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
        if missing or unexpected or wrong:
            raise CheckpointError(
                f"{path} does not fit timm model {self.params.model!r}{converted}: missing keys "
                f"{missing[:10]}, unexpected keys {unexpected[:10]}, shape mismatches {wrong[:10]}"
            )
        model.load_state_dict(state, strict=True)

    @property
    def feature_dim(self) -> int:
        return int(self.module.num_features)

    def preprocess(self, frames: np.ndarray) -> torch.Tensor:
        """(T, H, W, 3) uint8 -> (T, 3, h, w) float32, timm's eval transform on tensors."""
        x = torch.from_numpy(frames).permute(0, 3, 1, 2).float().div_(255.0)
        return self.transform(x).contiguous()

    def load(self, item: MediaItem) -> torch.Tensor | LongVideo:
        if item.path is None:
            raise MediaError("no video_path")
        p = self.params
        deferred = long_video(item, p.fps, p.max_frames, p.folder_fps)
        if deferred is not None:
            return deferred
        frames = load_video(item.path, p.fps, start=item.start, end=item.end,
                            max_frames=p.max_frames, folder_fps=p.folder_fps)
        return self.preprocess(frames)

    def _forward(self, frames: torch.Tensor) -> np.ndarray:
        parts = []
        with self.running():
            for lo in range(0, len(frames), self.frame_batch):
                chunk = frames[lo : lo + self.frame_batch].to(self.device, non_blocking=True)
                parts.append(self.module(chunk).float().cpu())
        return torch.cat(parts).numpy()

    def embed(self, batch: list[Any]) -> list[np.ndarray]:
        short = [x for x in batch if not isinstance(x, LongVideo)]
        feats = self._forward(torch.cat(short)) if short else None
        out, start = [], 0
        for x in batch:
            if isinstance(x, LongVideo):
                seq = np.concatenate([self._forward(self.preprocess(block))
                                      for block in batches(x.stream(), self.frame_batch)])
            else:
                seq = feats[start : start + len(x)]
                start += len(x)
            out.append(seq.mean(axis=0, keepdims=True) if self.params.pooling == "mean" else seq)
        return out
