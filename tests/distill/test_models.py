"""Encoders, fusion and heads (amid.distill.models)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from amid.distill.models import (
    MultiModalEncoder,
    SequenceEncoder,
    discriminator,
    reverse_padded,
    teacher_head,
)


def _padded(seqs: list[torch.Tensor], extra: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    t_max = max(len(s) for s in seqs) + extra
    x = torch.full((len(seqs), t_max, seqs[0].shape[1]), 7.5)  # loud garbage padding
    for i, s in enumerate(seqs):
        x[i, : len(s)] = s
    return x, torch.tensor([len(s) for s in seqs])


def test_reverse_padded_reverses_within_each_length():
    x = torch.arange(8.0).reshape(2, 4, 1)
    out = reverse_padded(x, torch.tensor([3, 4]))
    assert out[:, :, 0].tolist() == [[2, 1, 0, 3], [7, 6, 5, 4]]


@pytest.mark.parametrize("kind", ["gru", "lstm"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_rnn_matches_torch_rnn_on_the_unpadded_sequence(kind, bidirectional):
    """Independent reference: torch's own (bi)directional 2-layer RNN, one sequence at a time."""
    torch.manual_seed(0)
    enc = SequenceEncoder(5, 4, kind, hidden=6, layers=2, bidirectional=bidirectional).eval()
    ref = (nn.GRU if kind == "gru" else nn.LSTM)(5, 6, num_layers=2, batch_first=True,
                                                 bidirectional=bidirectional)
    with torch.no_grad():
        for k in range(2):
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                getattr(ref, f"{name}_l{k}").copy_(getattr(enc.fwd[k], f"{name}_l0"))
                if bidirectional:
                    getattr(ref, f"{name}_l{k}_reverse").copy_(getattr(enc.bwd[k], f"{name}_l0"))
    seqs = [torch.randn(t, 5) for t in (4, 1, 6)]
    x, lengths = _padded(seqs)
    got = enc(x, lengths)
    for i, s in enumerate(seqs):
        out, _ = ref(s[None])  # (1, T, H*dirs)
        h = out[0, -1] if not bidirectional else torch.cat([out[0, -1, :6], out[0, 0, 6:]])
        torch.testing.assert_close(got[i], enc.proj(h), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", ["gru", "pool", "mlp"])
def test_padding_does_not_change_the_output(kind):
    torch.manual_seed(0)
    enc = SequenceEncoder(3, 4, kind, hidden=8, bidirectional=kind == "gru").eval()
    seqs = [torch.randn(t, 3) for t in (2, 5)]
    a = enc(*_padded(seqs, extra=0))
    b = enc(*_padded(seqs, extra=6))
    alone = enc(*_padded(seqs[:1], extra=0))
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(a[:1], alone)


def test_pool_is_mean_and_max_of_the_valid_steps():
    enc = SequenceEncoder(2, 3, "pool", hidden=4).eval()
    s = torch.tensor([[1.0, -2.0], [3.0, 0.0]])
    x, lengths = _padded([s], extra=2)
    expect = enc.head(torch.tensor([[2.0, -1.0, 3.0, 0.0]]))
    torch.testing.assert_close(enc(x, lengths), expect)


def test_normalisation_buffers_are_applied():
    enc = SequenceEncoder(2, 3, "mlp", hidden=4).eval()
    enc.set_normalisation([1.0, 2.0], [2.0, 4.0])
    x = torch.tensor([[[3.0, 6.0]]])
    torch.testing.assert_close(enc(x, torch.tensor([1])), enc.head(torch.tensor([[1.0, 1.0]])))


def test_fusion_shapes_and_config_roundtrip():
    mods = {"audio": dict(in_dim=4, out_dim=8, kind="gru", hidden=5),
            "text": dict(in_dim=3, out_dim=8, kind="mlp", hidden=5)}
    enc = MultiModalEncoder(mods, dim=8)
    inputs = {"audio": (torch.randn(6, 7, 4), torch.full((6,), 7)),
              "text": (torch.randn(6, 1, 3), torch.ones(6, dtype=torch.long))}
    assert enc(inputs).shape == (6, 8)
    again = MultiModalEncoder(**enc.config())
    again.load_state_dict(enc.state_dict())
    torch.testing.assert_close(again.eval()(inputs), enc.eval()(inputs))
    assert teacher_head(8, 5)(torch.randn(6, 16)).shape == (6, 8)


@pytest.mark.parametrize("layers", [5, 3])
def test_discriminators_are_leaky_mlps_of_the_given_depth(layers):
    d = discriminator(8, 16, layers)
    assert sum(isinstance(m, nn.Linear) for m in d) == layers
    assert all(isinstance(m, nn.LeakyReLU) for m in d if not isinstance(m, nn.Linear))
    assert d(torch.randn(4, 8)).shape == (4, 1)
