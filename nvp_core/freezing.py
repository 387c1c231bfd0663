"""Inference with the flow traced and frozen by TorchScript: the same flow, its forward pass run as one graph and
the inverse of each stage (the logit preprocessing, each scale: :attr:`nvp_core.RealNVP.stages`) as one graph.

Freezing makes the weights constants (weight norm computed once, each batch norm that follows a convolution folded
into it), and a graph runs without the Python interpreter. That matters most in a server: an eager pass makes about
five hundred small calls, each of which gives up the GIL and has to win it back from the other sessions' Python (a
switch interval, 5 ms by default, each time), while a frozen pass gives it up a few times. :meth:`forward`,
:meth:`trace` and :meth:`trace_layers` read the one forward graph, and the inverse and its coarse/fine halves run the
same stage graphs, so their numbers agree to the bit as they do eager. Inference only (autograd off); the parameters
stay on the model (for counting, saving and training, which run eagerly). Whether it keeps the pictures is checked
on each model's weights by :func:`try_freezing`.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .base import Bijector
from .fastpath import ALL_PATHS, FastPath, distance, fidelity_latents, pictures_and_bpd
from .model import RealNVP


@dataclass(frozen=True)
class FrozenFlow:
    """The graphs a frozen model runs: ``encode(x) -> (*zs, logdet, per-layer log-dets [layers, B])``, the whole
    forward pass, and per stage (index as in :attr:`RealNVP.stages`) ``inverse[i](y) -> x``. Kept as a plain
    attribute of the model: not a submodule, not in the state dict."""

    encode: Callable[[Tensor], Any]
    inverse: list[Callable[[Tensor], Tensor]]


class _Encode(nn.Module):
    def __init__(self, model: RealNVP) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        zs, logdet, parts = self.model.encode_parts(x)
        return (*zs, logdet, torch.stack(parts))  # one output for the parts: each output costs a GIL hand-over


class _Inverse(nn.Module):
    def __init__(self, stage: Bijector) -> None:
        super().__init__()
        self.stage = stage

    def forward(self, y: Tensor) -> Tensor:
        return self.stage.inverse(y)


def unfreeze(model: RealNVP) -> RealNVP:
    """Back to the eager passes (in place)."""
    model.__dict__.pop("frozen", None)
    return model


def is_frozen(model: RealNVP) -> bool:
    return "frozen" in model.__dict__


def _inverse_inputs(model: RealNVP, zs: list[Tensor]) -> tuple[list[Tensor], Tensor]:
    """Each stage's input in the eager decode of ``zs``, and the decoded images."""
    inputs: list[Tensor] = [torch.empty(0)] * len(model.stages)

    def recorded(i: int, stage: Bijector) -> Callable[[Tensor], Tensor]:
        def f(y: Tensor) -> Tensor:
            inputs[i] = y.clone()
            return stage.inverse(y)

        return f

    model.__dict__["frozen"] = FrozenFlow(model.encode_parts, [recorded(i, s) for i, s in enumerate(model.stages)])
    try:
        with torch.no_grad():
            x = model.inverse(zs)
    finally:
        unfreeze(model)
    return inputs, x


def freeze(model: RealNVP, batch: int = 2) -> RealNVP:
    """Traces ``model``'s forward pass (eval mode, its fast path applied), and the inverse of each of its stages, at
    the inputs of a decode of ``batch`` samples and its encode, and freezes the graphs; the model then runs them
    whenever autograd is off (in place)."""
    unfreeze(model)
    zs = model.sample_latents(batch, 0.5, torch.Generator().manual_seed(0))
    inputs, x = _inverse_inputs(model, zs)

    def graph(module: nn.Module, x: Tensor) -> Any:
        return torch.jit.freeze(torch.jit.trace(module.eval(), x.clone(), check_trace=False))

    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")  # TorchScript's notices (tracer, maintenance mode)
        frozen = FrozenFlow(
            graph(_Encode(model), x), [graph(_Inverse(s), y) for s, y in zip(model.stages, inputs, strict=True)]
        )
    model.__dict__["frozen"] = frozen
    _warm(model)
    return model


def _warm(model: RealNVP) -> None:
    """Two passes at batch 1: TorchScript profiles a graph on its first call and optimises it on the second (each
    takes several times a pass), which should not fall on a reader's first clicks."""
    zs = model.sample_latents(1, 0.5, torch.Generator().manual_seed(0))
    with torch.inference_mode():
        for _ in range(2):
            model(model.inverse(zs))


def save_frozen(model: RealNVP, folder: Path) -> None:
    """Writes ``model``'s frozen graphs into ``folder`` as TorchScript archives (graphs and constants, no Python
    objects): for a cache this package writes and reads, never for files from elsewhere."""
    frozen: FrozenFlow = model.__dict__["frozen"]
    folder.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TorchScript's maintenance-mode notices
        torch.jit.save(frozen.encode, str(folder / "encode.pt"))
        for i, g in enumerate(frozen.inverse):
            torch.jit.save(g, str(folder / f"inverse{i}.pt"))


def load_frozen(model: RealNVP, folder: Path) -> None:
    """Runs ``model`` on the graphs :func:`save_frozen` wrote for it (raises when they are missing or unreadable)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        frozen = FrozenFlow(
            torch.jit.load(str(folder / "encode.pt")),
            [torch.jit.load(str(folder / f"inverse{i}.pt")) for i in range(len(model.stages))],
        )
    model.__dict__["frozen"] = frozen
    _warm(model)


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
