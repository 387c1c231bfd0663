"""bench.common: the CPU kind that names a committed results file, and where results go."""

from __future__ import annotations

import json
from pathlib import Path

import bench.common as common


def test_the_cpu_kind_is_the_processor_line_and_its_widest_instruction_set() -> None:
    epyc = "AMD EPYC 9B45 128-Core Processor"
    assert common.cpu_kind(epyc, {"avx2", "avx512f", "avx512_bf16"}) == "epyc-avx512bf16"
    assert common.cpu_kind(epyc, {"avx2", "fma"}) == "epyc-avx2"
    xeon = "Intel(R) Xeon(R) Platinum 8581C CPU @ 2.30GHz"
    assert common.cpu_kind(xeon, {"avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile"}) == "xeon-amx"
    assert common.cpu_kind("", set()) == "cpu-base"


def test_a_run_goes_to_the_ignored_folder_unless_saved(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(common, "RESULTS_DIR", tmp_path)
    monkeypatch.setattr(common, "LOCAL_DIR", tmp_path / "local")
    monkeypatch.setattr(common, "cpu_kind", lambda: "kind")
    local = common.write_results("thing", {"x": 1})
    assert local.parent == tmp_path / "local" and local.name.startswith("thing-")
    saved = common.write_results("thing", {"x": 2}, save=True)
    assert saved == tmp_path / "thing-kind.json" and json.loads(saved.read_text()) == {"x": 2}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["local", "thing-kind.json"]
