"""Where a run stands, apart from its model and optimiser: what a resume needs to continue it exactly."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
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
        """The JSON-able part, under the keys the resume-state format has always used."""
        return {
            "step": self.step,
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "elapsed_s": self.elapsed_s,
            "best_bpd": self.best_bpd,
            "train_config": self.train_config,
            "world_size": self.world_size,
            "noise_device": self.noise_device,
            "fast_path": self.fast_path,
            "compiled": self.compiled,
        }

    @classmethod
    def from_counters(
        cls, counters: dict[str, Any], rng: dict[str, torch.Tensor], ema: dict[str, torch.Tensor] | None = None
    ) -> RunState:
        """The inverse of :meth:`counters`. A state without the identity fields was written by an older trainer,
        which ran a single CPU process."""
        return cls(
            step=int(counters["step"]),
            epoch=int(counters["epoch"]),
            batch_in_epoch=int(counters["batch_in_epoch"]),
            elapsed_s=float(counters["elapsed_s"]),
            best_bpd=float(counters["best_bpd"]),
            rng=rng,
            train_config=counters.get("train_config", {}),
            world_size=int(counters.get("world_size", 1)),
            noise_device=counters.get("noise_device", "cpu"),
            fast_path=counters.get("fast_path"),
            compiled=bool(counters.get("compiled", False)),
            ema=ema or {},
        )
