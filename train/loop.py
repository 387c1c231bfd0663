"""The training loop, readable top to bottom like nanoGPT's ``train.py``: data, model, optimiser, the resume
state, then one flat loop of steps (the epoch and the batch in it are counters of the :class:`RunState`) with
a curve point (evaluation, sample grid, metrics, checkpoints) at each epoch end and every --eval-minutes."""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, replace
from functools import partial
from typing import Any, NamedTuple

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DistributedSampler
from tqdm import tqdm

from nvp_core import RealNVP, dequantize, load_model, save_model
from nvp_core.base import standard_normal_logprob
from nvp_core.fastpath import ENV_OVERRIDE, FastPath, configure
from nvp_core.fileio import remove_stale_temps

from .checkpointing import checkpoint_metadata, read_resume_state, save_checkpoint, warm_start
from .compiling import Compiler, eager
from .config import TrainConfig
from .data import Splits, load_dataset
from .distributed import DistInfo, backend_for, init_distributed, local_main_first, resolve_device, shutdown
from .ema import WeightAverage, evaluation_weights
from .evaluate import eval_bits_per_dim, recalibrate_batchnorm, recalibration_batches, sample_grid, save_png
from .metrics import MetricsWriter, hardware_description
from .options import RunOptions
from .progress import LossWindow
from .ranks import (
    agreed_fast_path,
    average_buffers,
    gather_rng_states,
    max_diff_across_ranks,
    no_buffer_sync,
    synced_elapsed,
)
from .run_state import RunState
from .schedule import budget_progress, learning_rate
from .step_checks import MAX_BAD_STEPS, BufferGuard, StepTally, TrainingError, diverged

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
    :func:`nvp_core.fastpath.choose`: ``fp32``/``bf16`` restrict the dtype, ``auto`` lets the measurement on
    this machine and this model's shapes decide (cached per machine; ``$NVP_FASTPATH`` overrides it). With
    ``model``, the whole choice (dtype and memory layout) is applied to it."""
    if model is None:  # nothing to measure on: the caller's dtype, or float32
        return torch.bfloat16 if precision == "bf16" else None
    choice = configure(model, device, mode="train", batch=batch, precision=precision)
    return choice.path.dtype


def build_optimizer(model: RealNVP, cfg: TrainConfig, fused: bool = True) -> torch.optim.Adam:
    """Adam with the paper's L2 applied, as coupled weight decay in its own parameter group (the same as a
    loss term ``l2/2 * ||p||^2``), to the weight-norm scales and the coupling scale factors only.

    ``fused`` (the default): one kernel per step for all parameters, which can also skip a step on a device
    flag (``optimizer.found_inf``) without a host sync. On the CPU too: torch's default there is a loop over the
    parameters, 46 ms per step for the paper network's 910 tensors against 14 ms fused, a training step 1339 →
    1306 ms (2 threads, Zen 5; ``python -m bench.optimizer``). ``False``: that loop (same update up to rounding)."""
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


class HostStep(NamedTuple):
    taken: bool
    loss: float
    grad_norm: float  # read only for a skipped step (nan otherwise): reading it costs a sync on a GPU


def step_on_host(
    net: torch.nn.Module,
    model: RealNVP,
    x: torch.Tensor,
    optimizer: torch.optim.Adam,
    params: list[torch.nn.Parameter],
    grad_clip: float,
) -> HostStep:
    """One training step checked on the host: a non-finite loss or gradient norm skips it, and undoes what
    the bad batch did to the batch-norm running averages."""
    buffers = [buf.clone() for buf in model.buffers()]
    loss = loss_bits_per_dim(net, model, x)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(params, grad_clip)
    if not (torch.isfinite(loss) and torch.isfinite(grad_norm)):
        for buf, saved in zip(model.buffers(), buffers, strict=True):
            buf.copy_(saved)
        return HostStep(False, loss.item(), grad_norm.item())
    optimizer.step()
    return HostStep(True, loss.item(), math.nan)


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


def _train(cfg: TrainConfig, opts: RunOptions, di: DistInfo) -> dict[str, Any]:
    device = resolve_device(opts.device, di)
    _check_options(cfg, opts, di, device)
    local_batch = cfg.batch_size // di.world
    deferred = device.type == "cuda" if opts.deferred_checks is None else opts.deferred_checks
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick its fastest convolutions
        if cfg.precision == "fp32":  # float32 means float32, not TF32 (evaluation turns TF32 off as well)
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    torch.manual_seed(cfg.seed)

    # --- data ---------------------------------------------------------------------------------
    splits = _load_splits(cfg, opts, di)
    if len(splits.train) < cfg.batch_size:
        raise ValueError(f"only {len(splits.train)} training images, fewer than --batch-size {cfg.batch_size}")
    held_out = "validation" if len(splits.validation) else "test"
    eval_images = splits.validation if held_out == "validation" else splits.test
    eval_images = eval_images[: cfg.eval_limit] if cfg.eval_limit else eval_images
    sampler: DistributedSampler[int] = DistributedSampler(
        range(len(splits.train)),  # type: ignore[arg-type]  # it only takes len() of its dataset; stubs want a Dataset
        num_replicas=di.world,
        rank=di.rank,
        shuffle=True,
        seed=cfg.seed,
        drop_last=True,
    )
    steps_per_epoch = len(sampler) // local_batch
    total_steps = cfg.max_steps if cfg.max_steps else 0
    if cfg.epochs:
        total_steps = min(total_steps or 10**12, cfg.epochs * steps_per_epoch)
    max_seconds = cfg.max_minutes * 60.0
    # On a GPU the uint8 training set lives on the device and the noise is drawn there: a batch is gathered,
    # flipped and dequantised without the host. (CPU runs draw the same numbers as they always did.)
    noise_device = device if device.type == "cuda" else torch.device("cpu")
    train_images = splits.train.to(device) if device.type == "cuda" else splits.train
    noise_gen = torch.Generator(device=noise_device).manual_seed(cfg.seed * 1000 + di.rank)

    # --- model and optimiser ------------------------------------------------------------------
    model = RealNVP(cfg.flow_config(splits.channels, splits.image_size)).to(device)
    fast = agreed_fast_path(model, device, di, local_batch, cfg.precision)  # measured once, applied
    if cfg.init_from and not opts.resume:  # a resumed run's weights come from its state
        warm_start(model, cfg.init_from)
    optimizer = build_optimizer(model, cfg)
    net = _distributed(model, opts, di, device)

    # --- where the run stands: a new run, or the resume state -------------------------------------
    run = RunState()
    if opts.resume:
        model_sd, optim_sd, run = read_resume_state(opts.out, cfg, di, noise_device)
        if run.fast_path and run.fast_path != fast.name and not os.environ.get(ENV_OVERRIDE):
            # A new measurement may pick another path; the continuation is exact only on the run's own one.
            fast = FastPath.from_name(run.fast_path)
            fast.apply(model)
        model.load_state_dict(model_sd)
        optimizer.load_state_dict(optim_sd)
        torch.set_rng_state(run.rng["torch"])
        noise_gen.set_state(run.rng[f"noise{di.rank}"])
        if (total_steps and run.step >= total_steps) or (max_seconds and run.elapsed_s >= max_seconds):
            return {"step": run.step, "best_bpd": run.best_bpd, "nothing_to_do": True}
    # The states this job writes say what it is (budgets may have changed on --resume).
    run = replace(
        run, train_config=cfg.to_dict(), world_size=di.world, noise_device=noise_device.type, fast_path=fast.name
    )
    resumed_compiled, run.compiled = run.compiled, False
    ema = WeightAverage(model, cfg.ema) if cfg.ema else None
    if ema is not None and run.ema:
        ema.load_state_dict(run.ema)
    metrics = MetricsWriter(opts.out, enabled=di.is_main)
    job = Job(cfg, opts, di, device, splits, eval_images, held_out, noise_gen, metrics, ema)
    if di.is_main:
        _start_folder(job, model, fast)
    compiler = Compiler(cfg.compile, model, device, metrics)
    compiler.start(resumed_compiled)
    run.compiled = compiler.compiled

    # --- the loop: one batch per pass, a curve point at each epoch end --------------------------------
    clock = RunClock(run.elapsed_s)
    model.train()
    bar = tqdm(total=total_steps or None, initial=run.step, disable=not (opts.progress and di.is_main), unit="step")
    window = LossWindow(read_step=run.step)
    last_state_save = last_eval = clock()
    params = list(model.parameters())
    stop_at = run.step + opts.stop_after if opts.stop_after else 0
    # Deferred checks (on a GPU): a non-finite step is skipped on the device (the fused Adam step reads the
    # flag, the batch-norm averages are selected back) and still counts as a step; the loss sums and the skip
    # counts are read every --log-every steps, which is when a skip is logged and divergence stops the run.
    guard, tally = (BufferGuard(model), StepTally(device)) if deferred else (None, None)
    bad_in_row = 0  # consecutive skipped steps, when the host checks each step
    order = _epoch_order(sampler, run.epoch, train_images.device)
    first_step = run.step
    while True:
        if run.batch_in_epoch == steps_per_epoch:  # an epoch ended: its curve point, then the next epoch
            run.epoch, run.batch_in_epoch = run.epoch + 1, 0
            window.read_tally(tally, job.metrics, run.step)
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
        run.batch_in_epoch += 1  # a skipped step draws its batch too
        epoch_end = run.batch_in_epoch == steps_per_epoch
        if guard is not None and tally is not None:  # no host sync: the device decides whether to skip
            tally.add(*compiler.step(partial(step_on_device, net, model, x, optimizer, guard, params, cfg.grad_clip)))
            run.step += 1
            if ema is not None:  # a skipped step left the weights as they were: averaging them again is harmless
                ema.update(model)
            window.images += cfg.batch_size
            if run.step % cfg.log_every == 0 or epoch_end:
                window.read_tally(tally, job.metrics, run.step)
        else:
            result = compiler.step(partial(step_on_host, net, model, x, optimizer, params, cfg.grad_clip))
            if not result.taken:  # not a step: no logging, no budget; the batch is spent
                bad_in_row += 1
                job.metrics.note(
                    f"step {run.step}: non-finite loss or gradient ({result.loss}, {result.grad_norm}); skipped"
                )
                if bad_in_row >= MAX_BAD_STEPS:
                    raise diverged(f"{bad_in_row} non-finite steps in a row at step {run.step}")
                continue
            bad_in_row = 0
            run.step += 1
            if ema is not None:
                ema.update(model)
            window.add(result.loss)
            window.images += cfg.batch_size
        if run.step % cfg.log_every == 0 or epoch_end:
            bpd = (window.smooth_loss or 0.0) + 8
            bar.set_postfix(bpd=f"{bpd:.3f}", img_s=f"{window.images_per_s():.1f}", lr=f"{lr:.2e}")
        bar.update(1)
        compiler.after_step(first_step, run.step, now, total_steps, max_seconds)
        run.compiled = compiler.compiled

        if (total_steps and run.step >= total_steps) or (max_seconds and now >= max_seconds):
            break
        if stop_at and run.step >= stop_at:
            window.read_tally(tally, job.metrics, run.step)
            save_for_resume(job, model, optimizer, run, clock)
            job.metrics.note(f"stopped after step {run.step} (--stop-after); continue with --resume")
            bar.close()
            return {"step": run.step, "best_bpd": run.best_bpd, "stopped": True}
        if opts.eval_minutes and now - last_eval >= 60 * opts.eval_minutes and not epoch_end:
            # A curve point between epoch ends (long epochs on a CPU); it saves a resume point too.
            window.read_tally(tally, job.metrics, run.step)
            evaluate_and_save(job, model, optimizer, run, window, clock)
            window.restart()
            last_eval = last_state_save = now
        elif opts.checkpoint_minutes and now - last_state_save > 60 * opts.checkpoint_minutes:
            save_for_resume(job, model, optimizer, run, clock)  # a mid-epoch resume point for long runs
            last_state_save = now

    # --- the budget is spent: the final curve point, then the checks and the batch-norm recalibration ----
    window.read_tally(tally, job.metrics, run.step)
    evaluate_and_save(job, model, optimizer, run, window, clock, final=True)
    bar.close()
    return _finish(job, model, run)


class RunClock:
    """Training time of the run: the earlier invocations' (from the resume state) plus this one's."""

    def __init__(self, before: float) -> None:
        self.before, self.start = before, time.time()

    def __call__(self) -> float:
        return self.before + time.time() - self.start


def _check_options(cfg: TrainConfig, opts: RunOptions, di: DistInfo, device: torch.device) -> None:
    """Settings that cannot work together, as a message before any work."""
    if cfg.batch_size % di.world:
        raise ValueError(f"--batch-size {cfg.batch_size} must be divisible by the number of processes {di.world}")
    if opts.resnet_bn not in ("local", "sync"):
        raise ValueError(f"--resnet-bn must be local or sync, got {opts.resnet_bn!r}")
    if opts.resnet_bn == "sync" and di.enabled and device.type != "cuda":
        raise ValueError("--resnet-bn sync needs GPUs (SyncBatchNorm); on CPU use --resnet-bn local")


def _load_splits(cfg: TrainConfig, opts: RunOptions, di: DistInfo) -> Splits:
    def load() -> Splits:
        return load_dataset(
            cfg.dataset, opts.data_dir, cfg.image_size, cfg.channels, cfg.flip, cfg.test_fraction, cfg.validation_images
        )

    # torchvision datasets download on first use: one process per machine downloads, the others wait.
    downloads = cfg.dataset in ("mnist", "fashion-mnist", "cifar10", "celeba")
    return local_main_first(di, load) if downloads else load()


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


def _start_folder(job: Job, model: RealNVP, fast: FastPath) -> None:
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


def _finish(job: Job, model: RealNVP, run: RunState) -> dict[str, Any]:
    """The final result: under DDP a check that the ranks agree; the best checkpoint's batch-norm
    recalibration (when the recipe asks for it)."""
    di, metrics = job.di, job.metrics
    final: dict[str, Any] = {"step": run.step, "best_bpd": run.best_bpd}
    if di.enabled:
        final["rank_max_param_diff"] = max_diff_across_ranks(list(model.parameters()))
        final["rank_max_buffer_diff"] = max_diff_across_ranks([b for b in model.buffers() if b.is_floating_point()])
        metrics.note(
            f"ranks agree: max |difference| {final['rank_max_param_diff']:.3g} (parameters), "
            f"{final['rank_max_buffer_diff']:.3g} (batch-norm averages)"
        )
    if job.cfg.bn_recalibration_batches and di.is_main:
        final.update(_recalibrate(model, job, run.best_bpd))
    if di.is_main:
        metrics.note(
            f"done: step {run.step}, best {job.held_out} bits/dim {final.get('best_bpd', run.best_bpd):.4f}"
            + (" (the test set: python -m train.score best.safetensors)" if job.held_out == "validation" else "")
        )
    return final


def _recalibrate(model: RealNVP, job: Job, best_bpd: float) -> dict[str, Any]:
    """Recomputes the batch-norm averages of the best checkpoint, and of the last one when training went on
    after the best, over the same training batches; the lowest held-out bits/dim among the best as it was and
    the recalibrated ones becomes ``best.safetensors``. (Late in a run the two are close, and the running
    averages lag the weights: which one recalibrates better is only known by measuring.)"""
    cfg, opts, device, splits, metrics = job.cfg, job.opts, job.device, job.splits, job.metrics
    key = f"{job.held_out}_bpd"
    best, meta = load_model(opts.out / "best.safetensors", map_location=device)
    # The checkpoint's figure was measured by the same function on the same images (float32 either way).
    before = meta[key] if not cfg.half_checkpoint else eval_bits_per_dim(best, job.eval_images)
    candidates = [("best", best, meta)]
    last_path = opts.out / "last.safetensors"
    if last_path.is_file():
        last, last_meta = load_model(last_path, map_location=device)
        if last_meta.get("step") != meta.get("step"):
            candidates.append(("last", last, last_meta))
    result: dict[str, Any] = {}
    winner: tuple[float, str, RealNVP, dict[str, Any]] | None = None
    n = cfg.bn_recalibration_batches
    for name, m, m_meta in candidates:
        recalibrate_batchnorm(m, (x.to(device) for x in recalibration_batches(splits.train, n, 256, cfg.seed)))
        after = eval_bits_per_dim(m, job.eval_images)
        if name == "best":
            result["bn_recalibration"] = {"before": before, "after": after}
            metrics.note(
                f"batch-norm recalibration ({n} batches of 256): {job.held_out} bits/dim {before:.4f} -> {after:.4f}"
            )
        else:
            result["bn_recalibration_last"] = {"step": m_meta.get("step"), "after": after}
            metrics.note(f"the last checkpoint (step {m_meta.get('step')}) recalibrated the same way: {after:.4f}")
        if after < (winner[0] if winner else before):
            winner = (after, name, m, m_meta)
    if winner is not None:
        after, name, m, m_meta = winner
        was = before if name == "best" else m_meta.get(key)
        m_meta = {**m_meta, key: after, "bn_recalibrated": True, f"{key}_before_recalibration": was}
        if name == "last":
            m_meta["chosen_over_best_step"] = meta.get("step")
            metrics.note(f"best.safetensors is now the recalibrated last checkpoint (step {m_meta.get('step')})")
        save_model(m, opts.out / "best.safetensors", m_meta, half=cfg.half_checkpoint)
        result["best_bpd"] = after
    return result
