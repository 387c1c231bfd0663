"""The training loop, readable top to bottom like nanoGPT's ``train.py``: data, model, optimiser, the resume
state, then one flat loop of steps (the epoch and the batch in it are counters of the :class:`RunState`) with
a curve point (evaluation, sample grid, metrics, checkpoints) at each epoch end and every --eval-minutes."""

from __future__ import annotations

import math
import os
from dataclasses import replace
from functools import partial
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DistributedSampler
from tqdm import tqdm

from nvp_core import RealNVP, dequantize
from nvp_core.base import standard_normal_logprob
from nvp_core.fastpath import ENV_OVERRIDE, FastPath
from nvp_core.fastpath_choice import configure

from .checkpointing import read_resume_state, warm_start
from .compiling import Compiler
from .config import TrainConfig
from .curve_point import evaluate_and_save, save_for_resume
from .data import Splits
from .distributed import DistInfo, init_distributed, resolve_device, shutdown
from .ema import WeightAverage
from .finish import finish
from .job import Job, RunClock, check_options, load_splits, set_backends, start_folder
from .metrics import MetricsWriter
from .options import RunOptions
from .progress import LossWindow
from .ranks import agreed_fast_path, no_buffer_sync, synced_elapsed
from .run_state import RunState
from .schedule import budget_progress, learning_rate
from .step_checks import MAX_BAD_STEPS, BufferGuard, StepTally, TrainingError

__all__ = [  # what other modules and the tests import from here
    "MAX_BAD_STEPS",
    "BufferGuard",
    "StepTally",
    "TrainingError",
    "build_optimizer",
    "loss_bits_per_dim",
    "resolve_precision",
    "step_on_device",
    "train",
    "train_batch",
]


def resolve_precision(
    precision: str, device: torch.device, model: RealNVP | None = None, batch: int = 64
) -> torch.dtype | None:
    """The s,t ResNets' compute dtype for training (``None``: float32), decided by
    :func:`nvp_core.fastpath_choice.choose`: ``fp32``/``bf16`` restrict the dtype, ``auto`` lets the measurement on
    this machine and this model's shapes decide (cached per machine; ``$NVP_FASTPATH`` overrides it). With
    ``model``, the whole choice (dtype and memory layout) is applied to it."""
    if model is None:  # nothing to measure on: the caller's dtype, or float32
        return torch.bfloat16 if precision == "bf16" else None
    choice = configure(model, device, mode="train", batch=batch, precision=precision)
    return choice.path.dtype


def build_optimizer(model: RealNVP, cfg: TrainConfig, fused: bool = True) -> torch.optim.Adam:
    """Adam with the paper's L2 applied, as coupled weight decay in its own parameter group (the same as a
    loss term ``l2/2 * ||p||^2``), to the weight-norm scales and the coupling scale factors only.

    ``fused`` (the default): one kernel per step for all parameters, which also skips a step on a device flag
    (``optimizer.found_inf``) without a host sync; faster than torch's per-parameter loop on the CPU too
    (bench/README.md). ``False``: that loop (same update up to rounding)."""
    reg = {id(p) for p in model.regularized_parameters()}
    decayed = [p for p in model.parameters() if id(p) in reg]
    plain = [p for p in model.parameters() if id(p) not in reg]
    groups = [{"params": decayed, "weight_decay": cfg.l2}, {"params": plain, "weight_decay": 0.0}]
    return torch.optim.Adam(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), fused=True if fused else None)


def train_batch(
    splits: Splits, idx: torch.Tensor, gen: torch.Generator, images: torch.Tensor | None = None
) -> torch.Tensor:
    """Dequantised (and, where the dataset uses them, randomly flipped) training images, float32, on the
    device of ``images`` (default ``splits.train``); ``idx`` and ``gen`` live on that device too."""
    x = (splits.train if images is None else images)[idx]
    if splits.flip:
        flip = torch.rand(len(idx), generator=gen, device=gen.device).to(x.device) < 0.5
        x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
    return dequantize(x, gen)


def loss_bits_per_dim(net: torch.nn.Module, model: RealNVP, x: torch.Tensor) -> torch.Tensor:
    """Mean negative log-likelihood in bits/dim (without the +8 of the 8-bit bins). ``net`` is the model
    or its DDP wrapper: its ``forward`` must be the call so that DDP synchronises gradients."""
    zs, logdet = net(x)
    log_prob = sum(standard_normal_logprob(z) for z in zs) + logdet
    return -(log_prob.mean()) / (model.dim * math.log(2.0))


