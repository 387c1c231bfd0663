"""What one invocation of the trainer works with: the fixed job (recipe, options, processes, data), the run's
clock, the checks of its settings, and the start of its run folder."""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from nvp_core import RealNVP
from nvp_core.fastpath import FastPath
from nvp_core.fileio import remove_stale_temps

from .config import TrainConfig
from .data import Splits, load_dataset
from .distributed import DistInfo, backend_for, local_main_first
from .ema import WeightAverage
from .metrics import MetricsWriter
from .options import RunOptions


@dataclass(frozen=True)
class Job:
    """What stays fixed during one invocation: the recipe, the options, the processes and the data."""

    cfg: TrainConfig
    opts: RunOptions
    di: DistInfo
    device: torch.device
    splits: Splits
    eval_images: torch.Tensor  # what curve points score and checkpoints are chosen on (see held_out)
    held_out: str  # "validation" (images held out of the training split) or "test" (no validation split)
    noise_gen: torch.Generator  # this process's dequantisation noise (its state changes, the object does not)
    metrics: MetricsWriter
    ema: WeightAverage | None  # --ema: the average of the weights that curve points evaluate

    def epochs(self, step: int) -> float:
        """Epochs of training data seen after ``step`` steps (the x axis of the curve)."""
        return round(step * self.cfg.batch_size / len(self.splits.train), 4)


class RunClock:
    """Training time of the run: the earlier invocations' (from the resume state) plus this one's."""

    def __init__(self, before: float) -> None:
        self.before, self.start = before, time.time()

    def __call__(self) -> float:
        return self.before + time.time() - self.start


def check_options(cfg: TrainConfig, opts: RunOptions, di: DistInfo, device: torch.device) -> None:
    """Settings that cannot work together, as a message before any work."""
    if cfg.batch_size % di.world:
        raise ValueError(f"--batch-size {cfg.batch_size} must be divisible by the number of processes {di.world}")
    if opts.resnet_bn not in ("local", "sync"):
        raise ValueError(f"--resnet-bn must be local or sync, got {opts.resnet_bn!r}")
    if opts.resnet_bn == "sync" and di.enabled and device.type != "cuda":
        raise ValueError("--resnet-bn sync needs GPUs (SyncBatchNorm); on CPU use --resnet-bn local")


def set_backends(cfg: TrainConfig, device: torch.device) -> None:
    """The GPU's convolution and matmul settings for this recipe (nothing to set on a CPU)."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick its fastest convolutions
        if cfg.precision == "fp32":  # float32 means float32, not TF32 (evaluation turns TF32 off as well)
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False


def load_splits(cfg: TrainConfig, opts: RunOptions, di: DistInfo) -> tuple[Splits, torch.Tensor, str]:
    """The dataset, the images curve points score, and what they are ("validation", else "test")."""

    def load() -> Splits:
        return load_dataset(
            cfg.dataset,
            opts.data_dir,
            cfg.image_size,
            cfg.in_channels,
            cfg.flip,
            cfg.test_fraction,
            cfg.validation_images,
        )

    # torchvision datasets download on first use: one process per machine downloads, the others wait.
    downloads = cfg.dataset in ("mnist", "fashion-mnist", "cifar10", "celeba")
    splits = local_main_first(di, load) if downloads else load()
    if len(splits.train) < cfg.batch_size:
        raise ValueError(f"only {len(splits.train)} training images, fewer than --batch-size {cfg.batch_size}")
    held_out = "validation" if len(splits.validation) else "test"
    eval_images = splits.validation if held_out == "validation" else splits.test
    return splits, eval_images[: cfg.eval_limit] if cfg.eval_limit else eval_images, held_out


def start_folder(job: Job, model: RealNVP, fast: FastPath) -> None:
    """Creates the run folder, clears an interrupted write's litter and logs what this invocation runs."""
    out, splits, di = job.opts.out, job.splits, job.di
    out.mkdir(parents=True, exist_ok=True)
    # This run owns its folder: half-written files of a killed earlier invocation are litter, never state.
    stale = remove_stale_temps(out)
    job.metrics.note(
        f"{'resumed' if job.opts.resume else 'started'}: {splits.name}, {len(splits.train)} train / "
        f"{len(job.eval_images)} {job.held_out} images {list(splits.train.shape[1:])}"
        + ("" if job.held_out == "validation" else " (no validation split: checkpoints are chosen on the test set)")
        + ", "
        f"{sum(p.numel() for p in model.parameters())} parameters, {di.world} process(es) on {job.device}"
        + (f" ({backend_for(job.device.type)}, s,t ResNet batch norm {job.opts.resnet_bn})" if di.enabled else "")
        + ", "
        f"compute {fast.dtype or torch.float32}, fast path {fast.name}"
        + (f", {splits.skipped} unreadable files skipped" if splits.skipped else "")
        + (f", {len(stale)} temporary files of an interrupted write removed" if stale else "")
    )
