"""Inference with the flow's stages traced and frozen by TorchScript: the same flow, each stage run as one graph.

A stage is the logit preprocessing or one scale (:attr:`nvp_core.RealNVP.stages`). Freezing makes the weights
constants (weight norm computed once, each batch norm that follows a convolution folded into it), and a stage's
graph runs without the Python interpreter. That matters most in a server: an eager pass makes about five hundred
small calls, each of which gives up the GIL and has to win it back from the other sessions' Python (a switch
interval each, 5 ms by default), while a frozen pass gives it up about a dozen times. Forward, :meth:`trace`,
the inverse and its coarse/fine halves all run the same graphs, so their numbers agree to the bit as they do
eager. Inference only (autograd off); the parameters stay on the model (for counting, saving and training, which
run eagerly). Whether it keeps the pictures is checked on each model's weights by :func:`try_freezing`.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from .base import Bijector
from .fastpath import ALL_PATHS, FastPath, distance, fidelity_latents, pictures_and_bpd
from .model import RealNVP


@dataclass(frozen=True)
class FrozenStages:
    """Per stage (index as in :attr:`RealNVP.stages`): ``forward[i](x) -> (y, logdet, *per-layer log-dets)`` and
    ``inverse[i](y) -> x``. Kept as a plain attribute of the model: not a submodule, not in the state dict."""

    forward: list[Callable[[Tensor], Any]]
    inverse: list[Callable[[Tensor], Tensor]]


class _Forward(nn.Module):
    def __init__(self, stage: Bijector) -> None:
        super().__init__()
        self.stage = stage

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        y, logdet, parts = self.stage.forward_parts(x)
        return (y, logdet, *parts)


class _Inverse(nn.Module):
    def __init__(self, stage: Bijector) -> None:
        super().__init__()
        self.stage = stage

    def forward(self, y: Tensor) -> Tensor:
        return self.stage.inverse(y)


def unfreeze(model: RealNVP) -> RealNVP:
    """Back to the eager stages (in place)."""
    model.__dict__.pop("frozen", None)
    return model


def is_frozen(model: RealNVP) -> bool:
    return "frozen" in model.__dict__


def _stage_inputs(model: RealNVP, batch: int) -> tuple[list[Tensor], list[Tensor]]:
    """Each stage's input in an encode and in a decode of ``batch`` samples, recorded as the eager model runs."""
    n = len(model.stages)
    fwd: list[Tensor] = [torch.empty(0)] * n
    inv: list[Tensor] = [torch.empty(0)] * n

    def rec(store: list[Tensor], i: int, run: Callable[[Tensor], Any]) -> Callable[[Tensor], Any]:
        def f(h: Tensor) -> Any:
            store[i] = h.clone()
            return run(h)

        return f

    stages = model.stages
    model.__dict__["frozen"] = FrozenStages(  # the eager modules that are traced, recording their inputs
        [rec(fwd, i, _Forward(s)) for i, s in enumerate(stages)],
        [rec(inv, i, _Inverse(s)) for i, s in enumerate(stages)],
    )
    try:
        with torch.no_grad():
            model(model.inverse(model.sample_latents(batch, 0.5, torch.Generator().manual_seed(0))))
    finally:
        unfreeze(model)
    return fwd, inv


def freeze(model: RealNVP, batch: int = 2) -> RealNVP:
    """Traces each stage of ``model`` (eval mode, its fast path applied) forward and inverse at its input in a
    pass of ``batch`` samples and freezes the graphs; the model then runs them whenever autograd is off (in place).
    """
    unfreeze(model)
    fwd, inv = _stage_inputs(model, batch)

    def graph(module: nn.Module, x: Tensor) -> Any:
        return torch.jit.freeze(torch.jit.trace(module.eval(), x, check_trace=False))

    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")  # TorchScript's notices (tracer, maintenance mode)
        frozen = FrozenStages(
            [graph(_Forward(s), x.clone()) for s, x in zip(model.stages, fwd, strict=True)],
            [graph(_Inverse(s), y.clone()) for s, y in zip(model.stages, inv, strict=True)],
        )
    model.__dict__["frozen"] = frozen
    return model


@torch.no_grad()
def try_freezing(
    model: RealNVP, path: FastPath, max_grey_levels: int = 1, max_bpd_diff: float = 1e-4
) -> dict[str, Any]:
    """Freezes ``model`` (running ``path``, float32) if its frozen stages draw the same pictures as float32 NCHW
    (within ``max_grey_levels``, bits/dim within ``max_bpd_diff``, as :func:`nvp_core.fastpath.faithful` asks of a
    path); else leaves it eager. Returns the report. Speed is not timed here (that took longer than the freezing):
    a frozen pass runs the same kernels with batch norm folded, and gains most where other threads run Python,
    which a timing in one thread cannot see (``python -m bench.frozen`` measures both)."""
    unfreeze(model)
    if path.dtype is not None:
        return {"frozen": False, "why": "only float32 paths are frozen"}
    zs = fidelity_latents(model)
    ALL_PATHS[0].apply(model)
    ref = pictures_and_bpd(model, zs)
    path.apply(model)
    freeze(model)
    report: dict[str, Any] = distance(ref, pictures_and_bpd(model, zs))
    report["frozen"] = report["max_grey_levels"] <= max_grey_levels and report["max_bpd_diff"] <= max_bpd_diff
    if not report["frozen"]:
        unfreeze(model)
    return report
