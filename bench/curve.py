"""Test bits/dim against wall-clock minutes from a training run's metrics.jsonl (the long curve of the shipped
model; ``bench.quality`` measures the short fp32-vs-fast-path curves).

    python -m bench.curve models/fashion_mnist.metrics.jsonl      # writes bench/results/curve-<UTC time>.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from bench.common import table, write_results


def read_curve(path: Path) -> list[dict[str, Any]]:
    """``[{minutes, step, test_bpd, images_per_s}]`` for every line with a test bits/dim, in file order."""
    rows = []
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict) and rec.get("test_bpd") is not None and rec.get("wall_time") is not None:
            rows.append(
                {
                    "minutes": round(float(rec["wall_time"]) / 60, 2),
                    "step": rec.get("step"),
                    "test_bpd": round(float(rec["test_bpd"]), 4),
                    "images_per_s": rec.get("images_per_s"),
                }
            )
    return rows


def at_minutes(rows: list[dict[str, Any]], marks: list[float]) -> list[dict[str, Any]]:
    """The last evaluation at or before each mark (None where the run had not evaluated yet)."""
    out = []
    for m in marks:
        done = [r for r in rows if r["minutes"] <= m]
        out.append({"mark_minutes": m, **(done[-1] if done else {"test_bpd": None})})
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.curve", description=__doc__.split("\n\n")[0])
    p.add_argument("metrics", type=Path)
    p.add_argument("--marks", default="10,30,60,90", help="minutes to report")
    args = p.parse_args(argv)
    if not args.metrics.is_file():
        print(f"{args.metrics}: no such file")
        return 2
    rows = read_curve(args.metrics)
    marks = at_minutes(rows, [float(m) for m in args.marks.split(",")])
    print(table(rows, ["minutes", "step", "test_bpd", "images_per_s"]))
    print()
    print(table(marks, ["mark_minutes", "minutes", "step", "test_bpd"]))
    path = write_results("curve", {"source": str(args.metrics), "rows": rows, "at_minutes": marks})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
