"""`train.compile`: torch.compile of a method's forward and loss terms, with an eager fallback.

Why these two: on a GPU an eager AMID step is launch-bound (hundreds of small
kernels, most of them in the MI, JSD and adversarial terms); compiled, inductor
fuses them and AOTAutograd their backward. The discriminator step stays eager
(a few small MLP calls). A stack's vmapped loss terms compile the same way
(`compile_stack`): Dynamo traces through `torch.func.vmap` and `functional_call`.

Fallback: if compiling (or running the compiled code) raises, a warning names
the function and the error, and that function runs eagerly from then on. A
retry is safe: `forward` has no side effects, and the only one of `losses`
(the alignment sums) comes after everything that can fail to compile. On the
CPU inductor draws random numbers like eager PyTorch (`fallback_random`), so
results match an eager run within float tolerance.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch

log = logging.getLogger("amid.distill")

BACKEND = "inductor"  # tests swap in a failing backend to exercise the fallback


class Guarded:
    """Call `eager` compiled; if compiling or its first call fails, warn and stay eager."""

    def __init__(self, name: str, eager: Callable[..., Any]) -> None:
        self.name = name
        self.eager = eager
        self.compiled: Callable[..., Any] | None = None
        try:
            self.compiled = torch.compile(eager, backend=BACKEND)
        except Exception as exc:  # e.g. an unknown backend or an unsupported Python
            log.warning("torch.compile unavailable for %s (%s); running it eagerly", name, exc)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.compiled is None:
            return self.eager(*args, **kwargs)
        try:
            return self.compiled(*args, **kwargs)
        except Exception as exc:  # dynamo/inductor raise many types; any of them means eager
            lines = [x for x in str(exc).splitlines() if x.strip()][:2]  # the cause, no hints
            log.warning("torch.compile of %s failed (%s: %s); running it eagerly",
                        self.name, type(exc).__name__, " ".join(lines))
            self.compiled = None
            return self.eager(*args, **kwargs)

    @property
    def active(self) -> bool:
        return self.compiled is not None


def compile_method(method: torch.nn.Module, device: torch.device) -> dict[str, Guarded]:
    """Replace `method.forward` and `method.losses` by guarded compiled versions, in place
    (parameters and state_dict untouched: checkpoints as an eager run's); the guards."""
    _eager_like_random(device)
    guards = {}
    for name in compiled_functions(method):
        guards[name] = Guarded(f"{type(method).__name__}.{name}", getattr(method, name))
        setattr(method, name, guards[name])
    return guards


def compile_stack(stack: Any, device: torch.device) -> dict[str, Guarded]:
    """Give a `Stack` a guarded compiled version of its vmapped loss terms (`losses_call`),
    computed on their own after the forward (`fuse` off), not with it. The loss terms
    only: Dynamo cannot yet fake-run the vmapped encoders' linear layers.
    """
    import torch._dynamo

    # Dynamo refuses frames that touch nn.GRU/nn.LSTM; the stack only reads their
    # weights (its RNNs run as cell equations, `models.rnn_cells`): safe here
    torch._dynamo.config.allow_rnn = True
    _eager_like_random(device)
    guards = {"losses": Guarded("Stack.losses", stack.vmapped_losses)}
    stack.losses_call = guards["losses"]
    stack.fuse = False  # the losses must be the compiled call, not part of the forward's
    return guards


def _eager_like_random(device: torch.device) -> None:
    # The per-term gradient diagnostics take several gradients of one graph
    # (retain_graph); AOTAutograd's donated buffers would forbid that.
    import torch._functorch.config as functorch_config

    functorch_config.donated_buffer = False
    if device.type == "cpu":
        import torch._inductor.config as inductor_config

        inductor_config.fallback_random = True


def compiled_functions(method: torch.nn.Module) -> tuple[str, ...]:
    """`losses` always; `forward` only when no encoder is an RNN (Dynamo does not trace
    nn.GRU/nn.LSTM: a recurrent forward splits into small graphs and saves nothing)."""
    rnn = any(isinstance(m, torch.nn.RNNBase) for m in method.modules())
    return ("losses",) if rnn else ("forward", "losses")
