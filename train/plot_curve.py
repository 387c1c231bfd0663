"""A run's learning curve as an SVG picture: held-out and train bits/dim against minutes of training.

``python -m train.plot_curve models/fashion_mnist.metrics.jsonl models/fashion_mnist.curve.svg``

Held-out points are ``validation_bpd`` where the run had a validation split, else ``test_bpd``; minutes are
the trainer's ``wall_time``. The SVG is written by hand: a plotting library would be a dependency for one picture.
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape

from nvp_core.fileio import read_json_lines

WIDTH, HEIGHT = 640, 360
LEFT, RIGHT, TOP, BOTTOM = 64, 16, 36, 48
HELD_COLOUR, TRAIN_COLOUR = "#1f77b4", "#d62728"


@dataclass(frozen=True)
class Curve:
    """One point per evaluation: minutes of training, held-out and train bits/dim."""

    minutes: list[float]
    held: list[float]
    train: list[float]
    held_name: str  # "validation" or "test"


def read_curve(path: Path) -> Curve:
    """The curve in a metrics file; lines that are not a complete evaluation record are skipped."""
    records = read_json_lines(path)
    held_key = "validation_bpd" if any("validation_bpd" in r for r in records) else "test_bpd"
    keys = ("wall_time", held_key, "train_bpd")
    rows = [r for r in records if all(isinstance(r.get(k), int | float) and math.isfinite(r[k]) for k in keys)]
    if not rows:
        raise ValueError(f"{path}: no evaluation records with {', '.join(keys)}")
    return Curve(
        minutes=[float(r["wall_time"]) / 60 for r in rows],
        held=[float(r[held_key]) for r in rows],
        train=[float(r["train_bpd"]) for r in rows],
        held_name=held_key.removesuffix("_bpd"),
    )


def nice_ticks(lo: float, hi: float, count: int = 8) -> list[float]:
    """Round tick values (steps of 1, 2 or 5 × 10^k) inside [lo, hi], at most about ``count`` of them."""
    raw = (hi - lo) / count if hi > lo else 1.0
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw * (1 - 1e-9))
    first, last = math.ceil(lo / step - 1e-9), math.floor(hi / step + 1e-9)
    return [round(k * step, 10) for k in range(first, last + 1)]


def _label(value: float, step: float) -> str:
    decimals = max(0, -math.floor(math.log10(step) + 1e-9))
    return f"{value:.{decimals}f}"


def _step(ticks: list[float]) -> float:
    return ticks[1] - ticks[0] if len(ticks) > 1 else 1.0


def render_svg(curve: Curve, title: str) -> str:
    """The SVG document: both curves as polylines, held-out points as dots, ticked and labelled axes."""
    values = curve.held + curve.train
    pad = 0.04 * (max(values) - min(values) or 1.0)
    x0, x1 = 0.0, max(curve.minutes) or 1.0
    y0, y1 = min(values) - pad, max(values) + pad
    xt, yt = nice_ticks(x0, x1), nice_ticks(y0, y1)
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def px(m: float) -> float:
        return round(LEFT + (m - x0) / (x1 - x0) * plot_w, 1)

    def py(b: float) -> float:
        return round(TOP + (y1 - b) / (y1 - y0) * plot_h, 1)

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">',
        f'<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>',
        f'<text x="{WIDTH / 2}" y="20" text-anchor="middle" font-size="14">{escape(title)}</text>',
    ]
    for t in xt:
        out.append(f'<line x1="{px(t)}" y1="{TOP}" x2="{px(t)}" y2="{TOP + plot_h}" stroke="#e5e5e5"/>')
        label = _label(t, _step(xt))
        out.append(f'<text x="{px(t)}" y="{TOP + plot_h + 16}" text-anchor="middle">{label}</text>')
    for t in yt:
        out.append(f'<line x1="{LEFT}" y1="{py(t)}" x2="{LEFT + plot_w}" y2="{py(t)}" stroke="#e5e5e5"/>')
        label = _label(t, _step(yt))
        out.append(f'<text x="{LEFT - 6}" y="{py(t) + 4}" text-anchor="end">{label}</text>')
    out += [
        f'<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" fill="none" stroke="black"/>',
        f'<text x="{LEFT + plot_w / 2}" y="{HEIGHT - 10}" text-anchor="middle">minutes of training</text>',
        f'<text transform="translate(16 {TOP + plot_h / 2}) rotate(-90)" text-anchor="middle">bits/dim</text>',
    ]
    for values, colour, name in ((curve.train, TRAIN_COLOUR, "train"), (curve.held, HELD_COLOUR, curve.held_name)):
        points = " ".join(f"{px(m)},{py(b)}" for m, b in zip(curve.minutes, values, strict=True))
        out.append(f'<polyline class="{name}" points="{points}" fill="none" stroke="{colour}" stroke-width="1.5"/>')
    out += [
        f'<circle cx="{px(m)}" cy="{py(b)}" r="2" fill="{HELD_COLOUR}"/>'
        for m, b in zip(curve.minutes, curve.held, strict=True)
    ]
    best = min(curve.held)
    for i, (colour, text) in enumerate(
        ((HELD_COLOUR, f"{curve.held_name} (best {best:.3f})"), (TRAIN_COLOUR, "train"))
    ):
        y = TOP + 16 + 18 * i
        x = LEFT + plot_w - 170
        out.append(f'<line x1="{x}" y1="{y - 4}" x2="{x + 24}" y2="{y - 4}" stroke="{colour}" stroke-width="2"/>')
        out.append(f'<text x="{x + 30}" y="{y}">{escape(text)}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _run_name(metrics: Path) -> str:
    """``models/fashion_mnist.metrics.jsonl`` → fashion_mnist; ``runs/fm/metrics.jsonl`` → fm."""
    stem = metrics.name.removesuffix(".jsonl")
    return metrics.resolve().parent.name if stem == "metrics" else stem.removesuffix(".metrics")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m train.plot_curve", description=__doc__.split("\n")[0])
    p.add_argument("metrics", type=Path, help="a metrics.jsonl written by the trainer")
    p.add_argument("svg", type=Path, help="the picture to write")
    p.add_argument("--title", help="default: the metrics file's name")
    args = p.parse_args(argv)
    try:
        curve = read_curve(args.metrics)
        title = args.title or f"{_run_name(args.metrics)}: bits/dim during training"
        args.svg.write_text(render_svg(curve, title), encoding="utf-8")
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{args.svg}: {len(curve.minutes)} points, best {curve.held_name} {min(curve.held):.4f} bits/dim")
    return 0


if __name__ == "__main__":
    sys.exit(main())
