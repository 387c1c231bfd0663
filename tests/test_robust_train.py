"""Faults in training: SIGKILL mid-epoch and mid-write (real subprocesses), a full disk, non-finite losses.

Invariants: every ``.safetensors`` file in a run folder loads at all times; a kill loses at most the work
since the last completed save (here one step: ``--checkpoint-minutes 1e-6`` saves after every step); a
killed and resumed run ends in exactly the state of an uninterrupted one; a failure says why.
"""

from __future__ import annotations

import errno
import json
import math
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from nvp_core import load_model
from train.__main__ import main
from train.config import preset
from train.state import load_state
from train.step_checks import MAX_BAD_STEPS

ROOT = Path(__file__).resolve().parents[1]
LOG_EVERY = preset("digits-tiny").log_every  # the tally of skipped steps is read that often
STEPS = 12  # digits-tiny: 50 steps per epoch, so every interruption below is mid-epoch
ARGV = ["--preset", "digits-tiny", "--epochs", "0", "--max-steps", str(STEPS), "--eval-limit", "32",
        "--threads", "1", "--no-progress", "--checkpoint-minutes", "1e-6"]  # fmt: skip

# Runs ``python -m train`` with faults injected from the environment (ROBUST_FAULT, JSON):
#   kill_at_loss=N            SIGKILL at the N-th training step of this invocation (between saves)
#   kill_in_state_write=K     the K-th resume-state write leaves half a temporary file, then SIGKILL
#   kill_before_state_json=K  SIGKILL between the K-th state's two renames (tensors renamed, JSON not yet)
# Each completed save_state appends its step to ROBUST_SAVES.
_RUNNER = r"""
import json, os, runpy, signal, sys
spec = json.loads(os.environ.get("ROBUST_FAULT", "{}"))
import train.loop as loop, train.state as state

def die():
    sys.stdout.flush(); sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)

calls = {"loss": 0, "write": 0, "json": 0}
real_loss, real_write, real_replace = loop.loss_bits_per_dim, state.save_file, os.replace
real_save_state = state.save_state

def loss(net, model, x):
    calls["loss"] += 1
    if calls["loss"] == spec.get("kill_at_loss"):
        die()
    return real_loss(net, model, x)

def write(tensors, path, metadata=None):
    calls["write"] += 1
    real_write(tensors, path, metadata=metadata)
    if calls["write"] == spec.get("kill_in_state_write"):
        os.truncate(path, os.path.getsize(path) // 2)
        die()

def replace(src, dst):
    if str(dst).endswith("last.state.json"):
        calls["json"] += 1
        if calls["json"] == spec.get("kill_before_state_json"):
            die()
    return real_replace(src, dst)

def save_state(out, model, optimizer, rng, counters, *a, **k):
    real_save_state(out, model, optimizer, rng, counters, *a, **k)
    with open(os.environ["ROBUST_SAVES"], "a") as f:
        f.write(f"{counters['step']}\n")

loop.loss_bits_per_dim, state.save_file, os.replace, state.save_state = loss, write, replace, save_state
sys.argv = ["python -m train", *sys.argv[1:]]
runpy.run_module("train", run_name="__main__", alter_sys=True)
"""


