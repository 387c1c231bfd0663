"""The training loop, readable top to bottom: data, model, optimiser, then epochs of steps with an
evaluation, a sample grid, metrics and checkpoints after each epoch."""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DistributedSampler
from tqdm import tqdm

from nvp_core import RealNVP, dequantize, load_model, save_model
from nvp_core.base import standard_normal_logprob
from nvp_core.fastpath import ENV_OVERRIDE, FastPath, configure
from nvp_core.fileio import remove_stale_temps

from .config import TrainConfig
from .data import Splits, load_dataset
from .distributed import DistInfo, backend_for, init_distributed, local_main_first, resolve_device, shutdown
from .evaluate import eval_bits_per_dim, recalibrate_batchnorm, recalibration_batches, sample_grid, save_png
from .metrics import MetricsWriter, hardware_description
from .ranks import average_buffers, gather_rng_states, max_diff_across_ranks, no_buffer_sync, synced_elapsed
from .schedule import budget_progress, learning_rate
from .state import StateError, load_state, save_state
from .step_checks import MAX_BAD_STEPS, BufferGuard, StepTally, TrainingError, diverged

__all__ = [  # what other modules and the tests import from here
    "MAX_BAD_STEPS",
    "BufferGuard",
    "RunOptions",
    "StepTally",
    "TrainingError",
    "build_optimizer",
    "loss_bits_per_dim",
    "resolve_precision",
    "same_recipe",
    "step_on_device",
    "train",
    "train_batch",
]


@dataclass
class RunOptions:
    """What is not part of the recipe: where the data and outputs are, the device, resuming."""

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
    # Under DDP: "local" = each process normalises the s,t ResNets with its own batch (running averages are
    # averaged over the processes before every evaluation and checkpoint); "sync" = SyncBatchNorm (GPUs only;
    # two collectives and a host sync per ResNet batch norm per step). The flow's own batch norm, which
    # defines the density, is always synced exactly. Measured (CPU, gloo, preset digits, 400 steps at batch 32,
    # seeds 0 and 1): 2 ranks x 16 with local statistics reach test 5.1487 / 5.1630 bits/dim, 1 process x 32
    # (the statistics SyncBatchNorm would compute) 5.1515 / 5.1571: a mean difference of 0.002 against a seed
    # spread of 0.006-0.014, so local loses nothing measurable; bench/gpu_check.py measures the speed on 2+ GPUs.
    resnet_bn: str = "local"
    # Read the loss and the non-finite flag from the device only every --log-every steps (None: on CUDA);
    # see _train. On a CPU reading them is free, and each step is checked as it ends.
    deferred_checks: bool | None = None


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


def build_optimizer(model: RealNVP, cfg: TrainConfig, fused: bool = False) -> torch.optim.Adam:
    """Adam with the paper's L2 applied, as coupled weight decay in its own parameter group (the same as a
    loss term ``l2/2 * ||p||^2``), to the weight-norm scales and the coupling scale factors only. ``fused``:
    one kernel per step, which can skip a step on a device flag (``optimizer.found_inf``) without a host sync."""
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


# Budgets may change on --resume (to extend a run); everything else must match the saved run.
_RESUMABLE_CHANGES = {"epochs", "max_steps", "max_minutes", "eval_limit", "log_every"}


