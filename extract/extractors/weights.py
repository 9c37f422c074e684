"""Where pretrained weights come from, and how the neural extractors run them.

Weights are a local folder or file, or a Hugging Face hub id found in the HF
cache (downloaded into it when the machine is online and offline mode is off).
A missing weight file is a `CheckpointError` that lists where it looked;
nothing here ever falls back to random weights, lets a model load with weights
missing, or enables `trust_remote_code` (a hub repository's Python code would
run on the user's machine).

`TorchExtractor` gives the torch-backed extractors one way to move to a device
and to run under inference mode with optional bf16/fp16 autocast on GPUs.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from amid.devices import amp_allowed
from amid.errors import CheckpointError
from amid.extract.extractors.base import Extractor

_TRUE = {"1", "true", "yes", "on"}
# Parameters an encoder checkpoint may lack without changing the features we read
# (BERT's pooler is not used: pooling is done here; wav2vec2's mask embedding is
# only used in pre-training).
IGNORABLE_MISSING = ("pooler.", "masked_spec_embed")


def offline(local_files_only: bool = False) -> bool:
    """True when nothing may be downloaded (the flag, or HF_HUB_OFFLINE/TRANSFORMERS_OFFLINE)."""
    env = any(os.environ.get(k, "").strip().lower() in _TRUE
              for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))
    return local_files_only or env


def hf_cache_dir() -> str:
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    try:
        from huggingface_hub import constants

        return str(constants.HF_HUB_CACHE)
    except ImportError:  # pragma: no cover - transformers always brings huggingface_hub
        return "~/.cache/huggingface/hub"


def is_local(name: str) -> bool:
    """A path on disk (absolute, relative, or ~) rather than a hub id like `org/model`."""
    return Path(name).expanduser().exists() or name.startswith((".", "/", "~"))


def where_looked(name: str, local_files_only: bool = False) -> str:
    """The places a weight lookup tried, for the error message."""
    path = Path(name).expanduser()
    places = [f"local path {path.resolve()} ({'exists' if path.exists() else 'not found'})"]
    if not name.startswith((".", "/", "~")):
        places.append(f"Hugging Face cache {hf_cache_dir()} (no usable snapshot of {name!r})")
        places.append(
            "the hub: not tried (offline: HF_HUB_OFFLINE=1 or local_files_only)"
            if offline(local_files_only) else "the hub: download failed"
        )
    return "; ".join(places)


def load_hf(
    loader: Callable[..., Any], name: str, what: str, *, local_files_only: bool = False,
    check_missing: bool = True, **kwargs: Any,
) -> Any:
    """`loader.from_pretrained(name)` with remote code off, offline honoured, loud failures.

    With `check_missing`, a model whose checkpoint lacks any weight (which
    transformers would fill with random values and only warn about) is refused.
    """
    source = str(Path(name).expanduser()) if is_local(name) else name
    if is_local(name) and not Path(source).exists():
        raise CheckpointError(f"{what} {name!r} not found; looked at: {where_looked(name)}")
    try:
        result = loader.from_pretrained(
            source, local_files_only=offline(local_files_only) or is_local(name),
            trust_remote_code=False, **({"output_loading_info": True} if check_missing else {}),
            **kwargs,
        )
    except (OSError, ValueError, KeyError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        looked = where_looked(name, local_files_only)
        raise CheckpointError(
            f"cannot load {what} {name!r}: {first}\n  looked at: {looked}"
        ) from None
    if not check_missing:
        return result
    model, info = result
    missing = sorted(k for k in info.get("missing_keys", ())
                     if not any(k.startswith(p) or k == p for p in IGNORABLE_MISSING))
    mismatched = sorted(str(k) for k in info.get("mismatched_keys", ()))
    if missing or mismatched:
        raise CheckpointError(
            f"{what} {name!r}: the checkpoint does not fit {type(model).__name__}; "
            f"missing weights {missing[:10]}{' ...' if len(missing) > 10 else ''}, "
            f"mismatched shapes {mismatched[:10]} (refusing to fill them with random values)"
        )
    return model


def load_state_dict(path: str | Path, what: str = "checkpoint") -> dict[str, torch.Tensor]:
    """Tensors of a local `.pth`/`.pt`/`.ckpt` (torch.load weights_only) or `.safetensors` file.

    A training checkpoint's `{"model": state_dict, ...}` is unwrapped.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise CheckpointError(f"{what} file {path} not found; looked at: {path.resolve()}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state: Any = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, pickle with code, wrong format: all fatal
        raise CheckpointError(f"{what} {path} cannot be read: {exc}") from None
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    elif isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{what} {path} holds no state dict of tensors (keys: "
                              f"{sorted(state)[:10] if isinstance(state, dict) else type(state)})")
    return state


class TorchExtractor(Extractor):
    """An extractor backed by a torch module (`self.module`), frozen and in eval mode.

    `to(device)` moves it; `amp` ("bf16", "fp16" or None) turns on autocast on
    CUDA devices only, where it is the difference between model speed and a
    fraction of it. Precision changes features slightly, so the runner should
    record it with the cache.
    """

    module: torch.nn.Module
    device: torch.device = torch.device("cpu")
    amp: str | None = None

    def to(self, device: str | torch.device) -> TorchExtractor:
        self.device = torch.device(device)
        self.module.to(self.device)
        return self

    def _frozen(self, module: torch.nn.Module) -> torch.nn.Module:
        module.eval()
        for p in module.parameters():
            p.requires_grad_(False)
        return module

    def precision(self) -> str:
        """"bf16"/"fp16" when autocast is on (asked for, on a GPU), else "fp32"."""
        return self.amp if self.amp and amp_allowed(self.device) else "fp32"

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        """inference_mode, plus autocast when asked for and on a GPU."""
        precision = self.precision()
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
        with torch.inference_mode(), torch.autocast(self.device.type, dtype=dtype,
                                                    enabled=dtype is not None):
            yield