def _run(out: Path, fault: dict, resume: bool) -> tuple[subprocess.CompletedProcess, list[int]]:
    saves = out.parent / f"{out.name}.saves"
    saves.unlink(missing_ok=True)
    env = {**os.environ, "ROBUST_FAULT": json.dumps(fault), "ROBUST_SAVES": str(saves), "OMP_NUM_THREADS": "1"}
    argv = [*ARGV, "--out", str(out), *(["--resume"] if resume else [])]
    proc = subprocess.run(
        [sys.executable, "-c", _RUNNER, *argv], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    steps = [int(s) for s in saves.read_text().split()] if saves.exists() else []
    return proc, steps


def _assert_every_file_loads(out: Path) -> int:
    """Every .safetensors in the run folder loads; returns the resume state's step."""
    files = sorted(out.glob("*.safetensors"))
    assert files, f"no checkpoint in {out}"
    for f in files:
        if f.name.endswith(".state.safetensors"):
            load_file(str(f))
        else:
            model, _ = load_model(f)
            assert all(torch.isfinite(p).all() for p in model.parameters())
    _, _, counters = load_state(out)
    return int(counters["step"])


def _state(out: Path) -> tuple[dict[str, torch.Tensor], dict]:
    tensors = load_file(str(out / "last.state.safetensors"))
    counters = json.loads((out / "last.state.json").read_text())["counters"]
    return tensors, counters


@pytest.mark.timeout(900)
def test_sigkill_mid_epoch_and_mid_write_then_resume_matches_an_uninterrupted_run(tmp_path: Path) -> None:
    threads = torch.get_num_threads()
    try:
        assert main([*ARGV, "--out", str(tmp_path / "straight")]) == 0
    finally:
        torch.set_num_threads(threads)
    out = tmp_path / "killed"

    # 1. SIGKILL in the middle of step 6: steps 1..5 were saved; nothing that completed is lost.
    proc, saved = _run(out, {"kill_at_loss": 6}, resume=False)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert saved == [1, 2, 3, 4, 5], saved
    assert _assert_every_file_loads(out) == 5

    # 2. Resumed, then SIGKILL while the third resume state is half written: steps 6, 7 survive.
    proc, saved = _run(out, {"kill_in_state_write": 3}, resume=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert saved == [6, 7], saved
    assert _assert_every_file_loads(out) == 7
    assert list(out.glob(".last.state.safetensors.*.tmp")), "the kill should leave the half-written file behind"

    # 3. Resumed, then SIGKILL between the renames of the second state's tensors and its JSON. The run
    #    folder must still be resumable, losing at most that one interval (step 9 -> back to 8).
    proc, saved = _run(out, {"kill_before_state_json": 2}, resume=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert saved == [8], saved
    assert _assert_every_file_loads(out) in (8, 9)
    assert not list(out.glob(".last.state.safetensors.*.tmp")), "a resumed run removes the earlier run's litter"
    assert list(out.glob(".last.state.json.*.tmp"))

    # 4. Resumed to the end: the same parameters, optimiser moments, RNG states and counters.
    proc, _ = _run(out, {}, resume=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert not list(out.glob(".*.tmp")), "no temporary file may outlive a resumed run"
    assert "temporary files of an interrupted write removed" in (out / "log.txt").read_text()
    a, ca = _state(tmp_path / "straight")
    b, cb = _state(out)
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, different[:5]
    assert (ca["step"], ca["epoch"], ca["batch_in_epoch"]) == (cb["step"], cb["epoch"], cb["batch_in_epoch"])
    assert ca["step"] == STEPS
    ma, _ = load_model(tmp_path / "straight" / "last.safetensors")
    mb, _ = load_model(out / "last.safetensors")
    sa, sb = ma.state_dict(), mb.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def _count_calls(real, bad: callable):
    """Wraps the loss: calls for which ``bad(n)`` is true (n from 1) return NaN instead."""
    n = {"calls": 0, "bad": 0}

    def loss(net, model, x):
        n["calls"] += 1
        value = real(net, model, x)
        if bad(n["calls"]):
            n["bad"] += 1
            return value * math.nan
        return value

    return loss, n


@pytest.mark.timeout(300)
def test_occasional_non_finite_losses_are_skipped_and_logged(tmp_path: Path, monkeypatch, capsys) -> None:
    import train.loop as loop

    loss, n = _count_calls(loop.loss_bits_per_dim, lambda i: i % 3 == 0)
    monkeypatch.setattr(loop, "loss_bits_per_dim", loss)
    threads = torch.get_num_threads()
    try:
        assert main([*ARGV, "--max-steps", "6", "--out", str(tmp_path)]) == 0
    finally:
        torch.set_num_threads(threads)
    assert n["bad"] >= 2
    log = (tmp_path / "log.txt").read_text()
    skipped = [int(m) for m in re.findall(r"steps \d+\.\.\d+: (\d+) non-finite loss or gradient; skipped", log)]
    assert sum(skipped) == n["bad"], log  # each read of the tally notes what it counted
    _, counters = _state(tmp_path)
    assert counters["step"] == 6  # a skipped step counts: the host does not wait for the device's flag
    model, meta = load_model(tmp_path / "last.safetensors")
    assert all(torch.isfinite(p).all() for p in model.parameters()) and math.isfinite(meta["test_bpd"])


@pytest.mark.timeout(300)
def test_divergence_stops_with_a_message_and_keeps_the_last_good_checkpoint(tmp_path: Path, monkeypatch, capsys):
    import train.loop as loop

    loss, _ = _count_calls(loop.loss_bits_per_dim, lambda i: i > 4)
    monkeypatch.setattr(loop, "loss_bits_per_dim", loss)
    threads = torch.get_num_threads()
    try:
        rc = main([*ARGV, "--max-steps", "40", "--out", str(tmp_path)])
    finally:
        torch.set_num_threads(threads)
    err = capsys.readouterr().err
    assert rc == 1 and "diverged" in err and "Traceback" not in err, err
    # Four good steps, then skipped ones (they count as steps) until a read of the tally sees MAX_BAD_STEPS.
    assert 4 + MAX_BAD_STEPS - 1 <= _assert_every_file_loads(tmp_path) < 4 + MAX_BAD_STEPS + LOG_EVERY
    tensors, _ = _state(tmp_path)
    model, _ = load_model(tmp_path / "last.safetensors")
    for k, v in model.state_dict().items():
        assert torch.equal(v, tensors[f"model.{k}"]), k  # the model file is the last good step's


@pytest.mark.timeout(300)
def test_disk_full_while_saving_keeps_the_previous_checkpoint_and_says_why(tmp_path: Path, monkeypatch, capsys):
    import train.state as state

    real = state.save_file
    calls = {"n": 0}

    def full_disk(tensors, path, metadata=None):
        calls["n"] += 1
        if calls["n"] == 3:
            Path(path).write_bytes(b"\0" * 100)  # what a full disk leaves: part of a file
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        real(tensors, path, metadata=metadata)

    monkeypatch.setattr(state, "save_file", full_disk)
    threads = torch.get_num_threads()
    try:
        rc = main([*ARGV, "--out", str(tmp_path)])
    finally:
        torch.set_num_threads(threads)
    err = capsys.readouterr().err
    assert rc not in (0, 130) and "No space left on device" in err and "Traceback" not in err, err
    assert _assert_every_file_loads(tmp_path) == 2  # the state of step 2 is intact
    assert not list(tmp_path.glob(".*.tmp")), "the partial temporary file must be removed"
