"""What :func:`nvp_core.fastpath.choose` measures on this machine: the candidates' times and the choice for the
trainer (paper network and ``fashion-mnist`` preset) and for the app (the shipped model, with its picture and
bits/dim fidelity per path). Measures afresh (the cache is neither read nor written)::

    python -m bench.choice --threads 1

Results: ``bench/results/choice-<UTC time>.json``.
"""

from __future__ import annotations

import argparse
from typing import Any

import torch

from bench.common import load_now, machine_info, table, write_results
from bench.latency import shipped_or_preset_model
from bench.train_speed import PAPER_28
from nvp_core.fastpath import ALL_PATHS, candidates, choose, faithful, measure, pick
from train.config import preset


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.choice", description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--batch", type=int, default=32, help="training batch the trainer would use")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    info = machine_info()
    cpu = torch.device("cpu")
    fashion = preset("fashion-mnist").flow_config(1, 28)
    rows: list[dict[str, Any]] = []
    for name, cfg, mode, batch in (
        ("paper net 28x28x1", PAPER_28, "train", args.batch),
        ("fashion-mnist preset", fashion, "train", args.batch),
        ("fashion-mnist preset", fashion, "infer", 16),
    ):
        c = choose(cfg, mode, batch, cpu, use_cache=False)
        rows.append({"model": name, "mode": mode, "batch": batch, **c.timings_ms, "chosen": c.name, "load": load_now()})
    model, source = shipped_or_preset_model()
    ok, fidelity = faithful(model, candidates(cpu))
    timings = measure(model.config, "infer", 16, cpu, ok)
    rows.append(
        {"model": f"app: {source}", "mode": "infer", "batch": 16, **timings, "chosen": pick(timings).name,
         "load": load_now(), "fidelity": fidelity}
    )  # fmt: skip
    cols = ["model", "mode", "batch", *(q.name for q in ALL_PATHS), "chosen", "load"]
    print(table(rows, cols))
    print("app fidelity vs float32 NCHW (max grey levels, max |Δ bits/dim|):", fidelity)
    path = write_results("choice", {"machine": info, "args": vars(args), "rows": rows})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
