"""An exponential moving average of the weights, for evaluation and export (``--ema DECAY``; off by default).

Glow and Flow++ evaluate with averaged weights (Polyak averaging): late in training the optimiser's iterates
jitter around a minimum and their average sits closer to it. After every optimiser step

    shadow <- d_t * shadow + (1 - d_t) * weights,   d_t = min(decay, (1 + t) / (10 + t)),

where t counts the updates, so that early shadows are not dominated by the random initial weights. Only
parameters are averaged; buffers (the batch-norm running averages, which belong to the weights they were
measured with) are taken from the live model and recalibrated for the averaged weights before each
evaluation (see ``train.evaluate.recalibrate_batchnorm``).

Not ``torch.optim.swa_utils.AveragedModel``: its update waits for the GPU at every step and
loops over the tensors in Python; its ``get_ema_multi_avg_fn`` has no warm-up.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from nvp_core import RealNVP

from .evaluate import recalibrate_batchnorm, recalibration_batches


class WeightAverage:
    """The shadow copy of ``model``'s parameters (float32, on the parameters' device), optionally continuing
    a saved average (:meth:`state_dict`)."""

    def __init__(self, model: torch.nn.Module, decay: float, state: dict[str, torch.Tensor] | None = None) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"--ema must be in (0, 1), got {decay}")
        self.decay = decay
        self.updates = 0
        self.names = [n for n, _ in model.named_parameters()]
        self.shadow = [p.detach().clone() for p in model.parameters()]
        if state:
            self.load_state_dict(state)

    def current_decay(self) -> float:
        return min(self.decay, (1.0 + self.updates) / (10.0 + self.updates))

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        """One averaging step after an optimiser step (one fused kernel over all tensors)."""
        params = [p.detach() for p in model.parameters()]
        torch._foreach_lerp_(self.shadow, params, 1.0 - self.current_decay())
        self.updates += 1

    @contextmanager
    def swapped_in(self, model: torch.nn.Module) -> Iterator[torch.nn.Module]:
        """``model`` with the averaged weights inside the block and its own weights back after it, even when
        the block raises. The values are copied in place (not swapped by ``.data``), so that the optimiser's
        and DDP's references stay valid and every cache keyed on a tensor's version (the weight-norm cache)
        sees the change."""
        params: list[torch.Tensor] = list(model.parameters())
        with torch.no_grad():
            live = [p.detach().clone() for p in params]
            torch._foreach_copy_(params, self.shadow)
        try:
            yield model
        finally:
            with torch.no_grad():
                torch._foreach_copy_(params, live)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Flat tensors (safetensors-ready): ``ema.<parameter name>`` and ``ema.__updates__``."""
        out = {f"ema.{n}": s.detach().clone() for n, s in zip(self.names, self.shadow, strict=True)}
        out["ema.__updates__"] = torch.tensor([self.updates], dtype=torch.int64)
        return out

    def load_state_dict(self, tensors: dict[str, torch.Tensor]) -> None:
        """The inverse of :meth:`state_dict`; a mismatch in names or shapes is a ``ValueError``."""
        missing = [n for n in self.names if f"ema.{n}" not in tensors]
        if missing or "ema.__updates__" not in tensors:
            raise ValueError(f"the saved weight average lacks {missing[:3] or ['its update count']}")
        for n, s in zip(self.names, self.shadow, strict=True):
            t = tensors[f"ema.{n}"]
            if t.shape != s.shape:
                raise ValueError(f"the saved weight average of {n} has shape {tuple(t.shape)}, not {tuple(s.shape)}")
            s.copy_(t)
        self.updates = int(tensors["ema.__updates__"].item())


#: Batches of 256 training images over which the batch-norm averages are recomputed for the averaged weights
#: at each curve point (the live averages were measured with other weights).
EVAL_RECALIBRATION_BATCHES = 10


@contextmanager
def evaluation_weights(
    model: RealNVP, ema: WeightAverage | None, train_images: torch.Tensor, seed: int
) -> Iterator[RealNVP]:
    """The weights a curve point evaluates and the best checkpoint keeps: the model's own, or with ``--ema``
    the average with batch-norm averages recomputed for it. Inside the block ``model`` holds them; after it,
    its own weights and batch-norm averages are back exactly (the run continues bit-identically)."""
    if ema is None:
        yield model
        return
    device = next(model.parameters()).device
    with torch.no_grad():
        live_buffers = [b.detach().clone() for b in model.buffers()]
    with ema.swapped_in(model):
        try:
            batches = recalibration_batches(train_images, EVAL_RECALIBRATION_BATCHES, 256, seed)
            recalibrate_batchnorm(model, (x.to(device) for x in batches))
            yield model
        finally:
            with torch.no_grad():
                torch._foreach_copy_(list(model.buffers()), live_buffers)
