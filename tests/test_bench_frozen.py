"""bench.frozen runs on a shipped model and writes what it printed: eager and frozen times (alone, beside busy
Python, from two threads) and the fidelity."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from bench import frozen

ROOT = Path(__file__).resolve().parents[1]


def test_the_benchmark_compares_eager_and_frozen(capsys: pytest.CaptureFixture[str]) -> None:
    model = ROOT / "models" / "digits.safetensors"
    if not model.is_file():
        pytest.skip("no bundled digits model")
    threads = torch.get_num_threads()
    assert frozen.main(["--model", str(model), "--repeats", "1", "--calls", "1"]) == 0
    assert torch.is_grad_enabled() and torch.get_num_threads() == threads  # the test process is left as it was
    out = capsys.readouterr().out
    written = Path(out.strip().splitlines()[-1].removeprefix("written: "))
    report = json.loads(written.read_text())
    assert [r["what"] for r in report["rows"]][:5] == [
        "decode 1",
        "decode 9",
        "decode 16",
        "encode 1",
        "encode 1 beside busy Python",
    ]
    assert all(r["eager ms"] > 0 and r["frozen ms"] > 0 for r in report["rows"])
    assert report["fidelity"]["max_grey_levels"] <= 1 and "grey levels" in out
