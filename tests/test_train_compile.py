"""The trainer's ``--compile``: off by default (an older trainer's ``auto`` reads as off), the clear errors without
a compiler and for a failed first compiled step, and a real compiled run that evaluates eagerly and resumes."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from flow_helpers import nontrivial_model

import train.compiling as compiling
from nvp_core import FlowConfig
from nvp_core.resnet import ResNet
from train.config import TrainConfig, preset
from train.loop import TrainingError, train
from train.options import RunOptions

# A step budget (not a time one) keeps the learning-rate schedule, and so the run, deterministic.
LONG = 10_000_000


def tiny(**changes):
    return preset("digits-tiny").with_updates(epochs=0, eval_limit=64, warmup_steps=2, **changes)


def run(cfg, out: Path, **opts) -> dict:
    torch.set_num_threads(1)
    return train(cfg, RunOptions(out=out, progress=False, **opts))


def log_of(out: Path) -> str:
    return (out / "log.txt").read_text()


def counters(out: Path) -> dict:
    return json.loads((out / "last.state.json").read_text())["counters"]


def test_compiling_is_off_by_default_and_an_older_auto_reads_as_off(tmp_path):
    assert TrainConfig().compile == "off"
    saved = preset("digits-tiny").to_dict() | {"compile": "auto"}  # what the trainer's old default saved
    assert TrainConfig.from_dict(saved).compile == "off"
    run(tiny(max_steps=5), tmp_path)
    assert "compil" not in log_of(tmp_path) and counters(tmp_path)["compiled"] is False


def test_compiler_problem_names_a_missing_compiler():
    # In a process of its own: inductor keeps failed kernel builds, which would break later compiles here.
    code = (
        "import torch._inductor.config as c; c.cpp.cxx = ('/nonexistent/c++',); "
        "from train.compiling import compiler_problem; print(compiler_problem('cpu'))"
    )
    root = Path(__file__).resolve().parents[1]
    r = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "C++ compiler" in r.stdout, (r.stdout, r.stderr[-2000:])


def test_compile_on_without_a_compiler_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(compiling, "compiler_problem", lambda device: "no C++ compiler (test)")
    with pytest.raises(ValueError, match=r"--compile on: torch.compile does not work here \(no C\+\+ compiler"):
        run(tiny(max_steps=5, compile="on"), tmp_path)


def _compile_that_passes(model):
    """Stands in for compile_nets without compiling: each s,t ResNet's call goes through a wrapper."""
    for m in model.modules():
        if isinstance(m, ResNet):
            m._compiled_call_impl = m._call_impl
    return model


def test_a_compiled_run_resumes_compiled_or_says_why_not(tmp_path, monkeypatch):
    monkeypatch.setattr(compiling, "compiler_problem", lambda device: None)
    monkeypatch.setattr(compiling, "compile_nets", _compile_that_passes)
    run(tiny(max_steps=LONG, compile="on"), tmp_path, stop_after=3)
    assert counters(tmp_path)["compiled"] is True

    # Resumed with --compile off (the same function), it trains on eagerly and the state says so.
    run(tiny(max_steps=LONG, compile="off"), tmp_path, resume=True, stop_after=2)
    assert counters(tmp_path)["compiled"] is False and counters(tmp_path)["step"] == 5
    # Resumed with --compile on where no compiler is: the clear error, and the saved state is kept.
    monkeypatch.setattr(compiling, "compiler_problem", lambda device: "no C++ compiler (test)")
    with pytest.raises(ValueError, match="--compile on: torch.compile does not work here"):
        run(tiny(max_steps=LONG, compile="on"), tmp_path, resume=True, stop_after=2)
    assert counters(tmp_path)["step"] == 5


def _compile_that_fails(model):
    """Stands in for compile_nets: the last s,t ResNet raises when called, as a broken inductor would, after
    the layers before it have run (and updated their batch-norm averages)."""

    def broken(*args, **kwargs):
        raise RuntimeError("inductor broke (test)")

    nets = [m for m in model.modules() if isinstance(m, ResNet)]
    for m in nets:
        m._compiled_call_impl = None
    nets[-1]._compiled_call_impl = broken
    return model


def test_a_failed_first_compiled_step_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(compiling, "compiler_problem", lambda device: None)
    monkeypatch.setattr(compiling, "compile_nets", _compile_that_fails)
    with pytest.raises(TrainingError, match="torch.compile failed in the first compiled step"):
        run(tiny(max_steps=5, compile="on"), tmp_path)


def test_compiled_run_evaluates_eagerly_and_resumes_compiled(tmp_path, monkeypatch):
    from torch._dynamo.utils import counters as dynamo_counters

    import train.curve_point as curve_point

    if (problem := compiling.compiler_problem("cpu")) is not None:  # e.g. no C++ compiler on this machine
        pytest.skip(f"torch.compile does not work here: {problem}")

    torch._dynamo.reset()
    graphs_during_eval: list[int] = []
    real_eval = curve_point.eval_bits_per_dim

    def counting_eval(*args, **kwargs):
        before = dynamo_counters["stats"]["unique_graphs"]
        out = real_eval(*args, **kwargs)
        graphs_during_eval.append(dynamo_counters["stats"]["unique_graphs"] - before)
        return out

    monkeypatch.setattr(curve_point, "eval_bits_per_dim", counting_eval)
    try:
        run(tiny(max_steps=8, compile="on"), tmp_path, stop_after=4)
        assert counters(tmp_path)["compiled"] is True
        assert dynamo_counters["stats"]["unique_graphs"] > 0  # the training steps did compile
        result = run(tiny(max_steps=8, compile="on"), tmp_path, resume=True)
    finally:
        torch._dynamo.reset()
    log = log_of(tmp_path)
    assert log.count("compiling the s,t ResNets (--compile on)") == 2
    assert log.count("first compiled step (compiling included)") == 2
    assert graphs_during_eval and not any(graphs_during_eval)  # evaluation compiled nothing
    assert result["step"] == 8 and math.isfinite(result["best_bpd"])
    assert counters(tmp_path)["compiled"] is True


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("gcc") is None and shutil.which("cc") is None, reason="inductor needs a C compiler")
def test_compiled_path_equals_eager() -> None:
    cfg = FlowConfig(in_channels=1, image_size=8, num_scales=2, mid_channels=8, num_blocks=2)
    model = nontrivial_model(cfg, dtype=torch.float32)
    x = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(3)) * 0.9 + 0.05
    with torch.no_grad():
        zs_ref, ld_ref = model(x)
        keys = list(model.state_dict())
        compiling.compile_nets(model)
        zs, ld = model(x)
        x_back = model.inverse(zs)
    assert list(model.state_dict()) == keys  # compiling in place keeps the checkpoint format
    torch.testing.assert_close(ld, ld_ref, rtol=1e-5, atol=1e-3)
    for a, b in zip(zs, zs_ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    assert (x_back - x).abs().max() < 1e-5
