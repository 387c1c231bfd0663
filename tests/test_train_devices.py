"""What a GPU run depends on, checked on the CPU as far as a CPU can show it (issue 12): the process group's
backend per device, sampling with a CPU generator on a model elsewhere, skipping a non-finite step on the
device without asking the host, TF32 off in evaluation, and what ``python -m train`` says when it ends."""

from __future__ import annotations

import math
from datetime import timedelta

import pytest
import torch

import train.distributed as distributed
from nvp_core import RealNVP
from train.__main__ import main
from train.config import preset
from train.evaluate import eval_float32
from train.loop import BufferGuard, StepTally, build_optimizer, step_on_device
from train.loop import train as run_training
from train.options import RunOptions

TINY = ["--preset", "digits-tiny", "--epochs", "0", "--eval-limit", "32", "--threads", "1", "--no-progress"]


def tiny_model() -> RealNVP:
    torch.manual_seed(0)
    return RealNVP(preset("digits-tiny").flow_config(1, 8))


# --- 1. collectives: CPU tensors never reach NCCL ---------------------------------------------------------
def test_gpu_jobs_get_a_backend_per_device_and_a_timeout(monkeypatch):
    calls: dict = {}
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv(distributed.TIMEOUT_ENV, "42")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", lambda i: calls.setdefault("device", i))
    monkeypatch.setattr(distributed.dist, "is_initialized", lambda: False)
    monkeypatch.setattr(distributed.dist, "init_process_group", lambda **kw: calls.update(kw))

    info = distributed.init_distributed("cuda")
    assert (info.rank, info.world, info.local_rank) == (1, 2, 1)
    assert calls["backend"] == "cpu:gloo,cuda:nccl" and calls["device"] == 1  # the GPU is taken before init
    assert calls["timeout"] == timedelta(seconds=42)
    distributed.init_distributed("cpu")
    assert calls["backend"] == "gloo"


def test_more_processes_than_gpus_is_a_message(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ValueError, match="needs GPU 1 .* 1 GPU"):
        distributed.init_distributed("cuda")


