"""Quality per CPU-minute: training recipes, each trained by the real trainer (``python -m train``) for the same
wall-clock budget, all at once, then compared by bits/dim on the validation images (never the test set).

    python -m bench.sweep --minutes 60 --threads 1 --nice 19       # the built-in recipes, all at once
    python -m bench.sweep --minutes 10 --recipes base,lr-2e-3 --parallel 2
    python -m bench.sweep --minutes 5 --recipe 'mine=--preset fashion-mnist --num-blocks 3' --recipes base,mine

Recipes run ``--parallel`` at a time (0 = all at once, the default: a busy machine then slows them alike) with
``--threads`` torch threads each; the table gives the CPU-minutes each one got. Each run anneals its cosine
schedule to the budget, as a real run with ``--max-minutes`` does, so the table answers "which recipe is best for
a budget of N minutes": a larger model may win only at larger budgets. Bits/dim are the trainer's own evaluation
(``train.evaluate.eval_bits_per_dim``) of its held-out images: the validation split where the recipe has one.
``kill -STOP``/``-CONT`` of the sweep's process group pauses all recipes alike (the budget is wall-clock).
Results: ``bench/results/local/`` (``--save``: the committed ``bench/results/<name>-<cpu kind>.json``); the run
folders under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import add_save_flag, load_now, machine_info, table, write_results

ROOT = Path(__file__).resolve().parents[1]

#: Built-in recipes for Fashion-MNIST: the trainer's flags. ``base`` is the shipped model's recipe; each other one
#: changes one setting of it. Every one keeps the paper's model (affine couplings, masks, multi-scale, batch norm).
BASE = "--preset fashion-mnist --flip --ema 0.9995"
RECIPES: dict[str, str] = {
    "base": BASE,
    "no-flip": "--preset fashion-mnist --ema 0.9995",
    "ema-0.999": "--preset fashion-mnist --flip --ema 0.999",
    "blocks-4": f"{BASE} --num-blocks 4",
    "features-16": f"{BASE} --mid-channels 16 --max-mid-channels 64",
    "bn-0.01": f"{BASE} --bn-momentum 0.01",
    "lr-2e-3": f"{BASE} --lr 2e-3",
    "small": "--preset fashion-mnist --num-blocks 1 --mid-channels 16 --max-mid-channels 64 --batch-size 32",
}
DEFAULT = "base,no-flip,ema-0.999,blocks-4,features-16,bn-0.01,lr-2e-3"


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.sweep", description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=20.0, help="wall-clock training budget per recipe")
    p.add_argument("--recipes", default=DEFAULT, help=f"comma list of {', '.join(RECIPES)} or --recipe names")
    p.add_argument("--recipe", action="append", default=[], metavar="NAME=FLAGS", help="an extra recipe")
    p.add_argument("--parallel", type=int, default=0, help="recipes trained at the same time (0 = all)")
    p.add_argument("--nice", type=int, default=0, help="niceness of the training processes (19 = yield to others)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per recipe")
    p.add_argument("--eval-limit", type=int, default=0, help="held-out images per evaluation (0 = all)")
    p.add_argument("--dataset", default="fashion-mnist", help="the trainer's --dataset")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "local" / "sweep", help="run folders")
    add_save_flag(p)
    args = p.parse_args(argv)
    if args.minutes <= 0 or args.parallel < 0 or not 0 <= args.nice <= 19 or args.threads < 1 or args.eval_limit < 0:
        p.error("--minutes must be > 0, --parallel >= 0, --threads >= 1, --nice in 0..19, --eval-limit >= 0")
    recipes = dict(RECIPES)
    for item in args.recipe:
        name, sep, flags = item.partition("=")
        if not sep or not name.strip():
            p.error(f"--recipe takes NAME=FLAGS, got {item!r}")
        recipes[name.strip()] = flags
    chosen = [r.strip() for r in args.recipes.split(",") if r.strip()]
    unknown = [r for r in chosen if r not in recipes]
    if unknown or not chosen:
        p.error(f"unknown recipe(s) {unknown}; known: {', '.join(recipes)}")
    args.chosen = {name: recipes[name] for name in chosen}
    args.parallel = args.parallel or len(chosen)
    return args


def _command(flags: str, out: Path, args: argparse.Namespace) -> list[str]:
    return [
        sys.executable, "-m", "train", "--dataset", args.dataset, *shlex.split(flags), "--epochs", "0",
        "--max-minutes", str(args.minutes), "--threads", str(args.threads), "--eval-limit", str(args.eval_limit),
        "--bn-recalibration", "0", "--compile", "off", "--no-progress", "--out", str(out),
    ]  # fmt: skip  # --compile off: compiling would spend minutes of every recipe's budget before its first step


def summarize(run: Path) -> dict[str, Any]:
    """The final and best held-out bits/dim (validation, else test), steps, epochs and speed of a run folder."""
    records = []
    for line in (run / "metrics.jsonl").read_text().splitlines() if (run / "metrics.jsonl").exists() else []:
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    key = "validation_bpd" if any(r.get("validation_bpd") is not None for r in records) else "test_bpd"
    evals = [r for r in records if r.get(key) is not None]
    if not evals:
        return {"final_bpd": None, "best_bpd": None, "steps": None, "epochs": None}
    last = evals[-1]
    params = None
    for line in (run / "log.txt").read_text().splitlines():
        if " parameters," in line:
            params = int(line.split(" parameters,")[0].rsplit(" ", 1)[-1])
            break
    return {
        "params_M": round(params / 1e6, 2) if params else None,
        "steps": last["step"],
        "epochs": last["epoch"],
        "images_per_s": round(sum(r["images_per_s"] for r in evals) / len(evals), 1),
        "scored_on": key.removesuffix("_bpd"),
        "final_bpd": f"{last[key]:.4f}",  # text: the table's general format keeps only 3 digits
        "best_bpd": f"{min(r[key] for r in evals):.4f}",
    }


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    base = args.out / stamp
    info = machine_info()
    isa = " ".join(f for f in info["cpu_isa_flags"] if f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16"))
    print(f"{info['cpu']} ({isa}) | {args.parallel} at a time x {args.threads} thread(s) | {args.minutes} min each")
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    pending = list(args.chosen.items())
    running: list[tuple[str, subprocess.Popen[bytes], Path]] = []
    failed: dict[str, int] = {}
    cpu_minutes: dict[str, float] = {}
    load_samples: list[float] = []
    while pending or running:
        while pending and len(running) < args.parallel:
            name, flags = pending.pop(0)
            out = base / name
            out.mkdir(parents=True)
            log = open(out / "stdout.txt", "wb")  # noqa: SIM115 - closed when the process ends
            proc = subprocess.Popen(_command(flags, out, args), cwd=ROOT, env=env, stdout=log, stderr=log,
                                    preexec_fn=lambda: os.nice(args.nice))  # fmt: skip
            running.append((name, proc, out))
        time.sleep(5)
        load_samples.append(load_now())
        for item in list(running):
            name, proc, _ = item
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)  # wait4: the CPU time this recipe got
            if pid:
                running.remove(item)
                cpu_minutes[name] = round((usage.ru_utime + usage.ru_stime) / 60, 1)
                if os.waitstatus_to_exitcode(status):
                    failed[name] = os.waitstatus_to_exitcode(status)
    rows = []
    for name, flags in args.chosen.items():
        row = {"recipe": name, "cpu_min": cpu_minutes.get(name), **summarize(base / name), "flags": flags}
        if name in failed:
            row["flags"] += f"  (exit {failed[name]}: see {base / name / 'stdout.txt'})"
        rows.append(row)
    cols = ["recipe", "params_M", "cpu_min", "steps", "epochs", "scored_on", "final_bpd", "best_bpd", "flags"]
    print(table(rows, cols))
    mean_load = round(sum(load_samples) / max(1, len(load_samples)), 2)
    print(f"load average during the sweep: mean {mean_load}")
    path = write_results(
        "sweep",
        {"machine": info, "minutes": args.minutes, "parallel": args.parallel, "threads": args.threads,
         "nice": args.nice, "eval_limit": args.eval_limit, "dataset": args.dataset, "mean_load": mean_load,
         "rows": rows, "runs": str(base)},
        args.save,
    )  # fmt: skip
    print(f"results: {path}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
