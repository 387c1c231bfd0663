"""The trainer end to end on the tiny digits preset: it learns, writes loadable checkpoints, and resumes exactly."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from nvp_core import RealNVP, load_model
from train.config import preset
from train.data import load_dataset
from train.evaluate import eval_bits_per_dim
from train.loop import train
from train.options import RunOptions


def tiny(**changes):
    cfg = preset("digits-tiny").with_updates(epochs=0, eval_limit=64, **changes)
    return cfg


def run(cfg, out: Path, **opts) -> dict:
    torch.set_num_threads(1)
    return train(cfg, RunOptions(out=out, progress=False, **opts))


def test_digits_tiny_learns_and_writes_a_loadable_checkpoint(tmp_path):
    cfg = tiny(max_steps=40, warmup_steps=5)
    splits = load_dataset("digits")
    torch.manual_seed(cfg.seed)
    untrained = RealNVP(cfg.flow_config(1, 8))
    before = eval_bits_per_dim(untrained, splits.test[:64])

    run(cfg, tmp_path)

    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert records and records[-1]["step"] == 40
    assert set(records[-1]) >= {"step", "epoch", "train_bpd", "test_bpd", "lr", "images_per_s", "wall_time"}
    assert records[-1]["test_bpd"] < before - 0.5, (before, records)

    model, meta = load_model(tmp_path / "best.safetensors")
    assert meta["dataset"] == "digits" and meta["class_names"] == [str(i) for i in range(10)]
    assert meta["test_bpd"] == pytest.approx(records[-1]["test_bpd"])
    assert eval_bits_per_dim(model, splits.test[:64]) == pytest.approx(meta["test_bpd"], abs=1e-4)
    x = model.sample(8, temperature=0.8, generator=torch.Generator().manual_seed(0))
    assert x.shape == (8, 1, 8, 8) and torch.isfinite(x).all()
    assert (tmp_path / "samples" / "latest.png").is_file()
    assert (tmp_path / "last.state.safetensors").is_file() and (tmp_path / "last.state.json").is_file()


def test_resume_reaches_the_same_state_as_an_uninterrupted_run(tmp_path):
    # 50 steps per epoch at batch 32: the interruption (step 35) and the end (step 60) straddle an epoch end.
    cfg = tiny(max_steps=60, warmup_steps=10)
    run(cfg, tmp_path / "straight")
    stopped = run(cfg, tmp_path / "split", stop_after=35)
    assert stopped["stopped"] and stopped["step"] == 35
    run(cfg, tmp_path / "split", resume=True)

    a = load_file(str(tmp_path / "straight" / "last.state.safetensors"))
    b = load_file(str(tmp_path / "split" / "last.state.safetensors"))
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, different[:5]
    ja = json.loads((tmp_path / "straight" / "last.state.json").read_text())["counters"]
    jb = json.loads((tmp_path / "split" / "last.state.json").read_text())["counters"]
    assert (
        (ja["step"], ja["epoch"], ja["batch_in_epoch"])
        == (jb["step"], jb["epoch"], jb["batch_in_epoch"])
        == (60, 1, 10)
    )


def test_a_run_folder_of_an_older_trainer_resumes(tmp_path):
    """Its state names the channels ``channels`` (before TrainConfig derived from FlowConfig)."""
    cfg = tiny(max_steps=6, warmup_steps=2)
    run(cfg, tmp_path / "straight")
    run(cfg, tmp_path / "old", stop_after=3)
    path = tmp_path / "old" / "last.state.json"
    state = json.loads(path.read_text())
    recipe = state["counters"]["train_config"]
    recipe["channels"] = recipe.pop("in_channels")
    path.write_text(json.dumps(state))
    run(cfg, tmp_path / "old", resume=True)
    a = load_file(str(tmp_path / "straight" / "last.state.safetensors"))
    b = load_file(str(tmp_path / "old" / "last.state.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_resume_refuses_a_different_recipe(tmp_path):
    run(tiny(max_steps=3), tmp_path, stop_after=2)
    with pytest.raises(ValueError, match="settings differ"):
        run(tiny(max_steps=3, lr=5e-4), tmp_path, resume=True)


def test_resume_may_switch_on_the_weight_average(tmp_path):
    run(tiny(max_steps=6), tmp_path, stop_after=4)
    run(tiny(max_steps=6, ema=0.9), tmp_path, resume=True)
    state = json.loads((tmp_path / "last.state.json").read_text())
    assert state["counters"]["step"] == 6 and state["counters"]["train_config"]["ema"] == 0.9
    # The average began at the resume: two updates since then.
    tensors = load_file(tmp_path / "last.state.safetensors")
    assert int(tensors["ema.__updates__"].item()) == 2


def test_non_finite_steps_are_skipped_then_stop_the_run(tmp_path, monkeypatch):
    import train.loop as loop

    monkeypatch.setattr(loop, "loss_bits_per_dim", lambda net, model, x: net(x)[1].mean() * math.inf)
    with pytest.raises(loop.TrainingError, match="non-finite steps in a row"):
        run(tiny(max_steps=100), tmp_path)
    log = (tmp_path / "log.txt").read_text()
    skipped = [int(m) for m in re.findall(r"(\d+) non-finite loss or gradient; skipped", log)]
    # Counted on the device, read every --log-every steps: the first read that sees MAX_BAD_STEPS stops it.
    assert loop.MAX_BAD_STEPS <= sum(skipped) < loop.MAX_BAD_STEPS + tiny(max_steps=100).log_every, log


def test_lr_schedule_warms_up_then_anneals():
    from train.schedule import budget_progress, learning_rate

    lrs = [learning_rate(1e-3, s, 10, budget_progress(s, 0.0, 100, 0.0), "cosine", 0.01) for s in range(100)]
    assert lrs[0] == pytest.approx(1e-4) and max(lrs) <= 1e-3
    assert lrs[9] > lrs[50] > lrs[99] >= 1e-5 - 1e-12
    assert budget_progress(0, 30.0, 0, 60.0) == pytest.approx(0.5)


def test_state_file_alone_is_a_consistent_resume_point(tmp_path, monkeypatch):
    import os

    import train.state as state

    model = RealNVP(preset("digits-tiny").flow_config(1, 8))
    opt = torch.optim.Adam(model.parameters())
    rng = {"torch": torch.get_rng_state()}
    state.save_state(tmp_path, model, opt, rng, {"step": 1})
    real_replace = os.replace

    def die_before_json(src, dst):
        if str(dst).endswith(".json"):
            raise KeyboardInterrupt  # a kill between the two renames
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", die_before_json)
    with pytest.raises(KeyboardInterrupt):
        state.save_state(tmp_path, model, opt, rng, {"step": 2})
    monkeypatch.setattr(os, "replace", real_replace)
    _, _, counters = state.load_state(tmp_path)
    assert counters["step"] == 2 and torch.equal(counters["rng"]["torch"], rng["torch"])
    assert not list(tmp_path.glob(".*.tmp"))


def test_eval_minutes_adds_curve_points_between_epoch_ends(tmp_path, monkeypatch):
    # A fake clock that advances 1 s per reading, so "every 0.1 minutes" falls between the epoch's steps.
    clock = iter(range(10**6))
    monkeypatch.setattr("train.job.time.time", lambda: float(next(clock)))
    run(tiny(max_steps=30, warmup_steps=5), tmp_path, eval_minutes=0.1)
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in records]
    assert len(steps) >= 3 and steps == sorted(set(steps)) and steps[-1] == 30, steps
    assert all(math.isfinite(r["test_bpd"]) for r in records)
    _, meta = load_model(tmp_path / "best.safetensors")
    assert meta["test_bpd"] == pytest.approx(min(r["test_bpd"] for r in records))


def test_resume_keeps_the_fast_path_the_run_trained_with(tmp_path, monkeypatch):
    from nvp_core import fastpath, fastpath_choice

    monkeypatch.setenv(fastpath.ENV_OVERRIDE, "fp32-cl")
    run(tiny(max_steps=12, warmup_steps=2), tmp_path, stop_after=6)
    assert json.loads((tmp_path / "last.state.json").read_text())["counters"]["fast_path"] == "fp32-cl"
    # A new measurement on the resumed invocation would pick another path; the run keeps its own.
    monkeypatch.delenv(fastpath.ENV_OVERRIDE)
    other = fastpath.Choice(fastpath.FastPath(None, False), "test")
    monkeypatch.setattr(fastpath_choice, "choose", lambda *a, **k: other)
    run(tiny(max_steps=12, warmup_steps=2), tmp_path, resume=True)
    log = (tmp_path / "log.txt").read_text().splitlines()
    assert "fast path fp32-cl" in [line for line in log if "resumed" in line][0]
    assert json.loads((tmp_path / "last.state.json").read_text())["counters"]["fast_path"] == "fp32-cl"


def test_a_run_kept_without_its_best_checkpoint_resumes_and_makes_one(tmp_path, monkeypatch):
    from train import state

    # What a paused run committed to the repository holds: the resume state, not every checkpoint.
    cfg = tiny(max_steps=8, warmup_steps=2, bn_recalibration_batches=2)
    run(cfg, tmp_path)
    (tmp_path / "best.safetensors").unlink()
    (tmp_path / "last.safetensors").unlink()
    real_load = state.load_state

    def stored_best_unbeatable(out):  # a stored best that the continuation cannot beat
        model_sd, optim_sd, counters = real_load(out)
        return model_sd, optim_sd, {**counters, "best_bpd": 0.0}

    monkeypatch.setattr(state, "load_state", stored_best_unbeatable)
    result = run(cfg.with_updates(max_steps=12), tmp_path, resume=True)
    assert (tmp_path / "best.safetensors").is_file() and math.isfinite(result["best_bpd"])
    assert "bn_recalibration" in result


def test_recalibration_weighs_the_last_checkpoint_against_the_best(tmp_path, monkeypatch):
    """When training went on after the best checkpoint, the last one is recalibrated over the same batches too,
    and whichever scores lowest (as it was, or recalibrated) becomes best.safetensors, with its score."""
    from train import state

    cfg = tiny(max_steps=8, warmup_steps=2, bn_recalibration_batches=2)
    run(cfg, tmp_path)
    _, first = load_model(tmp_path / "best.safetensors")
    real_load = state.load_state

    def stored_best_unbeatable(out):  # the continuation writes no new best: best stays at step 8
        model_sd, optim_sd, counters = real_load(out)
        return model_sd, optim_sd, {**counters, "best_bpd": 0.0}

    monkeypatch.setattr(state, "load_state", stored_best_unbeatable)
    result = run(cfg.with_updates(max_steps=14), tmp_path, resume=True)
    assert result["bn_recalibration_last"]["step"] == 14
    scores = {
        "best": first["test_bpd"],
        "best recalibrated": result["bn_recalibration"]["after"],
        "last recalibrated": result["bn_recalibration_last"]["after"],
    }
    model, meta = load_model(tmp_path / "best.safetensors")
    assert meta["test_bpd"] == min(scores.values()), (scores, meta["test_bpd"])
    assert meta["step"] == (14 if min(scores, key=scores.get) == "last recalibrated" else 8)
    test_images = load_dataset("digits").test[:64]
    assert abs(eval_bits_per_dim(model, test_images) - meta["test_bpd"]) < 1e-9


def test_a_validation_split_chooses_the_checkpoint_and_the_test_set_is_never_scored(tmp_path, monkeypatch):
    import train.curve_point as curve_point
    import train.finish as finish

    cfg = tiny(max_steps=30, warmup_steps=5, validation_images=100, bn_recalibration_batches=2)
    splits = load_dataset("digits", validation_images=100)
    scored: list[torch.Tensor] = []
    real = curve_point.eval_bits_per_dim

    def spy(model, images, *args):
        scored.append(images)
        return real(model, images, *args)

    monkeypatch.setattr(curve_point, "eval_bits_per_dim", spy)  # the curve points
    monkeypatch.setattr(finish, "eval_bits_per_dim", spy)  # the batch-norm recalibration at the end
    run(cfg, tmp_path)

    assert scored and all(torch.equal(x, splits.validation[:64]) for x in scored)
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert "validation_bpd" in records[-1] and "test_bpd" not in records[-1]
    model, meta = load_model(tmp_path / "best.safetensors")
    assert meta["validation_images"] == 64 and "test_bpd" not in meta
    assert meta["validation_bpd"] == pytest.approx(real(model, splits.validation[:64]), abs=1e-4)
    assert "validation images" in (tmp_path / "log.txt").read_text()


def test_a_run_without_a_validation_split_says_so(tmp_path):
    run(tiny(max_steps=5, warmup_steps=1), tmp_path)
    _, meta = load_model(tmp_path / "best.safetensors")
    assert meta["validation_images"] == 0 and "test_bpd" in meta
    assert "no validation split" in (tmp_path / "log.txt").read_text()
