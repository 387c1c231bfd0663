"""The load test (opt-in: ``pytest -m slow tests/test_bench_robust_load.py``): N concurrent browser sessions against
one ``streamlit run``, each doing encode, interpolate and sample R times (default 8 x 25 back to back; set
NVP_LOAD_SESSIONS / NVP_LOAD_ROUNDS, and NVP_LOAD_THINK, the mean pause in seconds before each action, to
change). Run it on an otherwise idle machine: it asserts the issue's 95th-percentile response time of 1 s."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


@pytest.mark.timeout(3600)
def test_concurrent_sessions_all_succeed_fast_without_leaking(tmp_path: Path) -> None:
    sys.path.insert(0, str(ROOT))  # bench/ is a folder of scripts, not an installed package
    from bench.load_test import CHROMIUM, run

    if not CHROMIUM.is_file():
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)")
    sessions = int(os.environ.get("NVP_LOAD_SESSIONS", "8"))
    rounds = int(os.environ.get("NVP_LOAD_ROUNDS", "25"))
    think = float(os.environ.get("NVP_LOAD_THINK", "0"))
    report = run(sessions, rounds, None, 120.0, tmp_path / "server.log", think=think)
    out = ROOT / "artifacts" / "load_test_pytest.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    assert report["failed"] == 0 and report["succeeded"] == sessions * rounds * 3, report["errors"]
    mem = report["server_rss"]
    # No leak: after the first round (models, caches and sessions warmed up), memory stays within a margin.
    assert mem["end_mb"] - mem["after_round1_mb"] < max(64.0, 0.15 * mem["after_round1_mb"]), mem
    assert report["p95_s"] < 1.0, (report["p95_s"], report["per_operation"], report["load_average_at_end"])
