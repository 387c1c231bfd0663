"""How fast the Playground learns: the 2D Real NVP (``nvp_core.toy``) trained as the page trains it
(``nvp_core.toy_train.ToyTrainer`` with the page's default settings, in chunks of half a second), and the exact test
log-likelihood it has reached after 10, 30 and 60 seconds of training.

    python -m bench.toy_speed                               # two moons, the one-minute classroom demo
    python -m bench.toy_speed --datasets all --checkpoints 10,30,60,120

A kernel density estimate fitted to the same training points (``sklearn.neighbors.KernelDensity``, its bandwidth
chosen on a held-out part of them) gives a yardstick: the test log-likelihood of a good density for that data.
Log-likelihoods are nats per point on the held-out points, higher is better.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import numpy as np
import torch
from sklearn.neighbors import KernelDensity

from bench.common import add_save_flag, machine_info, table, write_results
from nvp_core.toy_data import DATASETS
from nvp_core.toy_train import ToySettings, ToyTrainer

CHUNK_S = 0.5  # the page's chunk (app.toy_compute)
BANDWIDTHS = (0.03, 0.05, 0.08, 0.12, 0.18, 0.27, 0.4)


def kde_yardstick(train: np.ndarray, test: np.ndarray) -> float:
    """Test log-likelihood of a Gaussian KDE whose bandwidth is the best on the last fifth of ``train``."""
    cut = len(train) * 4 // 5
    fit, held = train[:cut], train[cut:]
    best = max(BANDWIDTHS, key=lambda bw: KernelDensity(bandwidth=bw).fit(fit).score_samples(held).mean())
    return float(KernelDensity(bandwidth=best).fit(train).score_samples(test).mean())


def learning_curve(dataset: str, checkpoints: list[float]) -> dict[str, Any]:
    trainer = ToyTrainer(ToySettings(dataset=dataset))
    row: dict[str, Any] = {"dataset": dataset}
    for t in checkpoints:
        while trainer.seconds < t and trainer.error is None:
            trainer.train_for(min(CHUNK_S, t - trainer.seconds + 1e-3))
        row[f"after_{t:g}s"] = round(trainer.test_log_likelihood(), 3)
        row[f"steps_{t:g}s"] = trainer.steps
    row["kde"] = round(kde_yardstick(trainer.train_points.numpy(), trainer.test_points.numpy()), 3)
    row["error"] = trainer.error or ""
    return row


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.toy_speed", description=__doc__.split("\n\n")[0])
    p.add_argument("--datasets", default="two moons", help=f"comma list of {', '.join(DATASETS)}, or all")
    p.add_argument("--checkpoints", default="10,30,60", help="training seconds at which the test set is scored")
    p.add_argument("--threads", type=int, default=1, help="torch threads (the app's on 2 cores: 1)")
    add_save_flag(p)
    args = p.parse_args(argv)
    names = list(DATASETS) if args.datasets == "all" else [d.strip() for d in args.datasets.split(",")]
    unknown = [d for d in names if d not in DATASETS]
    if unknown:
        p.error(f"unknown data set(s) {', '.join(unknown)}; known: {', '.join(DATASETS)}")
    checkpoints = sorted(float(c) for c in args.checkpoints.split(","))
    torch.set_num_threads(args.threads)
    rows = [learning_curve(d, checkpoints) for d in names]
    cols = ["dataset", *(f"after_{t:g}s" for t in checkpoints), *(f"steps_{t:g}s" for t in checkpoints), "kde"]
    print(table(rows, cols + (["error"] if any(r["error"] for r in rows) else [])))
    info = machine_info()
    print(f"test log-likelihood, nats per point; {info['cpu']} ({', '.join(info['flags_that_matter'])}), "
          f"{args.threads} thread(s)")  # fmt: skip
    report = {"rows": rows, "settings": vars(ToySettings()), "machine": info, "command": " ".join(sys.argv)}
    print(f"written: {write_results('toy-speed', report, args.save)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