def test_cuda_without_a_gpu_is_a_message_even_under_torchrun(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WORLD_SIZE", "2")  # as under torchrun: the message must come before any process group
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "run"
    assert main([*TINY, "--max-steps", "2", "--device", "cuda", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "no CUDA GPU" in err and "Traceback" not in err, err
    assert not out.exists(), "a run that never started leaves no folder behind"


def test_an_unexpected_error_is_a_message_and_exit_1(tmp_path, monkeypatch, capsys):
    import train.loop as loop

    def boom(net, model, x):
        raise RuntimeError("something nobody expected")

    monkeypatch.setattr(loop, "loss_bits_per_dim", boom)
    assert main([*TINY, "--max-steps", "2", "--out", str(tmp_path / "run")]) == 1
    err = capsys.readouterr().err
    assert "unexpected RuntimeError: something nobody expected" in err and "Traceback" not in err, err
    assert "NVP_TRACEBACK=1" in err


# --- 4. sampling with a generator on another device -------------------------------------------------------
def test_sample_latents_draws_on_the_generators_device_then_moves():
    model = tiny_model()
    ref = model.sample_latents(3, 0.7, torch.Generator().manual_seed(5))
    on_meta = tiny_model().to("meta")  # stands in for a CUDA model: a device the CPU generator cannot draw on
    zs = on_meta.sample_latents(3, 0.7, torch.Generator().manual_seed(5))
    assert [z.device.type for z in zs] == ["meta"] * model.num_levels
    assert [tuple(z.shape) for z in zs] == [tuple(z.shape) for z in ref]
    again = model.sample_latents(3, 0.7, torch.Generator().manual_seed(5))
    assert all(torch.equal(a, b) for a, b in zip(ref, again, strict=True))
    assert on_meta.sample_latents(2)[0].device.type == "meta"  # no generator: drawn on the model's device


# --- 6. a non-finite step skipped on the device, without a host sync --------------------------------------
def test_fused_step_skips_a_non_finite_batch_and_restores_the_batchnorm_averages():
    model = tiny_model().train()
    opt = build_optimizer(model, preset("digits-tiny"), fused=True)
    guard, tally, params = BufferGuard(model), StepTally(torch.device("cpu")), list(model.parameters())
    x = torch.rand(16, 1, 8, 8)
    poisoned = x.clone()
    poisoned[0, 0, 0, 0] = math.nan  # NaN reaches the loss, the gradients and the batch-norm averages

    assert step_on_device(model, model, x, opt, guard, params, 100.0)[1]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    moments = {i: {k: v.clone() for k, v in s.items()} for i, s in enumerate(opt.state.values())}
    tally.add(*step_on_device(model, model, poisoned, opt, guard, params, 100.0))
    after = model.state_dict()
    changed = [k for k in before if not torch.equal(before[k], after[k]) and "num_batches" not in k]
    assert not changed, changed[:5]
    for i, s in enumerate(opt.state.values()):
        assert all(torch.equal(moments[i][k], v) for k, v in s.items()), i  # moments and step count unchanged
    tally.add(*step_on_device(model, model, x, opt, guard, params, 100.0))
    loss_sum, good, skipped, worst = tally.read()
    assert (good, skipped, worst) == (1, 1, 1) and math.isfinite(loss_sum)
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_non_finite_steps_are_skipped_counted_and_stop_a_diverging_run(tmp_path, monkeypatch):
    import train.loop as loop

    real = loop.loss_bits_per_dim
    calls = {"n": 0}

    def every_third_nan(net, model, x):
        calls["n"] += 1
        value = real(net, model, x)
        return value * math.nan if calls["n"] % 3 == 0 else value

    torch.set_num_threads(1)
    cfg = preset("digits-tiny").with_updates(epochs=0, max_steps=9, eval_limit=32, log_every=5)
    monkeypatch.setattr(loop, "loss_bits_per_dim", every_third_nan)
    result = run_training(cfg, RunOptions(out=tmp_path / "a", progress=False))
    assert result["step"] == 9  # a skipped step counts as a step: the host does not wait for the flag
    log = (tmp_path / "a" / "log.txt").read_text()
    assert "steps 1..5: 1 non-finite loss or gradient; skipped" in log and "steps 6..9: 2 non-finite" in log, log
    assert math.isfinite(result["best_bpd"])

    monkeypatch.setattr(loop, "loss_bits_per_dim", lambda net, model, x: real(net, model, x) * math.inf)
    with pytest.raises(loop.TrainingError, match="non-finite steps in a row"):
        run_training(cfg.with_updates(max_steps=60), RunOptions(out=tmp_path / "b", progress=False))


# --- 8. evaluation is float32, not TF32 --------------------------------------------------------------------
def test_evaluation_turns_tf32_off_and_restores_it():
    model = tiny_model()
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    try:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        with eval_float32(model):
            assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


# --- issue 13: what the trainer says at the end -------------------------------------------------------------
def test_a_finished_run_says_where_it_is_and_how_to_open_it(tmp_path, capsys):
    out = tmp_path / "run"
    threads = torch.get_num_threads()
    try:
        assert main([*TINY, "--max-steps", "2", "--out", str(out)]) == 0
        said = capsys.readouterr().out
        assert f"run saved in {out.resolve()}" in said and f"NVP_MODELS_DIR={out.resolve()} nvp-app" in said, said
        assert main([*TINY, "--max-steps", "2", "--out", str(out), "--resume"]) == 0
        said = capsys.readouterr().out
        assert "nothing left to do" in said and "--resume" in said, said
    finally:
        torch.set_num_threads(threads)


def test_a_run_refused_for_bad_input_leaves_no_folder(tmp_path, capsys):
    out = tmp_path / "runs" / "new"
    assert main(["--dataset", "nope", "--out", str(out)]) == 2
    assert "unknown dataset" in capsys.readouterr().err
    assert not out.exists()
    kept = tmp_path / "mine"
    kept.mkdir()
    assert main(["--dataset", "nope", "--out", str(kept)]) == 2
    assert kept.is_dir(), "a folder the user made is never removed"


def _edit_counters(out, edit) -> None:
    """Rewrites the counters inside a resume state (the JSON in the tensors file's header)."""
    import json

    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    path = out / "last.state.safetensors"
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    doc = json.loads(meta["state"])
    edit(doc["counters"])
    save_file(load_file(str(path)), str(path), metadata={**meta, "state": json.dumps(doc)})


def test_a_run_whose_noise_was_drawn_on_a_gpu_resumes_only_on_a_gpu(tmp_path):
    cfg = preset("digits-tiny").with_updates(epochs=0, max_steps=4, eval_limit=32)
    torch.set_num_threads(1)
    run_training(cfg, RunOptions(out=tmp_path, progress=False, stop_after=2))

    def as_a_gpu_run(counters: dict) -> None:
        assert counters["noise_device"] == "cpu" and counters["world_size"] == 1
        counters["noise_device"] = "cuda"

    _edit_counters(tmp_path, as_a_gpu_run)
    with pytest.raises(ValueError, match="drew its noise on cuda; resume it with --device cuda"):
        run_training(cfg, RunOptions(out=tmp_path, progress=False, resume=True))


def test_a_state_written_before_world_size_was_saved_resumes_as_one_cpu_process(tmp_path):
    cfg = preset("digits-tiny").with_updates(epochs=0, max_steps=4, eval_limit=32)
    torch.set_num_threads(1)
    run_training(cfg, RunOptions(out=tmp_path, progress=False, stop_after=2))
    _edit_counters(tmp_path, lambda counters: [counters.pop(k) for k in ("world_size", "noise_device")])
    assert run_training(cfg, RunOptions(out=tmp_path, progress=False, resume=True))["step"] == 4