def same_recipe(saved: dict[str, Any], now: dict[str, Any]) -> bool:
    """Whether a saved run's settings match the current ones (budgets aside). A setting that did not exist
    when the run was saved counts as its default, so runs saved by an older trainer stay resumable."""
    defaults = {f.name: f.default for f in fields(TrainConfig)}
    keys = (set(saved) | set(now)) - _RESUMABLE_CHANGES
    return all(saved.get(k, defaults.get(k)) == now.get(k, defaults.get(k)) for k in keys)


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
    if cfg.batch_size % di.world:
        raise ValueError(f"--batch-size {cfg.batch_size} must be divisible by the number of processes {di.world}")
    if opts.resnet_bn not in ("local", "sync"):
        raise ValueError(f"--resnet-bn must be local or sync, got {opts.resnet_bn!r}")
    if opts.resnet_bn == "sync" and di.enabled and device.type != "cuda":
        raise ValueError("--resnet-bn sync needs GPUs (SyncBatchNorm); on CPU use --resnet-bn local")
    local_batch = cfg.batch_size // di.world
    deferred = device.type == "cuda" if opts.deferred_checks is None else opts.deferred_checks
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick its fastest convolutions
        if cfg.precision == "fp32":  # float32 means float32, not TF32 (evaluation turns TF32 off as well)
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    torch.manual_seed(cfg.seed)

    def load() -> Splits:
        return load_dataset(cfg.dataset, opts.data_dir, cfg.image_size, cfg.channels, cfg.flip, cfg.test_fraction)

    # torchvision datasets download on first use: one process per machine downloads, the others wait.
    downloads = cfg.dataset in ("mnist", "fashion-mnist", "cifar10", "celeba")
    splits = local_main_first(di, load) if downloads else load()
    if len(splits.train) < cfg.batch_size:
        raise ValueError(f"only {len(splits.train)} training images, fewer than --batch-size {cfg.batch_size}")
    test_images = splits.test[: cfg.eval_limit] if cfg.eval_limit else splits.test

    # --- model and optimiser ------------------------------------------------------------------
    model = RealNVP(cfg.flow_config(splits.channels, splits.image_size)).to(device)
    fast = configure(model, device, mode="train", batch=local_batch, precision=cfg.precision).path  # applied
    optimizer = build_optimizer(model, cfg, fused=deferred)
    net: torch.nn.Module = model
    if di.enabled:
        model.set_sync_batchnorm(True)  # the flow's batch norm is part of the density: all-reduce its statistics
        if opts.resnet_bn == "sync":
            net = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        # The s,t ResNets' running averages are not broadcast from rank 0 at every step: with "local" each
        # process keeps its own and average_buffers takes their mean before every evaluation and save; with
        # "sync" they are equal anyway. The flow's batch norms see the global batch on every rank.
        net = DistributedDataParallel(
            net, device_ids=[device.index] if device.type == "cuda" else None, **no_buffer_sync()
        )

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

    # --- counters, resume ---------------------------------------------------------------------
    step, epoch, batch_in_epoch, elapsed_before, best_bpd = 0, 0, 0, 0.0, math.inf
    if opts.resume:
        try:
            model_sd, optim_sd, counters = load_state(opts.out)
        except StateError as e:
            raise ValueError(str(e)) from None
        if not same_recipe(counters.get("train_config", {}), cfg.to_dict()):
            raise ValueError(
                f"--resume: the settings differ from the run in {opts.out}; resume with the same flags "
                f"(saved: {counters.get('train_config')})"
            )
        # A state without these was written by a single CPU process.
        saved_world, saved_noise = int(counters.get("world_size", 1)), counters.get("noise_device", "cpu")
        if saved_world != di.world:
            how = "without torchrun" if saved_world == 1 else f"with torchrun --nproc_per_node={saved_world}"
            raise ValueError(
                f"--resume: the run in {opts.out} was trained by {saved_world} process(es), this job has "
                f"{di.world}; the data order and noise streams depend on it. Resume it {how}, or start a new run"
            )
        if f"noise{di.rank}" not in counters["rng"]:
            raise ValueError(f"--resume: the state in {opts.out} has no noise stream for process {di.rank}")
        if saved_noise != noise_device.type:
            raise ValueError(
                f"--resume: the run in {opts.out} drew its noise on {saved_noise}; "
                f"resume it with --device {saved_noise}"
            )
        saved_path = counters.get("fast_path")
        if saved_path and saved_path != fast.name and not os.environ.get(ENV_OVERRIDE):
            # A new measurement may pick another path; the continuation is exact only on the run's own one.
            fast = FastPath.from_name(saved_path)
            fast.apply(model)
        model.load_state_dict(model_sd)
        optimizer.load_state_dict(optim_sd)
        step, epoch, batch_in_epoch = counters["step"], counters["epoch"], counters["batch_in_epoch"]
        elapsed_before, best_bpd = counters["elapsed_s"], counters["best_bpd"]
        if not (opts.out / "best.safetensors").is_file():
            best_bpd = math.inf  # a run folder kept without its best checkpoint: the next evaluation makes one
        torch.set_rng_state(counters["rng"]["torch"])
        noise_gen.set_state(counters["rng"][f"noise{di.rank}"])
        if (total_steps and step >= total_steps) or (max_seconds and elapsed_before >= max_seconds):
            return {"step": step, "best_bpd": best_bpd, "nothing_to_do": True}
    out = opts.out
    metrics = MetricsWriter(out, enabled=di.is_main)
    if di.is_main:
        out.mkdir(parents=True, exist_ok=True)
        # This run owns its folder: half-written files of a killed earlier invocation are litter, never state.
        stale = remove_stale_temps(out)
        metrics.note(
            f"{'resumed' if opts.resume else 'started'}: {splits.name}, {len(splits.train)} train / "
            f"{len(test_images)} test images {list(splits.train.shape[1:])}, "
            f"{sum(p.numel() for p in model.parameters())} parameters, {di.world} process(es) on {device}"
            + (f" ({backend_for(device.type)}, s,t ResNet batch norm {opts.resnet_bn})" if di.enabled else "")
            + ", "
            f"compute {fast.dtype or torch.float32}, fast path {fast.name}"
            + (f", {splits.skipped} unreadable files skipped" if splits.skipped else "")
            + (f", {len(stale)} temporary files of an interrupted write removed" if stale else "")
        )

    def elapsed() -> float:
        return elapsed_before + time.time() - t_start

    def save_all(extra: dict[str, Any], test_bpd: float | None) -> None:
        nonlocal best_bpd
        states = gather_rng_states(di, noise_gen)  # collective: every rank must call it
        if not di.is_main:
            return
        meta = checkpoint_metadata(cfg, opts, splits, extra)
        save_model(model, out / "last.safetensors", meta, half=cfg.half_checkpoint)
        if test_bpd is not None and test_bpd < best_bpd:
            best_bpd = test_bpd
            save_model(model, out / "best.safetensors", meta, half=cfg.half_checkpoint)
        counters = {
            "step": step,
            "epoch": epoch,
            "batch_in_epoch": batch_in_epoch,
            "elapsed_s": elapsed(),
            "best_bpd": best_bpd,
            "train_config": cfg.to_dict(),
            "world_size": di.world,
            "noise_device": noise_device.type,
            "fast_path": fast.name,
        }
        save_state(out, model, optimizer, states, counters)

    def evaluate_and_save(train_bpd: float, images_per_s: float, final: bool = False) -> float:
        if di.enabled:
            average_buffers(model, di.world)
        test_bpd = eval_bits_per_dim(model, test_images, di.rank, di.world)  # noise drawn on the CPU
        record = {
            "step": step,
            "epoch": round(step * cfg.batch_size / len(splits.train), 4),
            "train_bpd": train_bpd,
            "test_bpd": test_bpd,
            "lr": optimizer.param_groups[0]["lr"],
            "images_per_s": images_per_s,
            "wall_time": elapsed(),
        }
        if di.is_main:
            grid = sample_grid(model, cfg.sample_temperatures, cfg.samples_per_temperature, cfg.seed)
            save_png(grid, out / "samples" / f"step_{step:07d}.png")
            save_png(grid, out / "samples" / "latest.png")
        extra = {"epoch": record["epoch"], "step": step, "test_bpd": test_bpd, "train_time_s": record["wall_time"]}
        extra["hardware"] = hardware_description(device, di.world)
        if final:
            record["final"] = True
        metrics.write(record)
        save_all(extra, test_bpd)
        return test_bpd

    # --- the loop -----------------------------------------------------------------------------
    t_start = time.time()
    model.train()
    bar = tqdm(total=total_steps or None, initial=step, disable=not (opts.progress and di.is_main), unit="step")
    bad_in_row, window_loss, window_n, window_images, window_t = 0, 0.0, 0, 0, time.time()
    smooth_loss: float | None = None
    last_state_save = last_eval = elapsed()
    params = list(model.parameters())
    stop_at = step + opts.stop_after if opts.stop_after else 0
    done = bool((total_steps and step >= total_steps) or (max_seconds and elapsed() >= max_seconds))
    interrupted = False
    # Deferred checks (on a GPU): a non-finite step is skipped on the device (the fused Adam step reads the
    # flag, the batch-norm averages are selected back) and still counts as a step; the loss sums and the skip
    # counts are read every --log-every steps, which is when a skip is logged and divergence stops the run.
    guard, tally = (BufferGuard(model), StepTally(device)) if deferred else (None, None)
    last_read = step

    def read_tally() -> None:
        nonlocal window_loss, window_n, smooth_loss, last_read
        if tally is None or step == last_read:
            return
        loss_sum, good, skipped, worst = tally.read()
        window_loss, window_n = window_loss + loss_sum, window_n + good
        smooth_loss = loss_sum / good if good else smooth_loss
        if skipped:
            metrics.note(f"steps {last_read + 1}..{step}: {skipped} non-finite loss or gradient; skipped")
        last_read = step
        if worst >= MAX_BAD_STEPS:
            raise diverged(f"{worst} non-finite steps in a row before step {step}")

    while not done:
        sampler.set_epoch(epoch)
        order = torch.tensor(list(sampler)).to(train_images.device)
        for b in range(batch_in_epoch, steps_per_epoch):
            now = synced_elapsed(di, elapsed())  # every rank takes time decisions on rank 0's clock
            progress = budget_progress(step, now, total_steps, max_seconds)
            lr = learning_rate(cfg.lr, step, cfg.warmup_steps, progress, cfg.schedule, cfg.min_lr_ratio)
            for group in optimizer.param_groups:
                group["lr"] = lr
            x = train_batch(splits, order[b * local_batch : (b + 1) * local_batch], noise_gen, train_images)
            x = x.to(device)
            batch_in_epoch = b + 1
            if guard is not None and tally is not None:  # no host sync: the device decides whether to skip
                tally.add(*step_on_device(net, model, x, optimizer, guard, params, cfg.grad_clip))
                step += 1
                window_images += cfg.batch_size
                if step % cfg.log_every == 0 or b == steps_per_epoch - 1:
                    read_tally()
            else:
                buffers = [buf.clone() for buf in model.buffers()]
                loss = loss_bits_per_dim(net, model, x)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
                if not (torch.isfinite(loss) and torch.isfinite(grad_norm)):
                    # Skip the step, and undo what the bad batch did to the running averages.
                    for buf, saved in zip(model.buffers(), buffers, strict=True):
                        buf.copy_(saved)
                    bad_in_row += 1
                    metrics.note(
                        f"step {step}: non-finite loss or gradient ({loss.item()}, {grad_norm.item()}); skipped"
                    )
                    if bad_in_row >= MAX_BAD_STEPS:
                        raise diverged(f"{bad_in_row} non-finite steps in a row at step {step}")
                    continue
                bad_in_row = 0
                optimizer.step()
                step += 1
                window_loss += loss.item()
                # The bar shows a moving average of the recent loss (bits/dim); metrics get the epoch mean.
                smooth_loss = loss.item() if smooth_loss is None else 0.95 * smooth_loss + 0.05 * loss.item()
                window_n += 1
                window_images += cfg.batch_size
            if step % cfg.log_every == 0 or b == steps_per_epoch - 1:
                rate = window_images / max(1e-9, time.time() - window_t)
                bar.set_postfix(bpd=f"{(smooth_loss or 0.0) + 8:.3f}", img_s=f"{rate:.1f}", lr=f"{lr:.2e}")
            bar.update(1)
            if (total_steps and step >= total_steps) or (max_seconds and now >= max_seconds):
                done = True
                break
            if stop_at and step >= stop_at:
                done = interrupted = True
                break
            if opts.eval_minutes and now - last_eval >= 60 * opts.eval_minutes and b < steps_per_epoch - 1:
                # A curve point between epoch ends (long epochs on a CPU); it saves a resume point too.
                read_tally()
                train_bpd = window_loss / max(1, window_n) + 8.0
                evaluate_and_save(train_bpd, window_images / max(1e-9, time.time() - window_t))
                window_loss, window_n, window_images, window_t = 0.0, 0, 0, time.time()
                last_eval = last_state_save = now
                continue
            if opts.checkpoint_minutes and now - last_state_save > 60 * opts.checkpoint_minutes:
                # A mid-epoch resume point for long runs (the model file is refreshed too).
                save_all({"epoch": round(step * cfg.batch_size / len(splits.train), 4), "step": step}, None)
                last_state_save = now
        else:
            # A full epoch ended.
            epoch += 1
            batch_in_epoch = 0
        read_tally()
        train_bpd = window_loss / max(1, window_n) + 8.0
        rate = window_images / max(1e-9, time.time() - window_t)
        if interrupted:
            save_all({"epoch": round(step * cfg.batch_size / len(splits.train), 4), "step": step}, None)
            metrics.note(f"stopped after step {step} (--stop-after); continue with --resume")
            bar.close()
            return {"step": step, "best_bpd": best_bpd, "stopped": True}
        if batch_in_epoch == 0 or done:
            evaluate_and_save(train_bpd, rate, final=bool(done))
            window_loss, window_n, window_images, window_t = 0.0, 0, 0, time.time()
            last_eval = elapsed()  # --eval-minutes counts from the latest curve point, whatever made it
    bar.close()

    final: dict[str, Any] = {"step": step, "best_bpd": best_bpd}
    if di.enabled:
        final["rank_max_param_diff"] = max_diff_across_ranks(list(model.parameters()))
        final["rank_max_buffer_diff"] = max_diff_across_ranks([b for b in model.buffers() if b.is_floating_point()])
        metrics.note(
            f"ranks agree: max |difference| {final['rank_max_param_diff']:.3g} (parameters), "
            f"{final['rank_max_buffer_diff']:.3g} (batch-norm averages)"
        )
    if cfg.bn_recalibration_batches and di.is_main:
        final.update(_recalibrate(model, splits, test_images, cfg, opts, device, best_bpd, metrics))
    if di.is_main:
        metrics.note(f"done: step {step}, best test bits/dim {final.get('best_bpd', best_bpd):.4f}")
    return final


