"""The end of a run: under DDP a check that the ranks agree, and the best checkpoint's batch-norm
recalibration when the recipe asks for it."""

from __future__ import annotations

from typing import Any

from nvp_core import RealNVP, load_model, save_model

from .evaluate import eval_bits_per_dim, recalibrate_batchnorm, recalibration_batches
from .job import Job
from .ranks import max_diff_across_ranks
from .run_state import RunState


def finish(job: Job, model: RealNVP, run: RunState) -> dict[str, Any]:
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
        final.update(recalibrate_best(job))
    if di.is_main:
        metrics.note(
            f"done: step {run.step}, best {job.held_out} bits/dim {final.get('best_bpd', run.best_bpd):.4f}"
            + (" (the test set: python -m train.score best.safetensors)" if job.held_out == "validation" else "")
        )
    return final


def recalibrate_best(job: Job) -> dict[str, Any]:
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
