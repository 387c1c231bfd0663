"""What a run needs besides its recipe (:class:`~train.config.TrainConfig`): where data and outputs are, the
device, resuming, how often to write."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass
class RunOptions:
    """What is not part of the recipe: it never changes the model a run makes, only where and how it runs."""

    out: Path
    data_dir: Path | None = None
    device: str = "auto"
    resume: bool = False
    preset: str | None = None
    command: str = ""
    progress: bool = True
    checkpoint_minutes: float = 10.0
    eval_minutes: float = 0.0  # also evaluate (curve point, best checkpoint) every that many minutes; 0: epochs only
    stop_after: int = 0  # stop this invocation after that many steps, leaving a resume state
    # Under DDP the s,t ResNets' batch norm: "local" per process (running averages averaged before each
    # evaluation; measured equal to one big batch, bench/README.md) or "sync" (SyncBatchNorm, GPUs only).
    # The flow's own batch norm, which defines the density, is always synced exactly.
    resnet_bn: str = "local"
