"""bench.quality --summarize: equal-steps results of several seeds side by side, with the mean difference."""

from __future__ import annotations

import json
from pathlib import Path

from bench.quality import summarize


def _result(folder: Path, stamp: str, seed: int, fp32: float, bf16: float, nchw: float | None) -> Path:
    res = {"args": {"seed": seed}, "steps": 400, "config": {"num_blocks": 2}, "batch": 64,
           "fp32_test_bpd": fp32, "bf16_test_bpd": bf16}  # fmt: skip
    if nchw is not None:
        res["fp32_nchw_test_bpd"] = nchw
    path = folder / f"quality-bf16-equal-steps-{stamp}.json"
    path.write_text(json.dumps(res))
    return path


def test_seeds_are_averaged_and_a_rerun_of_a_seed_replaces_the_earlier_one(tmp_path: Path) -> None:
    paths = [
        _result(tmp_path, "20260101T000000Z", 0, 3.60, 3.70, None),  # replaced by the later run of seed 0
        _result(tmp_path, "20260102T000000Z", 0, 3.60, 3.59, 3.61),
        _result(tmp_path, "20260102T010000Z", 1, 3.50, 3.53, 3.50),
    ]
    text = summarize(paths)
    # Differences -0.01 and +0.03: mean 0.01, sample stdev 0.02·√2, standard error 0.02.
    assert "bf16-fp32: mean +0.0100 ± 0.0200 (standard error, 2 seeds)" in text
    assert "mean |difference| 0.0200" in text
    assert "nchw-fp32: mean +0.0050 ± 0.0050 (standard error, 2 seeds)" in text
    assert "20260101T000000Z" not in text and text.count("quality-bf16-equal-steps-") == 2
    assert "3.5900" in text and "-0.0100" in text  # four decimals, signed differences


def test_a_saved_file_holds_every_seed_and_summarizes_alone(tmp_path: Path, monkeypatch) -> None:
    import bench.quality as quality

    monkeypatch.setattr(quality, "RESULTS_DIR", tmp_path)
    monkeypatch.setattr("bench.common.RESULTS_DIR", tmp_path)
    monkeypatch.setattr(quality, "cpu_kind", lambda: "kind")
    monkeypatch.setattr("bench.common.cpu_kind", lambda: "kind")

    def run(seed: int, bf16: float) -> dict[str, object]:
        return {"args": {"seed": seed}, "steps": 400, "config": {}, "batch": 64, "fp32_test_bpd": 3.6,
                "bf16_test_bpd": bf16}  # fmt: skip

    for seed, bf16 in ((0, 3.70), (1, 3.62), (0, 3.58)):  # the second run of seed 0 replaces the first
        path = quality.save_equal_steps(run(seed, bf16))
    assert path == tmp_path / "quality-bf16-equal-steps-kind.json"
    assert [r["bf16_test_bpd"] for r in json.loads(path.read_text())["runs"]] == [3.62, 3.58]
    assert "bf16-fp32: mean +0.0000 ± 0.0200 (standard error, 2 seeds)" in summarize([path])