def _recalibrate(
    model: RealNVP,
    splits: Splits,
    test_images: torch.Tensor,
    cfg: TrainConfig,
    opts: RunOptions,
    device: torch.device,
    best_bpd: float,
    metrics: MetricsWriter,
) -> dict[str, Any]:
    """Recomputes the batch-norm averages of the best checkpoint over training batches; keeps the result
    (as the new best) only if it lowers the test bits/dim."""
    best, meta = load_model(opts.out / "best.safetensors", map_location=device)
    # The checkpoint's test_bpd was measured by the same function on the same images (float32 either way).
    before = meta["test_bpd"] if not cfg.half_checkpoint else eval_bits_per_dim(best, test_images)
    batches = (x.to(device) for x in recalibration_batches(splits.train, cfg.bn_recalibration_batches, 256, cfg.seed))
    recalibrate_batchnorm(best, batches)
    after = eval_bits_per_dim(best, test_images)
    metrics.note(
        f"batch-norm recalibration ({cfg.bn_recalibration_batches} batches of 256): "
        f"test bits/dim {before:.4f} -> {after:.4f}"
    )
    result: dict[str, Any] = {"bn_recalibration": {"before": before, "after": after}}
    if after < before:
        meta.update(test_bpd=after, bn_recalibrated=True, test_bpd_before_recalibration=before)
        save_model(best, opts.out / "best.safetensors", meta, half=cfg.half_checkpoint)
        result["best_bpd"] = after
    return result
