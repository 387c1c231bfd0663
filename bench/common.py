"""Shared helpers: machine description, timing statistics, results files."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from nvp_core.fastpath import bf16_can_be_fast
from nvp_core.fastpath_choice import FLAGS_THAT_MATTER, cpu_flags, cpu_model

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def machine_info() -> dict[str, Any]:
    """What the numbers depend on: CPU, ISA torch uses, threads, load, torch version, GPU."""
    flags = cpu_flags()
    info: dict[str, Any] = {
        "time_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "cpu": cpu_model(),
        "cpu_kind": cpu_kind(),
        "logical_cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_isa_flags": sorted(f for f in flags if f.startswith(("avx", "amx", "fma"))),
        "flags_that_matter": [f for f in FLAGS_THAT_MATTER if f in flags],
        "amx_bf16": "amx_bf16" in flags,
        "bf16_is_a_candidate": bf16_can_be_fast(torch.device("cpu")),
        "loadavg_1_5_15": [round(v, 2) for v in os.getloadavg()],
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    return info


def load_now() -> float:
    return round(os.getloadavg()[0], 2)


def percentile(values: list[float], q: float) -> float:
    """``q`` in [0, 100], linear interpolation between order statistics."""
    s = sorted(values)
    if not s:
        return float("nan")
    k = (len(s) - 1) * q / 100.0
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def summarize_ms(times_s: list[float]) -> dict[str, float]:
    ms = [t * 1e3 for t in times_s]
    return {
        "p50_ms": round(percentile(ms, 50), 3),
        "p90_ms": round(percentile(ms, 90), 3),
        "min_ms": round(min(ms), 3),
        "n": len(ms),
    }


def time_calls(fn: Callable[[], Any], repeats: int, warmup: int = 1) -> list[float]:
    """Wall-clock seconds of ``repeats`` calls of ``fn`` after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def time_alternating(
    calls: dict[str, Callable[[], Any]], rounds: int, after_each: Callable[[], Any] | None = None
) -> dict[str, list[float]]:
    """Wall-clock seconds of each of ``calls`` per round, the calls alternating (in order in even rounds,
    reversed in odd ones) so that a drifting machine load hits them alike; ``after_each`` runs after every call,
    outside the timing (e.g. to sample the load)."""
    times: dict[str, list[float]] = {name: [] for name in calls}
    order = list(calls.items())
    for i in range(rounds):
        for name, fn in order if i % 2 == 0 else order[::-1]:
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
            if after_each is not None:
                after_each()
    return times


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def cpu_kind(model: str | None = None, flags: set[str] | None = None) -> str:
    """A short name for the kind of CPU, e.g. ``epyc-avx512bf16`` or ``xeon-amx``: the processor line and the
    widest instruction set the flow's kernels use (what the figures depend on)."""
    model = cpu_model() if model is None else model
    flags = cpu_flags() if flags is None else flags
    words = [w for w in model.replace("(R)", " ").replace("(TM)", " ").split() if w.isalpha()]
    line = next((w for w in words if w.lower() in ("epyc", "ryzen", "xeon", "core")), words[0] if words else "cpu")
    isa = next((name for flag, name in _ISA if flag in flags), "base")
    return f"{line.lower()}-{isa}"


_ISA = (("amx_bf16", "amx"), ("avx512_bf16", "avx512bf16"), ("avx512f", "avx512"), ("avx2", "avx2"))
LOCAL_DIR = RESULTS_DIR / "local"


def add_save_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--save",
        action="store_true",
        help="write the committed bench/results/<name>-<cpu kind>.json (default: bench/results/local/, ignored)",
    )


def write_results(name: str, payload: dict[str, Any], save: bool = False) -> Path:
    """Writes ``bench/results/local/<name>-<UTC time>.json`` (ignored by git), or with ``save`` the one committed
    file of this benchmark and CPU kind, ``bench/results/<name>-<cpu kind>.json``; returns its path."""
    if save:
        path = RESULTS_DIR / f"{name}-{cpu_kind()}.json"
    else:
        path = LOCAL_DIR / f"{name}-{datetime.now(timezone.utc).strftime('%Y%m%dT%H%M%SZ')}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, sort_keys=False, default=str) + "\n")
    return path


def table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    """A plain fixed-width text table of ``rows`` (missing cells are blank)."""

    def cell(v: Any) -> str:
        if v is None:
            return ""
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"
        return str(v)

    cells = [[cell(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(lines)
