"""The trainer's --ema (evaluate and keep an average of the weights) and --init-from (a warm start)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from nvp_core import FlowConfig, RealNVP, load_model
from train.checkpointing import warm_start
from train.config import preset
from train.data import load_dataset
from train.evaluate import eval_bits_per_dim
from train.loop import train
from train.options import RunOptions


def tiny(**changes):
    return preset("digits-tiny").with_updates(**({"epochs": 0, "eval_limit": 64, "warmup_steps": 5} | changes))


def run(cfg, out: Path, **opts) -> dict:
    torch.set_num_threads(1)
    return train(cfg, RunOptions(out=out, progress=False, **opts))


def test_the_average_changes_what_is_evaluated_not_how_the_run_trains(tmp_path: Path) -> None:
    # 50 steps per epoch at batch 32: curve points at steps 50 and 60, the second after the first's swap.
    run(tiny(max_steps=60), tmp_path / "plain")
    run(tiny(max_steps=60, ema=0.9), tmp_path / "ema")
    plain = load_file(str(tmp_path / "plain" / "last.state.safetensors"))
    averaged = load_file(str(tmp_path / "ema" / "last.state.safetensors"))
    # The live weights, the optimiser and the batch-norm averages are bit-identical: evaluating the average
    # (with its own recalibrated batch-norm averages) put everything back.
    assert set(averaged) - set(plain) == {k for k in averaged if k.startswith("ema.")} != set()
    assert [k for k in plain if not torch.equal(plain[k], averaged[k])] == []
    assert averaged["ema.__updates__"].item() == 60

    best, meta = load_model(tmp_path / "ema" / "best.safetensors")
    last, _ = load_model(tmp_path / "ema" / "last.safetensors")
    assert meta["ema"] == 0.9
    shadow = {k[len("ema.") :]: v for k, v in averaged.items() if k.startswith("ema.") and k != "ema.__updates__"}
    records = [json.loads(line) for line in (tmp_path / "ema" / "metrics.jsonl").read_text().splitlines()]
    if meta["step"] == 60:  # the best is the last point: its weights are the saved average's
        for name, p in best.named_parameters():
            assert torch.equal(p, shadow[name]), name
    assert any(not torch.equal(a, b) for a, b in zip(best.parameters(), last.parameters(), strict=True))
    # The figure in the file is the file's own (weights and batch-norm averages as saved).
    test = load_dataset("digits").test[:64]
    assert eval_bits_per_dim(best, test) == pytest.approx(meta["test_bpd"], abs=1e-4)
    assert meta["test_bpd"] == pytest.approx(min(r["test_bpd"] for r in records))


def test_a_run_with_an_average_resumes_exactly(tmp_path: Path) -> None:
    cfg = tiny(max_steps=60, ema=0.95)
    run(cfg, tmp_path / "straight")
    assert run(cfg, tmp_path / "split", stop_after=35)["stopped"]
    run(cfg, tmp_path / "split", resume=True)
    a = load_file(str(tmp_path / "straight" / "last.state.safetensors"))
    b = load_file(str(tmp_path / "split" / "last.state.safetensors"))
    assert a.keys() == b.keys() and "ema.__updates__" in a
    assert [k for k in a if not torch.equal(a[k], b[k])] == []


def test_init_from_starts_from_the_saved_weights(tmp_path: Path) -> None:
    run(tiny(max_steps=20), tmp_path / "first")
    source, _ = load_model(tmp_path / "first" / "best.safetensors")
    cfg = tiny(max_steps=1, lr=1e-12, warmup_steps=0, init_from=str(tmp_path / "first" / "best.safetensors"))
    run(cfg, tmp_path / "second")
    warm, meta = load_model(tmp_path / "second" / "last.safetensors")
    # One step at a vanishing learning rate: the weights are the source's (to float32 rounding of Adam's step).
    for (name, a), b in zip(warm.named_parameters(), source.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-9, msg=name)
    assert meta["train_config"]["init_from"] == cfg.init_from

    other = source.config.to_dict() | {"mid_channels": source.config.mid_channels + 4}
    with pytest.raises(ValueError, match=rf"another model: mid_channels .* \(this run: {other['mid_channels']}\)"):
        warm_start(RealNVP(FlowConfig(**other)), str(tmp_path / "first" / "best.safetensors"))
