"""The class load test's protocol-level client (``bench/class_load.py``) against a real ``streamlit run`` of the
app: one session does one operation of each kind (encode, interpolate, sample) and each counts as a success
only when the page really showed the new result. No timing is asserted; the figures are the benchmark's."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.class_load import run
from bench.serving import OPERATIONS, fixture_models

pytestmark = pytest.mark.slow


@pytest.mark.timeout(600)
def test_one_protocol_session_completes_each_operation(tmp_path: Path) -> None:
    models = fixture_models(tmp_path / "models")
    report = run(1, 1, 0.0, 0.0, models, 120.0, tmp_path / "server.log", rerun_timing=True)
    assert report["failed"] == 0 and report["succeeded"] == len(OPERATIONS), report["errors"]
    # The server timed each rerun's script thread (bench/hooks): the opening and page changes run whole pages, the
    # three widget changes run fragments.
    timing = report["rerun_timing_ms"]
    assert timing["page"]["runs"] >= 1 + len(OPERATIONS) and timing["fragment"]["runs"] >= len(OPERATIONS), timing
    for t in timing.values():
        assert 0 < t["cpu"] <= 1.05 * t["wall"] and t["core_wait"] >= 0, timing
    for op in OPERATIONS:
        assert report["per_operation"][op]["n"] == 1, report["per_operation"]
    assert report["per_operation"]["page change"]["n"] == len(OPERATIONS)
    assert report["reruns_in_rounds"] == 2 * len(OPERATIONS)
    assert report["cpu_s"]["server_rounds"] > 0
    assert report["machine"]["cpu"] and report["load_average_at_end"]


@pytest.mark.timeout(600)
def test_a_playground_session_trains_live_beside_the_class(tmp_path: Path) -> None:
    models = fixture_models(tmp_path / "models")
    report = run(1, 1, 0.5, 0.0, models, 120.0, tmp_path / "server.log", trainers=1)
    assert report["failed"] == 0 and report["succeeded"] == len(OPERATIONS), report["errors"]
    tr = report["trainers"]
    assert tr["failed"] == 0, tr["errors"]
    assert tr["live_updates"] >= 2 and tr["updates_that_trained"] >= 1
    assert tr["steps_min_median_max"][-1] > 0  # the status line showed training steps
