"""Two CPU processes under torchrun (gloo): the run finishes, rank 0 alone writes, and the ranks agree."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from nvp_core import load_model

ROOT = Path(__file__).resolve().parents[1]
TORCHRUN = Path(sys.executable).parent / "torchrun"


@pytest.mark.skipif(not TORCHRUN.exists(), reason="torchrun is not installed next to this Python")
def test_two_process_gloo_run(tmp_path):
    out = tmp_path / "run"
    cmd = [str(TORCHRUN), "--standalone", "--nproc_per_node=2", "-m", "train", "--preset", "digits-tiny",
           "--max-steps", "4", "--epochs", "0", "--eval-limit", "64", "--threads", "1", "--no-progress",
           "--device", "cpu", "--out", str(out)]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]

    written = sorted(p.name for p in out.iterdir())
    assert written.count("last.safetensors") == 1 and "best.safetensors" in written
    assert not [name for name in written if "rank" in name], written
    model, meta = load_model(out / "last.safetensors")
    assert meta["step"] == 4

    log = (out / "log.txt").read_text()
    assert "2 process(es)" in log
    m = re.search(r"ranks agree: max \|difference\| (\S+) \(parameters\), (\S+) \(batch-norm averages\)", log)
    assert m, log
    assert float(m.group(1)) == 0.0 and float(m.group(2)) == 0.0
    # One metrics line per evaluation, written once (by rank 0 only).
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 1
