"""A point of the learning curve (held-out bits/dim, a sample grid, a metrics record, the best checkpoint) and
the resume state written with it."""

from __future__ import annotations

from typing import Any

import torch

from nvp_core import RealNVP, save_model

from .checkpointing import checkpoint_metadata, save_checkpoint
from .compiling import eager
from .ema import evaluation_weights
from .evaluate import eval_bits_per_dim, sample_grid, save_png
from .job import Job, RunClock
from .metrics import hardware_description
from .progress import LossWindow
from .ranks import average_buffers, gather_rng_states
from .run_state import RunState


def save_for_resume(
    job: Job,
    model: RealNVP,
    optimizer: torch.optim.Optimizer,
    run: RunState,
    clock: RunClock,
    extra: dict[str, Any] | None = None,
) -> None:
    """Gathers every rank's RNG states (a collective: every rank calls this) and, on the main process, writes
    ``last.safetensors`` and the resume state. ``extra``: checkpoint metadata beyond the epoch and step."""
    run.rng = gather_rng_states(job.di, job.noise_gen)
    if not job.di.is_main:
        return
    run.ema = job.ema.state_dict() if job.ema is not None else {}
    extra = extra or {"epoch": job.epochs(run.step), "step": run.step}
    meta = checkpoint_metadata(job.cfg, job.opts, job.splits, extra)
    save_checkpoint(job.opts.out, model, optimizer, run, meta, job.cfg.half_checkpoint, clock)


def evaluate_and_save(
    job: Job,
    model: RealNVP,
    optimizer: torch.optim.Optimizer,
    run: RunState,
    window: LossWindow,
    clock: RunClock,
    final: bool = False,
) -> float:
    """A curve point: the held-out bits/dim (validation, or test without a validation split) and a sample grid
    of the evaluated weights (the model's, or their average with --ema), ``best.safetensors`` from them when
    that bits/dim is the lowest yet, a metrics record, then ``last`` and the resume state. Every rank calls
    it; returns the held-out bits/dim."""
    cfg, di, out = job.cfg, job.di, job.opts.out
    train_bpd, images_per_s = window.train_bpd(), window.images_per_s()
    if di.enabled:
        average_buffers(model, di.world)
    wall_time = clock()
    extra: dict[str, Any] = {"epoch": job.epochs(run.step), "step": run.step, "train_time_s": wall_time}
    extra["hardware"] = hardware_description(job.device, di.world)
    extra["validation_images"] = len(job.eval_images) if job.held_out == "validation" else 0
    key = f"{job.held_out}_bpd"
    # Eagerly: float32, eval-mode, no-grad calls would compile the training step's nets once more each.
    with eager(), evaluation_weights(model, job.ema, job.splits.train, cfg.seed) as evaluated:
        test_bpd = eval_bits_per_dim(evaluated, job.eval_images, di.rank, di.world)  # noise drawn on the CPU
        extra[key] = test_bpd
        if di.is_main:
            grid = sample_grid(evaluated, cfg.sample_temperatures, cfg.samples_per_temperature, cfg.seed)
            save_png(grid, out / "samples" / f"step_{run.step:07d}.png")
            save_png(grid, out / "samples" / "latest.png")
        if test_bpd < run.best_bpd:
            run.best_bpd = test_bpd
            if di.is_main:
                meta = checkpoint_metadata(cfg, job.opts, job.splits, {**extra, "ema": cfg.ema or None})
                save_model(evaluated, out / "best.safetensors", meta, half=cfg.half_checkpoint)
    record: dict[str, Any] = {
        "step": run.step,
        "epoch": extra["epoch"],
        "train_bpd": train_bpd,
        key: test_bpd,
        "lr": optimizer.param_groups[0]["lr"],
        "images_per_s": images_per_s,
        "wall_time": wall_time,
    }
    if final:
        record["final"] = True
    job.metrics.write(record)
    save_for_resume(job, model, optimizer, run, clock, extra)
    return test_bpd
