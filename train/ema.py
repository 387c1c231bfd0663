"""An exponential moving average of the weights, for evaluation and export (``--ema DECAY``; off by default).

Glow and Flow++ evaluate with averaged weights (Polyak averaging): late in training the optimiser's iterates
jitter around a minimum and their average sits closer to it. After every optimiser step

    shadow <- d_t * shadow + (1 - d_t) * weights,   d_t = min(decay, (1 + t) / (10 + t)),

where t counts the updates, so that early shadows are not dominated by the random initial weights. Only
parameters are averaged; the batch-norm running averages (which belong to the weights they were measured with)
are recalibrated for the averaged weights before each evaluation (see ``train.evaluate.recalibrate_batchnorm``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch.optim.swa_utils import AveragedModel

from nvp_core import RealNVP

from .evaluate import recalibrate_batchnorm, recalibration_batches


class WeightAverage:
    """The averaged copy of ``model`` (``torch.optim.swa_utils.AveragedModel``; float32, on the model's
    device), optionally continuing a saved average (:meth:`state_dict`)."""

    def __init__(self, model: torch.nn.Module, decay: float, state: dict[str, torch.Tensor] | None = None) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"--ema must be in (0, 1), got {decay}")
        self.decay = decay
        self.updates = 0  # on the host: the warm-up's t, read without a device sync
        # get_ema_multi_avg_fn has a fixed decay: with 0.999 the first weights would weigh for thousands of steps.
        self.averaged = AveragedModel(model, multi_avg_fn=self._lerp)
        self.averaged.n_averaged.fill_(1)  # the initial weights are the first average: no copy at the first update
        self.module: torch.nn.Module = self.averaged.module
        if state:
            self.load_state_dict(state)

    def current_decay(self) -> float:
        return min(self.decay, (1.0 + self.updates) / (10.0 + self.updates))

    def _lerp(self, averaged: Sequence[torch.Tensor], current: Sequence[torch.Tensor], _n: torch.Tensor | int) -> None:
        torch._foreach_lerp_(list(averaged), list(current), 1.0 - self.current_decay())

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        """One averaging step after an optimiser step (one fused kernel over all parameters)."""
        self.averaged.update_parameters(model)
        self.updates += 1

    @property
    def shadow(self) -> list[torch.Tensor]:
        return [p.detach() for p in self.module.parameters()]

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Flat tensors (safetensors-ready): ``ema.<parameter name>`` and ``ema.__updates__``."""
        out = {f"ema.{n}": p.detach().clone() for n, p in self.module.named_parameters()}
        out["ema.__updates__"] = torch.tensor([self.updates], dtype=torch.int64)
        return out

    @torch.no_grad()
    def load_state_dict(self, tensors: dict[str, torch.Tensor]) -> None:
        """The inverse of :meth:`state_dict`; a mismatch in names or shapes is a ``ValueError``."""
        named = dict(self.module.named_parameters())
        missing = [n for n in named if f"ema.{n}" not in tensors]
        if missing or "ema.__updates__" not in tensors:
            raise ValueError(f"the saved weight average lacks {missing[:3] or ['its update count']}")
        for n, p in named.items():
            t = tensors[f"ema.{n}"]
            if t.shape != p.shape:
                raise ValueError(f"the saved weight average of {n} has shape {tuple(t.shape)}, not {tuple(p.shape)}")
            p.copy_(t)
        self.updates = int(tensors["ema.__updates__"].item())


#: Batches of 256 training images over which the batch-norm averages are recomputed for the averaged weights
#: at each curve point (the live averages were measured with other weights).
EVAL_RECALIBRATION_BATCHES = 10


@contextmanager
def evaluation_weights(
    model: RealNVP, ema: WeightAverage | None, train_images: torch.Tensor, seed: int
) -> Iterator[RealNVP]:
    """The weights a curve point evaluates and the best checkpoint keeps: the model's own, or with ``--ema``
    the averaged copy with batch-norm averages recomputed for it (the live model is not touched)."""
    if ema is None:
        yield model
        return
    averaged = ema.module
    assert isinstance(averaged, RealNVP)
    device = next(averaged.parameters()).device
    batches = recalibration_batches(train_images, EVAL_RECALIBRATION_BATCHES, 256, seed)
    recalibrate_batchnorm(averaged, (x.to(device) for x in batches))
    yield averaged