def step_on_device(
    net: torch.nn.Module,
    model: RealNVP,
    x: torch.Tensor,
    optimizer: torch.optim.Adam,
    guard: BufferGuard,
    params: list[torch.nn.Parameter],
    grad_clip: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One training step that never waits for the device: a non-finite loss or gradient norm skips it on the
    device (the fused Adam step reads ``found_inf``; the batch-norm averages are selected back). ``optimizer``
    must be fused (:func:`build_optimizer` with ``fused=True``). Returns the loss and the "step taken" flag."""
    guard.save()
    loss = loss_bits_per_dim(net, model, x)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(params, grad_clip)
    ok = torch.isfinite(loss) & torch.isfinite(grad_norm)
    optimizer.found_inf = (~ok).float()  # type: ignore[attr-defined]
    optimizer.step()
    guard.keep_if(ok)
    return loss, ok


def train(cfg: TrainConfig, opts: RunOptions) -> dict[str, Any]:
    """Runs (or resumes) training; returns the final metrics. Raises ValueError for bad settings or data
    (shown to the user as they are) and :class:`TrainingError` when training diverges."""
    # --- processes, device, data --------------------------------------------------------------
    resolve_device(opts.device, DistInfo())  # a bad --device is a message before any process group exists
    want_cuda = opts.device == "cuda" or (opts.device == "auto" and torch.cuda.is_available())
    dist_info = init_distributed("cuda" if want_cuda else "cpu")
    ok = False
    try:
        result = _train(cfg, opts, dist_info)
        ok = True
        return result
    finally:
        shutdown(dist_info, ok)  # after an error: no barrier, the other ranks may be in another collective


def _train(cfg: TrainConfig, opts: RunOptions, di: DistInfo) -> dict[str, Any]:
    device = resolve_device(opts.device, di)
    check_options(cfg, opts, di, device)
    set_backends(cfg, device)
    torch.manual_seed(cfg.seed)

    # --- data: this process's share of each epoch, the budgets, the noise --------------------------------
    splits, eval_images, held_out = load_splits(cfg, opts, di)
    local_batch = cfg.batch_size // di.world
    sampler = _sampler(len(splits.train), cfg.seed, di)
    steps_per_epoch = len(sampler) // local_batch
    total_steps, max_seconds = _budgets(cfg, steps_per_epoch)
    # On a GPU the uint8 training set lives on the device and the noise is drawn there: a batch is gathered,
    # flipped and dequantised without the host.
    noise_device = device if device.type == "cuda" else torch.device("cpu")
    train_images = splits.train.to(noise_device)
    noise_gen = torch.Generator(device=noise_device).manual_seed(cfg.seed * 1000 + di.rank)

    # --- model, optimiser, and where the run stands (a new run, or the resume state) --------------------
    model = RealNVP(cfg.flow_config(splits.channels, splits.image_size)).to(device)
    fast = agreed_fast_path(model, device, di, local_batch, cfg.precision)  # measured once, applied
    if cfg.init_from and not opts.resume:  # a resumed run's weights come from its state
        warm_start(model, cfg.init_from)
    optimizer = build_optimizer(model, cfg)
    net = _distributed(model, opts, di, device)
    run, fast = _resume(model, optimizer, noise_gen, fast, cfg, opts, di) if opts.resume else (RunState(), fast)
    if (total_steps and run.step >= total_steps) or (max_seconds and run.elapsed_s >= max_seconds):
        return {"step": run.step, "best_bpd": run.best_bpd, "nothing_to_do": True}
    # The states this job writes say what it is (budgets may have changed on --resume).
    run = replace(
        run, train_config=cfg.to_dict(), world_size=di.world, noise_device=noise_device.type, fast_path=fast.name
    )
    ema = WeightAverage(model, cfg.ema, run.ema) if cfg.ema else None
    metrics = MetricsWriter(opts.out, enabled=di.is_main)
    job = Job(cfg, opts, di, device, splits, eval_images, held_out, noise_gen, metrics, ema)
    if di.is_main:
        start_folder(job, model, fast)
    compiler = Compiler(cfg.compile, model, device, metrics)
    compiler.start()
    run.compiled = compiler.compiled

    # --- the loop: one batch per pass, a curve point at each epoch end -----------------------------------
    clock, window = RunClock(run.elapsed_s), LossWindow(read_step=run.step)
    bar = tqdm(total=total_steps or None, initial=run.step, disable=not (opts.progress and di.is_main), unit="step")
    last_state_save = last_eval = clock()
    stop_at = run.step + opts.stop_after if opts.stop_after else 0
    guard, tally, params = BufferGuard(model), StepTally(device), list(model.parameters())
    order = _epoch_order(sampler, run.epoch, train_images.device)
    model.train()
    while True:
        if run.batch_in_epoch == steps_per_epoch:  # an epoch ended: its curve point, then the next epoch
            run.epoch, run.batch_in_epoch = run.epoch + 1, 0
            window.read_tally(tally, metrics, run.step)
            evaluate_and_save(job, model, optimizer, run, window, clock)
            window.restart()
            last_eval = clock()  # --eval-minutes counts from the latest curve point, whatever made it
            order = _epoch_order(sampler, run.epoch, train_images.device)
        now = synced_elapsed(di, clock())  # every rank takes time decisions on rank 0's clock
        progress = budget_progress(run.step, now, total_steps, max_seconds)
        lr = learning_rate(cfg.lr, run.step, cfg.warmup_steps, progress, cfg.schedule, cfg.min_lr_ratio)
        for group in optimizer.param_groups:
            group["lr"] = lr
        b = run.batch_in_epoch
        x = train_batch(splits, order[b * local_batch : (b + 1) * local_batch], noise_gen, train_images).to(device)
        # No host sync: a non-finite step is skipped on the device and still counts as a step (and a batch).
        tally.add(*compiler.step(partial(step_on_device, net, model, x, optimizer, guard, params, cfg.grad_clip)))
        run.step, run.batch_in_epoch = run.step + 1, run.batch_in_epoch + 1
        if ema is not None:  # a skipped step left the weights as they were: averaging them again is harmless
            ema.update(model)
        window.images += cfg.batch_size
        if run.step % cfg.log_every == 0 or run.batch_in_epoch == steps_per_epoch:
            window.read_tally(tally, metrics, run.step)  # the one host sync: logs skips, stops a diverging run
            bar.set_postfix(bpd=f"{window.last_bpd():.3f}", img_s=f"{window.images_per_s():.1f}", lr=f"{lr:.2e}")
        bar.update(1)

        if (total_steps and run.step >= total_steps) or (max_seconds and now >= max_seconds):
            break
        if stop_at and run.step >= stop_at:
            window.read_tally(tally, metrics, run.step)
            save_for_resume(job, model, optimizer, run, clock)
            metrics.note(f"stopped after step {run.step} (--stop-after); continue with --resume")
            bar.close()
            return {"step": run.step, "best_bpd": run.best_bpd, "stopped": True}
        if opts.eval_minutes and now - last_eval >= 60 * opts.eval_minutes and run.batch_in_epoch < steps_per_epoch:
            # A curve point between epoch ends (long epochs on a CPU); it saves a resume point too.
            window.read_tally(tally, metrics, run.step)
            evaluate_and_save(job, model, optimizer, run, window, clock)
            window.restart()
            last_eval = last_state_save = now
        elif opts.checkpoint_minutes and now - last_state_save > 60 * opts.checkpoint_minutes:
            save_for_resume(job, model, optimizer, run, clock)  # a mid-epoch resume point for long runs
            last_state_save = now

    # --- the budget is spent: the final curve point, then the checks and the batch-norm recalibration ------
    window.read_tally(tally, metrics, run.step)
    evaluate_and_save(job, model, optimizer, run, window, clock, final=True)
    bar.close()
    return finish(job, model, run)


def _resume(
    model: RealNVP,
    optimizer: torch.optim.Optimizer,
    noise_gen: torch.Generator,
    fast: FastPath,
    cfg: TrainConfig,
    opts: RunOptions,
    di: DistInfo,
) -> tuple[RunState, FastPath]:
    """Loads the resume state in ``opts.out`` into the model, the optimiser and the generators; returns it
    and the fast path the continuation runs on."""
    model_sd, optim_sd, run = read_resume_state(opts.out, cfg, di, noise_gen.device)
    if run.fast_path and run.fast_path != fast.name and not os.environ.get(ENV_OVERRIDE):
        # A new measurement may pick another path; the continuation is exact only on the run's own one.
        fast = FastPath.from_name(run.fast_path)
        fast.apply(model)
    model.load_state_dict(model_sd)
    optimizer.load_state_dict(optim_sd)
    torch.set_rng_state(run.rng["torch"])
    noise_gen.set_state(run.rng[f"noise{di.rank}"])
    return run, fast


def _budgets(cfg: TrainConfig, steps_per_epoch: int) -> tuple[int, float]:
    """The run's step budget (0: none; --epochs and --max-steps, whichever ends first) and time budget (s)."""
    total_steps = cfg.max_steps or 0
    if cfg.epochs:
        total_steps = min(total_steps or 10**12, cfg.epochs * steps_per_epoch)
    return total_steps, cfg.max_minutes * 60.0


def _sampler(n: int, seed: int, di: DistInfo) -> DistributedSampler[int]:
    """This process's share of each epoch's shuffled order (the whole order without torchrun)."""
    # It only takes len() of its dataset; the stubs want a Dataset.
    dataset: Any = range(n)
    return DistributedSampler(dataset, num_replicas=di.world, rank=di.rank, shuffle=True, seed=seed, drop_last=True)


def _distributed(model: RealNVP, opts: RunOptions, di: DistInfo, device: torch.device) -> torch.nn.Module:
    """What the step calls: the model, or under torchrun its DDP wrapper (which synchronises gradients)."""
    if not di.enabled:
        return model
    model.set_sync_batchnorm(True)  # the flow's batch norm is part of the density: all-reduce its statistics
    net: torch.nn.Module = model
    if opts.resnet_bn == "sync":
        net = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    # The s,t ResNets' running averages are not broadcast from rank 0 at every step: with "local" each
    # process keeps its own and average_buffers takes their mean before every evaluation and save; with
    # "sync" they are equal anyway. The flow's batch norms see the global batch on every rank.
    return DistributedDataParallel(
        net, device_ids=[device.index] if device.type == "cuda" else None, **no_buffer_sync()
    )


def _epoch_order(sampler: DistributedSampler[int], epoch: int, device: torch.device) -> torch.Tensor:
    """This process's training-image indices for ``epoch``, a fixed function of the seed and the epoch."""
    sampler.set_epoch(epoch)
    return torch.tensor(list(sampler)).to(device)
