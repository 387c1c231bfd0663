"""What a run writes to its folder and reads back: the model checkpoints (``last``, ``best``), the resume
state beside them, and the checks that a resumed job is the run that wrote it."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from typing import Any

import torch

from nvp_core import RealNVP, load_model, save_model
from nvp_core.checkpoint import CheckpointError

from .config import TrainConfig, upgrade
from .data import Splits
from .distributed import DistInfo
from .options import RunOptions
from .run_state import RunState
from .state import StateError, load_run_state, save_run_state


def checkpoint_metadata(cfg: TrainConfig, opts: RunOptions, splits: Splits, extra: dict[str, Any]) -> dict[str, Any]:
    return {
        "dataset": splits.name,
        "image_size": splits.image_size,
        "channels": splits.channels,
        "class_names": splits.class_names,
        "preset": opts.preset,
        "command": opts.command,
        "train_config": cfg.to_dict(),
        **extra,
    }


def save_checkpoint(
    out: Path,
    model: RealNVP,
    optimizer: torch.optim.Optimizer,
    run: RunState,
    meta: dict[str, Any],
    half: bool,
    elapsed: Callable[[], float],
) -> None:
    """Writes ``last.safetensors`` and the resume state (the best checkpoint is written where the test
    bits/dim is measured, see ``train.curve_point.evaluate_and_save``). The main process's job; ``run.rng`` must hold
    every rank's states."""
    save_model(model, out / "last.safetensors", meta, half=half)
    run.elapsed_s = elapsed()  # read after the model files, as the state is the last thing written
    save_run_state(out, model, optimizer, run)


def warm_start(model: RealNVP, path: str) -> None:
    """Loads the weights and batch-norm averages of the saved model at ``path`` (``--init-from``) into
    ``model``, which must have the same configuration. ValueError says why not."""
    try:
        source, _ = load_model(Path(path).expanduser(), map_location="cpu")
    except CheckpointError as e:
        raise ValueError(f"--init-from: {e}") from None
    if source.config != model.config:
        mine, theirs = model.config.to_dict(), source.config.to_dict()
        diff = ", ".join(f"{k} {theirs.get(k)} (this run: {mine.get(k)})" for k in mine if mine[k] != theirs.get(k))
        raise ValueError(f"--init-from {path}: another model: {diff}; give the model flags it was trained with")
    model.load_state_dict(source.state_dict())


# Budgets may change on --resume (to extend a run), and so may --ema: switched on at a resume, the average
# starts from the resumed weights (what a warm restart late in a run wants averaged); and --compile (the same
# function, the state says whether the run compiled). Everything else must match the saved run.
_RESUMABLE_CHANGES = {"epochs", "max_steps", "max_minutes", "eval_limit", "log_every", "ema", "compile"}


def same_recipe(saved: dict[str, Any], now: dict[str, Any]) -> bool:
    """Whether a saved run's settings match the current ones (budgets aside). A setting that did not exist
    when the run was saved counts as its default, so runs saved by an older trainer stay resumable."""
    defaults = {f.name: f.default for f in fields(TrainConfig)}
    saved = upgrade(saved)
    keys = (set(saved) | set(now)) - _RESUMABLE_CHANGES
    return all(saved.get(k, defaults.get(k)) == now.get(k, defaults.get(k)) for k in keys)


def read_resume_state(
    out: Path, cfg: TrainConfig, di: DistInfo, noise_device: torch.device
) -> tuple[dict[str, torch.Tensor], dict[str, Any], RunState]:
    """The resume state in ``out`` (model and optimizer state_dicts, run state), after checking that this job
    can continue it exactly; ValueError says why not. A run folder kept without its best checkpoint gets
    ``best_bpd`` = inf, so that the next evaluation makes one."""
    try:
        model_sd, optim_sd, run = load_run_state(out)
    except StateError as e:
        raise ValueError(str(e)) from None
    if not same_recipe(run.train_config, cfg.to_dict()):
        raise ValueError(
            f"--resume: the settings differ from the run in {out}; resume with the same flags "
            f"(saved: {run.train_config or None})"
        )
    if run.world_size != di.world:
        how = "without torchrun" if run.world_size == 1 else f"with torchrun --nproc_per_node={run.world_size}"
        raise ValueError(
            f"--resume: the run in {out} was trained by {run.world_size} process(es), this job has "
            f"{di.world}; the data order and noise streams depend on it. Resume it {how}, or start a new run"
        )
    if f"noise{di.rank}" not in run.rng:
        raise ValueError(f"--resume: the state in {out} has no noise stream for process {di.rank}")
    if run.noise_device != noise_device.type:
        raise ValueError(
            f"--resume: the run in {out} drew its noise on {run.noise_device}; "
            f"resume it with --device {run.noise_device}"
        )
    if not (out / "best.safetensors").is_file():
        run.best_bpd = math.inf
    return model_sd, optim_sd, run
