"""The optimiser's share of a training step: torch's Adam as a loop over the parameters, as ``foreach`` and as
one ``fused`` kernel, and whole training steps with the loop and with the fused kernel, alternating.

    python -m bench.optimizer --threads 2                 # the paper network on 28×28×1, batch 32
    python -m bench.optimizer --threads 1 --steps 6

The model is the issue's paper network (``bench.train_speed.PAPER_28``) trained as the trainer does
(``train.loop.build_optimizer``: two parameter groups, the L2 on the scales; the measured fast path).
Results: ``bench/results/optimizer-<UTC time>.json``.
"""

from __future__ import annotations

import argparse
from typing import Any

import torch

from bench.common import load_now, machine_info, median, table, time_alternating, write_results
from bench.reference import Ours


def _adam(groups: list[dict[str, Any]], kind: str) -> torch.optim.Adam:
    """A fresh Adam over the same parameter groups: ``loop`` (torch's CPU default), ``foreach`` or ``fused``."""
    plain = [{k: v for k, v in g.items() if k in ("params", "weight_decay", "lr", "betas")} for g in groups]
    if kind == "fused":
        return torch.optim.Adam(plain, fused=True)
    return torch.optim.Adam(plain, foreach=kind == "foreach")


def optimizer_steps(batch: int, repeats: int) -> list[dict[str, Any]]:
    """Milliseconds of ``optimizer.step()`` alone on the network's gradients, the kinds alternating."""
    ours = Ours(batch)
    ours.step()  # gradients to step on
    opts = {k: _adam(ours.opt.param_groups, k) for k in ("loop", "foreach", "fused")}
    for o in opts.values():
        o.step()  # moments allocated outside the timing
    times = time_alternating({k: o.step for k, o in opts.items()}, repeats)
    tensors = sum(len(g["params"]) for g in ours.opt.param_groups)
    return [{"adam": k, "tensors": tensors, "step_ms": round(1000 * median(v), 2)} for k, v in times.items()]


def training_steps(batch: int, steps: int) -> list[dict[str, Any]]:
    """Whole training steps (trainer defaults) with the loop and with the fused Adam, alternating."""
    runs = {"loop": Ours(batch), "fused": Ours(batch)}
    for k, r in runs.items():
        r.opt = _adam(r.opt.param_groups, k)
        r.step()  # warm-up
    times = time_alternating({k: r.step for k, r in runs.items()}, steps)
    return [
        {"adam": k, "batch": batch, "step_ms": round(1000 * median(v), 1), "images_per_s": round(batch / median(v), 2)}
        for k, v in times.items()
    ]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.optimizer", description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--repeats", type=int, default=20, help="timed optimizer steps per kind")
    p.add_argument("--steps", type=int, default=10, help="timed training steps per kind")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    info = machine_info()
    print("machine:", {k: info[k] for k in ("cpu", "flags_that_matter", "torch_threads", "loadavg_1_5_15")})
    alone = optimizer_steps(args.batch, args.repeats)
    print(table(alone, ["adam", "tensors", "step_ms"]))
    whole = training_steps(args.batch, args.steps)
    print(table(whole, ["adam", "batch", "step_ms", "images_per_s"]))
    path = write_results(
        "optimizer",
        {"machine": info, "args": vars(args), "optimizer_step": alone, "training_step": whole, "load_end": load_now()},
    )
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
