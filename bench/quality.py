"""Quality per unit of compute: test bits/dim against training wall-clock, float32 reference vs the fast path;
and the bf16-vs-float32 check at equal steps.

    python -m bench.quality --minutes 5                  # fashion-mnist preset, 5 training minutes per variant
    python -m bench.quality --equal-steps 200 --dataset digits --preset digits   # bf16 vs fp32, same steps
    python -m bench.quality --equal-steps 150 --num-blocks 2 --mid-channels 32 --max-mid-channels 128 --batch-size 64
    python -m bench.quality --summarize bench/results/quality-bf16-equal-steps-epyc-avx512bf16.json  # seeds: mean

The variants train in alternating time slices (``--slice-seconds``), so a busy machine slows them alike;
evaluation time is not counted as training time. Results go to ``bench/results/local/``; with ``--save`` an
equal-steps run joins this CPU kind's committed file (one run per seed and setup).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from bench.common import RESULTS_DIR, add_save_flag, cpu_kind, load_now, machine_info, table, write_results
from nvp_core import RealNVP
from nvp_core.fastpath_choice import choose
from train.config import preset
from train.data import load_dataset
from train.evaluate import eval_bits_per_dim
from train.loop import build_optimizer, loss_bits_per_dim, train_batch
from train.schedule import learning_rate

EQUAL_STEPS = "quality-bf16-equal-steps"


@dataclass
class Run:
    """One model being trained, with its own optimiser, data order and curve."""

    name: str
    model: RealNVP
    opt: torch.optim.Optimizer
    gen: torch.Generator
    channels_last: bool
    train_s: float = 0.0
    steps: int = 0
    curve: list[dict[str, Any]] = field(default_factory=list)


def _make_run(name: str, cfg: Any, flow_cfg: Any, channels_last: bool, dtype: torch.dtype | None, seed: int) -> Run:
    torch.manual_seed(seed)
    model = RealNVP(flow_cfg).train().set_channels_last(channels_last).set_compute_dtype(dtype)
    return Run(name, model, build_optimizer(model, cfg), torch.Generator().manual_seed(seed), channels_last)


def _step(run: Run, splits: Any, cfg: Any) -> float:
    idx = torch.randint(0, len(splits.train), (cfg.batch_size,), generator=run.gen)
    x = train_batch(splits, idx, run.gen)
    if run.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    lr = learning_rate(cfg.lr, run.steps, cfg.warmup_steps, 0.0, "constant", cfg.min_lr_ratio)
    for group in run.opt.param_groups:
        group["lr"] = lr
    loss = loss_bits_per_dim(run.model, run.model, x)
    run.opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(run.model.parameters(), cfg.grad_clip)
    run.opt.step()
    run.steps += 1
    return float(loss.detach())


def _evaluate(run: Run, test: torch.Tensor) -> None:
    bpd = eval_bits_per_dim(run.model, test)
    run.model.train()
    run.curve.append(
        {"train_minutes": round(run.train_s / 60, 3), "steps": run.steps, "test_bpd": round(bpd, 4), "load": load_now()}
    )
    print(f"  {run.name:>10}: {run.train_s / 60:6.2f} min, {run.steps:5d} steps, test {bpd:.4f} bits/dim", flush=True)


def quality_vs_time(args: argparse.Namespace) -> dict[str, Any]:
    cfg = _train_config(args)
    splits = load_dataset(cfg.dataset)
    flow_cfg = cfg.flow_config(splits.channels, splits.image_size)
    test = splits.test[: args.eval_images]
    fast = choose(flow_cfg, "train", cfg.batch_size)  # the trainer's --precision auto
    print(f"fast path: {fast.describe()}", flush=True)
    runs = [
        _make_run("fp32-nchw", cfg, flow_cfg, False, None, args.seed),
        _make_run("fast", cfg, flow_cfg, fast.path.channels_last, fast.path.dtype, args.seed),
    ]
    budget = args.minutes * 60
    next_eval = {r.name: 0.0 for r in runs}
    while any(r.train_s < budget for r in runs):
        for r in runs:
            if r.train_s >= budget:
                continue
            if r.train_s >= next_eval[r.name]:
                _evaluate(r, test)
                next_eval[r.name] += args.eval_every_minutes * 60
            t = time.perf_counter()
            while time.perf_counter() - t < args.slice_seconds and r.train_s + time.perf_counter() - t < budget:
                _step(r, splits, cfg)
            r.train_s += time.perf_counter() - t
    for r in runs:
        _evaluate(r, test)
    return {
        "preset": args.preset,
        "dataset": cfg.dataset,
        "config": flow_cfg.to_dict(),
        "batch": cfg.batch_size,
        "eval_images": len(test),
        "minutes_per_variant": args.minutes,
        "fast_path": fast.to_dict(),
        "curves": {r.name: r.curve for r in runs},
    }


def _train_config(args: argparse.Namespace) -> Any:
    """The preset with the dataset and any model/batch overrides given on the command line."""
    updates: dict[str, Any] = {"dataset": args.dataset}
    for name in ("num_blocks", "mid_channels", "max_mid_channels", "batch_size"):
        if getattr(args, name, None):
            updates[name] = getattr(args, name)
    return preset(args.preset).with_updates(**updates)


def equal_steps(args: argparse.Namespace) -> dict[str, Any]:
    """fp32 and bf16 trained for the same steps on the same batches from the same initialisation; they
    alternate step by step (so machine load hits them alike), both channels_last, evaluated in float32.

    With ``--control`` a third run, float32 in NCHW, measures what a mere change of rounding does: the same
    function summed in another order. Training amplifies any difference (a few hundred steps turn a last-bit
    change into a different trajectory), so |bf16 - fp32| means little unless set beside |fp32 NCHW - fp32|."""
    cfg = _train_config(args)
    splits = load_dataset(cfg.dataset)
    flow_cfg = cfg.flow_config(splits.channels, splits.image_size)
    test = splits.test[: args.eval_images]
    runs = [
        _make_run("fp32", cfg, flow_cfg, True, None, args.seed),
        _make_run("bf16", cfg, flow_cfg, True, torch.bfloat16, args.seed),
    ]
    if args.control:
        runs.append(_make_run("fp32-nchw", cfg, flow_cfg, False, None, args.seed))
    loads = [load_now()]
    for i in range(args.equal_steps):
        for r in runs:
            t = time.perf_counter()
            _step(r, splits, cfg)
            r.train_s += time.perf_counter() - t
        if (i + 1) % max(1, args.equal_steps // 10) == 0:
            loads.append(load_now())
            print(f"  step {i + 1}/{args.equal_steps}, load {loads[-1]}", flush=True)
    for r in runs:
        _evaluate(r, test)  # eval in float32 (train.evaluate.eval_float32), as the trainer does
    a, b = (r.curve[-1]["test_bpd"] for r in runs[:2])
    control: dict[str, Any] = {}
    if args.control:
        c = runs[2].curve[-1]["test_bpd"]
        control = {"fp32_nchw_test_bpd": c, "control_abs_diff": round(abs(c - a), 4)}
    return {
        "preset": args.preset,
        "dataset": cfg.dataset,
        "config": flow_cfg.to_dict(),
        "batch": cfg.batch_size,
        "steps": args.equal_steps,
        "eval_images": len(test),
        "fp32_test_bpd": a,
        "bf16_test_bpd": b,
        "abs_diff": round(abs(a - b), 4),
        "tolerance": args.tolerance,
        "within_tolerance": abs(a - b) <= args.tolerance,
        **control,
        "train_s": {r.name: round(r.train_s, 1) for r in runs},
        "load_during": [min(loads), max(loads)],
    }


def _runs(saved: dict[str, Any]) -> list[dict[str, Any]]:
    """The equal-steps runs in a results file: one run, or the ``runs`` of a saved file (``--save``)."""
    return list(saved["runs"]) if "runs" in saved else [saved]


def _key(res: dict[str, Any]) -> tuple[Any, ...]:
    return res["args"]["seed"], res["steps"], json.dumps(res["config"], sort_keys=True), res.get("batch")


def save_equal_steps(res: dict[str, Any]) -> Path:
    """Adds ``res`` to this CPU kind's saved equal-steps file, replacing an earlier run of the same seed and
    setup, so that ``--summarize`` of that one file averages every seed."""
    path = RESULTS_DIR / f"{EQUAL_STEPS}-{cpu_kind()}.json"
    runs = _runs(json.loads(path.read_text())) if path.is_file() else []
    return write_results(EQUAL_STEPS, {"runs": [r for r in runs if _key(r) != _key(res)] + [res]}, save=True)


def summarize(paths: list[Path]) -> str:
    """Equal-steps results of several seeds side by side, with the mean and its standard error of the signed
    differences (bf16 - float32, and float32 NCHW - float32 where a run had ``--control``). One run's difference
    is mostly where chaos put its trajectory; the mean over seeds is what the precision itself does."""
    runs: dict[tuple[Any, ...], dict[str, Any]] = {}
    # File names carry the UTC time, a saved file its runs in order: a later run of the same seed replaces an earlier.
    for path, res in ((p, r) for p in sorted(paths) for r in _runs(json.loads(p.read_text()))):
        a, b, c = res["fp32_test_bpd"], res["bf16_test_bpd"], res.get("fp32_nchw_test_bpd")
        runs[_key(res)] = {
            "file": path.name,
            "seed": res["args"]["seed"],
            "steps": res["steps"],
            "fp32": a,
            "bf16": b,
            "bf16-fp32": round(b - a, 4),
            "fp32_nchw": c,
            "nchw-fp32": None if c is None else round(c - a, 4),
        }
    rows = sorted(runs.values(), key=lambda r: (r["steps"], r["seed"]))
    shown = [{k: f"{v:+.4f}" if "-" in k and v is not None else v for k, v in r.items()} for r in rows]
    shown = [{k: f"{v:.4f}" if isinstance(v, float) else v for k, v in r.items()} for r in shown]
    out = [table(shown, list(shown[0]))]
    for col in ("bf16-fp32", "nchw-fp32"):
        d = [r[col] for r in rows if r[col] is not None]
        if len(d) >= 2:
            se = statistics.stdev(d) / math.sqrt(len(d))
            out.append(
                f"{col}: mean {statistics.mean(d):+.4f} ± {se:.4f} (standard error, {len(d)} seeds); "
                f"mean |difference| {statistics.mean(abs(x) for x in d):.4f}"
            )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.quality", description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="fashion-mnist")
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--minutes", type=float, default=5.0, help="training minutes per variant")
    p.add_argument("--slice-seconds", type=float, default=20.0)
    p.add_argument("--eval-every-minutes", type=float, default=1.0)
    p.add_argument("--eval-images", type=int, default=1000)
    p.add_argument("--equal-steps", type=int, default=0, help="instead: bf16 vs fp32 after this many steps")
    p.add_argument("--control", action="store_true", help="with --equal-steps: add a float32 NCHW run")
    p.add_argument("--tolerance", type=float, default=0.01, help="largest |bf16 - fp32| test bits/dim accepted")
    p.add_argument("--num-blocks", type=int, default=0, help="override the preset's residual blocks (0: keep)")
    p.add_argument("--mid-channels", type=int, default=0, help="override the preset's features (0: keep)")
    p.add_argument("--max-mid-channels", type=int, default=0, help="override the preset's width cap (0: keep)")
    p.add_argument("--batch-size", type=int, default=0, help="override the preset's batch (0: keep)")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--summarize", type=Path, nargs="+", help="instead: print these equal-steps results side by side")
    add_save_flag(p)
    args = p.parse_args(argv)
    if args.summarize:
        print(summarize(args.summarize))
        return 0
    if args.threads:
        torch.set_num_threads(args.threads)
    info = machine_info()
    if args.equal_steps:
        res = equal_steps(args)
        print(
            table(
                [{k: f"{v:.4f}" if isinstance(v, float) else v for k, v in res.items()}],
                ["dataset", "steps", "fp32_test_bpd", "bf16_test_bpd", "abs_diff", "within_tolerance"]
                + (["fp32_nchw_test_bpd", "control_abs_diff"] if args.control else [])
                + ["train_s"],
            )
        )
        run = {"machine": info, "args": vars(args), **res}
        path = save_equal_steps(run) if args.save else write_results(EQUAL_STEPS, run)
    else:
        res = quality_vs_time(args)
        path = write_results("quality", {"machine": info, "args": vars(args), **res}, args.save)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
