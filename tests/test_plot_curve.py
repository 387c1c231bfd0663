"""train.plot_curve: the learning-curve picture drawn from a metrics file, and the shipped models' pictures."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from train.plot_curve import main, nice_ticks, read_curve, render_svg

MODELS = Path(__file__).resolve().parents[1] / "models"
SVG = "{http://www.w3.org/2000/svg}"


def _write(path: Path, records: list[dict], junk: bool = True) -> Path:
    lines = [json.dumps(r) for r in records]
    if junk:
        lines.insert(1, '{"step": 5, "train_bpd": 4.0')  # a line a running trainer is still writing
        lines.insert(1, json.dumps({"step": 7, "note": "no evaluation"}))
    path.write_text("\n".join(lines) + "\n")
    return path


def _points(root: ET.Element, name: str) -> list[tuple[float, float]]:
    (line,) = [e for e in root.iter(f"{SVG}polyline") if e.get("class") == name]
    return [(float(x), float(y)) for x, y in (p.split(",") for p in line.get("points", "").split())]


RECORDS = [
    {"step": 10, "epoch": 1.0, "train_bpd": 3.6, "test_bpd": 3.5, "wall_time": 60.0},
    {"step": 20, "epoch": 2.0, "train_bpd": 3.2, "test_bpd": 3.3, "wall_time": 600.0},
    {"step": 30, "epoch": 3.0, "train_bpd": 3.0, "test_bpd": 3.1, "wall_time": 1200.0},
]


def test_the_svg_parses_and_has_one_point_per_evaluation(tmp_path: Path) -> None:
    out = tmp_path / "curve.svg"
    assert main([str(_write(tmp_path / "m.metrics.jsonl", RECORDS)), str(out)]) == 0
    root = ET.fromstring(out.read_text())
    held, train = _points(root, "test"), _points(root, "train")
    assert len(held) == len(train) == 3
    xs = [x for x, _ in held]
    assert xs == sorted(xs) and xs[0] < xs[1] < xs[2]
    # SVG's y grows downwards: a falling curve's y rises.
    assert held[0][1] < held[1][1] < held[2][1]
    assert [p[1] for p in train] != [p[1] for p in held]
    # Minutes are proportional: 1, 10 and 20 minutes.
    assert (xs[2] - xs[0]) / (xs[1] - xs[0]) == pytest.approx(19 / 9, rel=0.02)
    texts = [t.text or "" for t in root.iter(f"{SVG}text")]
    assert "minutes of training" in texts and "bits/dim" in texts
    assert any("test (best 3.100)" in t for t in texts)
    assert any(t.startswith("m:") for t in texts), "the title names the run"
    assert {"0", "5", "10", "15", "20"} <= set(texts), "x ticks in round minutes"


def test_a_run_with_a_validation_split_draws_its_validation_curve(tmp_path: Path) -> None:
    records = [{**r, "validation_bpd": r["test_bpd"] - 0.01} for r in RECORDS]
    for r in records:
        del r["test_bpd"]
    curve = read_curve(_write(tmp_path / "metrics.jsonl", records, junk=False))
    assert curve.held_name == "validation" and curve.held == pytest.approx([3.49, 3.29, 3.09])
    root = ET.fromstring(render_svg(curve, "run"))
    assert len(_points(root, "validation")) == 3


@pytest.mark.parametrize(
    ("lo", "hi", "want"),
    [(0, 500.7, [0, 100, 200, 300, 400, 500]), (2.9, 3.1, [2.9, 2.95, 3.0, 3.05, 3.1]), (4.4, 7.8, None)],
)
def test_ticks_are_round_and_inside_the_range(lo: float, hi: float, want: list[float] | None) -> None:
    ticks = nice_ticks(lo, hi)
    if want is not None:
        assert ticks == pytest.approx(want)
    assert 3 <= len(ticks) <= 9 and lo - 1e-9 <= ticks[0] and ticks[-1] <= hi + 1e-9


def test_a_file_without_evaluations_is_one_error_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "metrics.jsonl"
    empty.write_text("not json\n")
    for path in (empty, tmp_path / "missing.jsonl"):
        assert main([str(path), str(tmp_path / "out.svg")]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1
    assert not (tmp_path / "out.svg").exists()


@pytest.mark.parametrize("metrics", sorted(MODELS.glob("*.metrics.jsonl")), ids=lambda p: p.name)
def test_the_shipped_curve_pictures_are_drawn_from_their_metrics(metrics: Path) -> None:
    name = metrics.name.removesuffix(".metrics.jsonl")
    svg = MODELS / f"{name}.curve.svg"
    want = render_svg(read_curve(metrics), f"{name}: bits/dim during training")
    assert svg.is_file() and svg.read_text() == want, f"redraw it: python -m train.plot_curve {metrics} {svg}"
    assert f"![{name} learning curve]({svg.name})" in (MODELS / "README.md").read_text()
