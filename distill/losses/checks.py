"""The input checks the batch-mean losses share: a pair of (N, ·) tensors of one shape
and a positive temperature. A wrong shape would otherwise broadcast silently into a
wrong loss, and a temperature of 0 divides by zero; both fail here, naming the loss.
"""

from __future__ import annotations

import torch


def check_pair(loss: str, a: torch.Tensor, b: torch.Tensor,
               what: str = "(N, C) logit tensors") -> None:
    """`a` and `b` both (N, ·), of the same shape, N > 0; else a ValueError naming `loss`."""
    if a.dim() != 2 or a.shape != b.shape:
        raise ValueError(f"{loss} needs two {what} of the same shape, got "
                         f"{tuple(a.shape)} and {tuple(b.shape)}")
    if a.shape[0] == 0:
        raise ValueError(f"{loss} needs a non-empty batch")


def check_temperature(temperature: float | torch.Tensor) -> None:
    """A temperature > 0. A tensor is a stacked sweep's per-member value: its
    configuration checked it, and reading it here would sync (or fail under vmap)."""
    if not isinstance(temperature, torch.Tensor) and not float(temperature) > 0.0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
