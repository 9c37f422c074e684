"""Where pretrained weights come from, and how the neural extractors run them.

Weights are a local folder or file, or a Hugging Face hub id found in the HF
cache (downloaded into it when the machine is online and offline mode is off).
A missing weight file is a `CheckpointError` that lists where it looked and
what to do (`OFFLINE_HELP`); nothing here ever falls back to random weights,
lets a model load with weights missing, or enables `trust_remote_code` (a hub
repository's Python code would run on the user's machine). `random_init:
true` (`random_hf_model`) is the explicit way to run on seeded random
weights, recorded in the cache as `random-init(seed=N)`.

Before anything would be downloaded, one TCP connection to the hub (or the
proxy) is tried with a short timeout (`hub_unreachable`): without it,
huggingface_hub retries a dead connection with back-off for about 50 s and
ten warnings before failing. When the hub cannot be reached, a cached copy
is used as it is, and a model that is not cached fails at once.

`TorchExtractor` gives the torch-backed extractors one way to move to a device
and to run under inference mode with optional bf16/fp16 autocast on GPUs.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch

from amid.devices import amp_allowed
from amid.errors import CheckpointError, ConfigError
from amid.extract.extractors.base import Extractor

log = logging.getLogger(__name__)
_TRUE = {"1", "true", "yes", "on"}
PROBE_SECONDS = 3.0  # how long the hub may take to accept a connection
# What a user without weights can do; the README section carries the details.
OFFLINE_HELP = (
    "to fix: point the model/checkpoint parameter at a local folder or file, or fill the "
    "Hugging Face cache on a machine with access (`hf download <id>`, then copy "
    "~/.cache/huggingface) and set HF_HUB_OFFLINE=1; `random_init: true` runs on seeded "
    "random weights (pipeline tests only). See the README section \"Working offline\""
)


BUILTIN = "builtin:tiny"  # with random_init: an architecture made in code, no file read


def random_init_name(seed: int) -> str:
    """The `model` a cache of random weights records."""
    return f"random-init(seed={seed})"


def check_random_init(name: str, params: Any, where: str, source: str) -> None:
    """`seed` only with `random_init`; `source` (a weight file parameter) not with it;
    `model: builtin:tiny` only with `random_init` (it has no trained weights)."""
    if params.seed != 0 and not params.random_init:
        raise ConfigError(f"{where}.seed applies only with random_init: true (extractor {name!r})")
    if source and params.random_init and getattr(params, source):
        raise ConfigError(f"{where}: set {source} or random_init, not both (extractor {name!r})")
    if getattr(params, "model", None) == BUILTIN and not params.random_init:
        raise ConfigError(f"{where}.model {BUILTIN!r} has no trained weights: it needs "
                          f"random_init: true (extractor {name!r})")


@contextlib.contextmanager
def random_init_files(files: str, builtin: str, also: str = "") -> Iterator[None]:
    """Loads of `random_init`'s configuration files, failing with advice that fits it.

    `random_init: true` still reads `model`'s `files` (its architecture and
    preprocessing); when they are missing, OFFLINE_HELP's suggestion of
    `random_init: true` is already taken, so it is replaced by the files'
    names and `model: builtin:tiny` (`builtin`: what that model is; `also`:
    another way out, appended).
    """
    try:
        yield
    except CheckpointError as exc:
        lines = [ln for ln in str(exc).splitlines() if ln.strip() != OFFLINE_HELP]
        raise CheckpointError("\n".join([
            *lines, f"  random_init: true still reads the model's {files} from a local folder "
            f"or the Hugging Face cache (fill it as for real weights); to need no file, set "
            f"model: {BUILTIN} ({builtin}){also}"])) from None
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


def _proxy_or_hub() -> tuple[str, int]:
    """Host and port the first connection to the hub goes to (a proxy when one is set)."""
    for key in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        if os.environ.get(key):
            proxy = urlparse(os.environ[key] if "://" in os.environ[key]
                             else f"http://{os.environ[key]}")
            return proxy.hostname or "", proxy.port or 8080
    try:
        from huggingface_hub import constants

        endpoint = os.environ.get("HF_ENDPOINT") or constants.ENDPOINT
    except ImportError:  # pragma: no cover - transformers always brings huggingface_hub
        endpoint = "https://huggingface.co"
    url = urlparse(endpoint)
    return url.hostname or "", url.port or (443 if url.scheme == "https" else 80)


@functools.cache
def _probe(host: str, port: int) -> str | None:
    result: list[str | None] = [f"no answer within {PROBE_SECONDS:.0f} s"]

    def connect() -> None:
        try:  # name resolution has no timeout of its own: the thread bounds it
            socket.create_connection((host, port), timeout=PROBE_SECONDS).close()
            result[0] = None
        except OSError as exc:
            result[0] = exc.strerror or str(exc) or type(exc).__name__

    thread = threading.Thread(target=connect, daemon=True)
    thread.start()
    thread.join(PROBE_SECONDS + 0.5)
    return result[0]


def hub_unreachable() -> str | None:
    """None when the hub (or the proxy) accepts a connection; else `host:port: why`."""
    host, port = _proxy_or_hub()
    why = _probe(host, port)
    return None if why is None else f"{host}:{port}: {why}"


def in_hf_cache(name: str) -> bool:
    """Whether the HF cache holds a snapshot of hub repository `name` (its config.json)."""
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(name, "config.json", cache_dir=hf_cache_dir())
    except Exception:  # a malformed id: the real load says why
        return False
    return isinstance(found, str)


def where_looked(name: str, local_files_only: bool = False, unreachable: str | None = None
                 ) -> str:
    """The places a weight lookup tried, for the error message."""
    path = Path(name).expanduser()
    places = [f"local path {path.resolve()} ({'exists' if path.exists() else 'not found'})"]
    if not name.startswith((".", "/", "~")):
        places.append(f"Hugging Face cache {hf_cache_dir()} (no usable snapshot of {name!r})")
        if offline(local_files_only):
            places.append("the hub: not tried (offline: HF_HUB_OFFLINE=1 or local_files_only)")
        elif unreachable:
            places.append(f"the hub: cannot be reached ({unreachable})")
        else:
            places.append("the hub: download failed")
    return "; ".join(places)


def load_hf(
    loader: Callable[..., Any], name: str, what: str, *, local_files_only: bool = False,
    check_missing: bool = True, **kwargs: Any,
) -> Any:
    """`loader.from_pretrained(name)` with remote code off, offline honoured, loud failures.

    With `check_missing`, a model whose checkpoint lacks any weight (which
    transformers would fill with random values and only warn about) is refused.
    """
    local = is_local(name)
    source = str(Path(name).expanduser()) if local else name
    if local and not Path(source).exists():
        raise CheckpointError(f"{what} {name!r} not found; looked at: {where_looked(name)}\n"
                              f"  {OFFLINE_HELP}")
    only_local = offline(local_files_only) or local
    unreachable = None if only_local else hub_unreachable()
    if unreachable:
        if not in_hf_cache(name):
            raise CheckpointError(
                f"cannot load {what} {name!r}: the Hugging Face hub cannot be reached and the "
                f"model is not in the cache\n  looked at: "
                f"{where_looked(name, unreachable=unreachable)}\n  {OFFLINE_HELP}"
            )
        log.info("the Hugging Face hub cannot be reached (%s); using the cached %s", unreachable,
                 name)
        only_local = True
    try:
        result = loader.from_pretrained(
            source, local_files_only=only_local,
            trust_remote_code=False, **({"output_loading_info": True} if check_missing else {}),
            **kwargs,
        )
    except (OSError, ValueError, KeyError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        looked = where_looked(name, local_files_only, unreachable)
        raise CheckpointError(
            f"cannot load {what} {name!r}: {first}\n  looked at: {looked}\n  {OFFLINE_HELP}"
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


def random_hf_model(auto_model: Any, name: str, what: str, seed: int) -> Any:
    """A model of `name`'s architecture (its config.json) with seeded random weights.

    The configuration (and the caller's preprocessor) still come from `name`,
    a local folder or the HF cache, exactly as for real weights; only the
    weights are drawn, from `seed`, so the same seed gives the same model.
    """
    from transformers import AutoConfig

    config = load_hf(AutoConfig, name, f"{what} configuration", check_missing=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return auto_model.from_config(config)


def load_state_dict(path: str | Path, what: str = "checkpoint") -> dict[str, torch.Tensor]:
    """Tensors of a local `.pth`/`.pt`/`.ckpt` (torch.load weights_only) or `.safetensors` file.

    A training checkpoint's `{"model": state_dict, ...}` is unwrapped.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise CheckpointError(f"{what} file {path} not found; looked at: {path.resolve()}\n"
                              f"  {OFFLINE_HELP}")
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
