"""Where a run stands, apart from its model and optimiser: what a resume needs to continue it exactly."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any

import torch


@dataclass
class RunState:
    """The counters and generator states of a run, saved and loaded as a whole by :mod:`train.state`.

    ``batch_in_epoch`` counts the batches of ``epoch`` already drawn. It equals the number of batches per epoch
    when a run stopped after an epoch's last step but before that epoch's evaluation: the resumed run does
    that evaluation first (the step alone cannot say so, and a skipped non-finite step draws a batch without
    counting as a step)."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    elapsed_s: float = 0.0  # training time of the earlier invocations, up to this state
    best_bpd: float = math.inf  # the best held-out (validation, else test) bits/dim so far: best.safetensors
    # Named generator states (uint8 tensors): "torch" (the global generator) and "noise<rank>" for each
    # process's dequantisation noise, so that any rank can resume its own stream.
    rng: dict[str, torch.Tensor] = field(default_factory=dict)
    # What the run was trained with; a resume must match it (see train.loop.check_resumable).
    train_config: dict[str, Any] = field(default_factory=dict)
    world_size: int = 1
    noise_device: str = "cpu"
    fast_path: str | None = None
    compiled: bool = False  # the s,t ResNets ran compiled when this state was saved (train.compiling)
    # The weight average (train.ema.WeightAverage.state_dict(): "ema.<name>" tensors); empty without --ema.
    ema: dict[str, torch.Tensor] = field(default_factory=dict)

    def counters(self) -> dict[str, Any]:
        """The JSON-able part: every field but the tensors, under its own name."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in _TENSORS}

    @classmethod
    def from_counters(
        cls, counters: dict[str, Any], rng: dict[str, torch.Tensor], ema: dict[str, torch.Tensor] | None = None
    ) -> RunState:
        """The inverse of :meth:`counters`. A field an older trainer did not write takes its default (those
        trainers ran a single CPU process); the position in the run must be there."""
        missing = sorted({"step", "epoch", "batch_in_epoch", "elapsed_s", "best_bpd"} - set(counters))
        if missing:
            raise ValueError(f"resume state without {missing}")
        known = {f.name: f for f in fields(cls) if f.name not in _TENSORS}
        values = {k: _as(known[k].type, v) for k, v in counters.items() if k in known}
        return cls(**values, rng=rng, ema=ema or {})


_TENSORS = ("rng", "ema")


def _as(kind: Any, value: Any) -> Any:
    """A JSON value as its field's type (JSON has no int/float distinction and no infinity of its own)."""
    return {"int": int, "float": float, "bool": bool}.get(str(kind), lambda v: v)(value)
