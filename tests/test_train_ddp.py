"""Two CPU processes under torchrun (gloo): the run finishes, rank 0 alone writes, and the ranks agree."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from nvp_core import load_model

ROOT = Path(__file__).resolve().parents[1]
TORCHRUN = Path(sys.executable).parent / "torchrun"


@pytest.mark.skipif(not TORCHRUN.exists(), reason="torchrun is not installed next to this Python")
def test_two_process_gloo_run(tmp_path, capsys):
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
    assert "(gloo, s,t ResNet batch norm local)" in log

    # The number of processes is part of the resume state: one process cannot continue a 2-process run.
    from train.__main__ import main

    assert json.loads((out / "last.state.json").read_text())["counters"]["world_size"] == 2
    assert main([*cmd[cmd.index("--preset") :], "--max-steps", "6", "--resume"]) == 2
    err = capsys.readouterr().err
    assert "trained by 2 process(es), this job has 1" in err and "--nproc_per_node=2" in err, err


@pytest.mark.skipif(not TORCHRUN.exists(), reason="torchrun is not installed next to this Python")
def test_two_process_run_with_compiled_nets_keeps_the_ranks_equal(tmp_path):
    # --compile on works under torchrun too: DDP's gradient hooks must fire through the
    # compiled backward, and evaluation (eager) must see the same weights on both ranks.
    from train.compiling import compiler_problem

    if (problem := compiler_problem("cpu")) is not None:
        pytest.skip(f"torch.compile does not work here: {problem}")
    out = tmp_path / "run"
    cmd = [str(TORCHRUN), "--standalone", "--nproc_per_node=2", "-m", "train", "--preset", "digits-tiny",
           "--max-steps", "4", "--epochs", "0", "--eval-limit", "64", "--threads", "1", "--no-progress",
           "--device", "cpu", "--compile", "on", "--out", str(out)]  # fmt: skip
    r = subprocess.run(cmd, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                       timeout=600)  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    log = (out / "log.txt").read_text()
    assert "compiling the s,t ResNets (--compile on)" in log and "first compiled step" in log, log
    m = re.search(r"ranks agree: max \|difference\| (\S+) \(parameters\), (\S+) \(batch-norm averages\)", log)
    assert m and float(m.group(1)) == 0.0 and float(m.group(2)) == 0.0, log
    assert json.loads((out / "last.state.json").read_text())["counters"]["compiled"] is True


@pytest.mark.skipif(not TORCHRUN.exists(), reason="torchrun is not installed next to this Python")
def test_a_process_group_of_one_runs_every_collective(tmp_path):
    # What the GPU check does with NCCL on one GPU (NVP_DIST_FORCE=1), here with gloo.
    out = tmp_path / "run"
    cmd = [str(TORCHRUN), "--standalone", "--nproc_per_node=1", "-m", "train", *ARGS, "--max-steps", "3",
           "--out", str(out)]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NVP_DIST_FORCE": "1"}
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    log = (out / "log.txt").read_text()
    assert "1 process(es) on cpu (gloo" in log and "ranks agree: max |difference| 0 (parameters)" in log, log


# --- several processes started by hand (env:// as torchrun sets it), so that nothing but our own code ends them --
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _launch(code: str, argv: list[str], world: int = 2, timeout: float = 300) -> list[tuple[int | None, str, float]]:
    """Runs ``python -c code argv`` as ``world`` ranks of one job (each writes its stderr to a file); returns
    (exit code, stderr, seconds until it ended) per rank. A rank still running after ``timeout`` seconds is
    killed and reported with exit code None."""
    port, logs, procs = _free_port(), [], []
    for rank in range(world):
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
               "WORLD_SIZE": str(world), "RANK": str(rank), "LOCAL_RANK": str(rank)}  # fmt: skip
        env["NVP_DIST_TIMEOUT_S"] = "120"
        logs.append(open(Path(os.environ.get("TMPDIR", "/tmp")) / f"nvp-rank{rank}-{port}.err", "w+"))  # noqa: SIM115
        cmd = [sys.executable, "-c", code, *argv]
        procs.append(subprocess.Popen(cmd, cwd=ROOT, env=env, stderr=logs[-1], stdout=subprocess.DEVNULL))
    start, ended = time.monotonic(), [None] * world
    while None in ended and time.monotonic() - start < timeout:
        for i, p in enumerate(procs):
            if ended[i] is None and p.poll() is not None:
                ended[i] = time.monotonic() - start
        time.sleep(0.2)
    results = []
    for i, (p, log) in enumerate(zip(procs, logs, strict=True)):
        if ended[i] is None:
            p.kill()
        p.wait()
        log.seek(0)
        results.append((p.returncode if ended[i] is not None else None, log.read(), ended[i] or timeout))
        log.close()
        os.unlink(log.name)
    return results


# Rank FAIL_RANK raises at its third loss (the others are then inside a collective, or about to be).
_FAILING_RANK = r"""
import os, runpy, sys
import train.loop as loop
real, calls = loop.loss_bits_per_dim, {"n": 0}
def loss(net, model, x):
    calls["n"] += 1
    if os.environ["RANK"] == os.environ["FAIL_RANK"] and calls["n"] == 3:
        raise RuntimeError(f"injected failure on rank {os.environ['RANK']}")
    return real(net, model, x)
loop.loss_bits_per_dim = loss
sys.argv = ["python -m train", *sys.argv[1:]]
runpy.run_module("train", run_name="__main__", alter_sys=True)
"""
_TRAIN = (
    'import runpy, sys; sys.argv = ["python -m train", *sys.argv[1:]]; runpy.run_module("train", run_name="__main__")'
)
ARGS = ["--preset", "digits-tiny", "--epochs", "0", "--eval-limit", "32", "--threads", "1", "--no-progress",
        "--device", "cpu"]  # fmt: skip


@pytest.mark.timeout(600)
@pytest.mark.parametrize("fail_rank", ["1", "0"])
def test_an_error_on_one_rank_ends_every_rank_within_seconds_with_one_message(tmp_path, monkeypatch, fail_rank):
    monkeypatch.setenv("FAIL_RANK", fail_rank)
    results = _launch(_FAILING_RANK, [*ARGS, "--max-steps", "20", "--out", str(tmp_path / "run")])
    codes = [code for code, _, _ in results]
    assert all(code not in (0, None) for code in codes), results
    ends = [t for _, _, t in results]
    assert max(ends) - min(ends) < 30, ends  # the healthy rank does not wait for a timeout
    stderr = "".join(err for _, err, _ in results)
    assert stderr.count(f"injected failure on rank {fail_rank}") == 1, stderr
    assert "Traceback" not in stderr, stderr


@pytest.mark.timeout(600)
def test_resuming_with_another_number_of_processes_is_refused_once(tmp_path, capsys):
    from train.__main__ import main

    out = tmp_path / "run"
    threads = torch.get_num_threads()
    try:
        assert main([*ARGS, "--max-steps", "4", "--stop-after", "2", "--out", str(out)]) == 0
    finally:
        torch.set_num_threads(threads)
    saved = json.loads((out / "last.state.json").read_text())["counters"]
    assert saved["world_size"] == 1
    results = _launch(_TRAIN, [*ARGS, "--max-steps", "4", "--out", str(out), "--resume"])
    assert [code for code, _, _ in results] == [2, 2], results
    stderr = "".join(err for _, err, _ in results)
    assert stderr.count("was trained by 1 process(es), this job has 2") == 1, stderr
    assert "without torchrun" in stderr and "Traceback" not in stderr


_DOWNLOAD = r"""
import os, sys, time
from pathlib import Path
from train.data import DataError
from train.distributed import init_distributed, local_main_first, shutdown
info = init_distributed("cpu")
folder = Path(sys.argv[1])

def download():
    if info.local_rank == 0:
        time.sleep(2)  # a slow download: the other rank must not start its own meanwhile
        (folder / "data.bin").write_text("done")
        return "downloaded"
    assert (folder / "data.bin").read_text() == "done", "rank 1 read before rank 0 finished"
    return "found"

print(local_main_first(info, download), file=sys.stderr)

def no_network():
    raise DataError("cifar10: no network here")

try:
    local_main_first(info, no_network)
except ValueError as e:
    print(f"raised: {e}", file=sys.stderr)
shutdown(info)
"""


@pytest.mark.timeout(300)
def test_one_process_downloads_while_the_others_wait(tmp_path):
    results = _launch(_DOWNLOAD, [str(tmp_path)])
    assert [code for code, _, _ in results] == [0, 0], results
    (code0, err0, _), (code1, err1, _) = results
    assert "downloaded" in err0 and "found" in err1, (err0, err1)
    # rank 0's failure reaches every rank, as the same message
    assert "raised: cifar10: no network here" in err0 and "raised: cifar10: no network here" in err1


# The one step path (fused Adam skips on a device flag, the tally read every --log-every steps) under DDP,
# on gloo: rank 1's third batch is NaN, its gradient reaches every rank through the all-reduce, and every rank
# skips the same step.
_SKIPPING = r"""
import math, os, sys
from pathlib import Path
import torch
import train.loop as loop
import train.options as options
from train.config import preset
real, calls = loop.loss_bits_per_dim, {"n": 0}
def loss(net, model, x):
    calls["n"] += 1
    value = real(net, model, x)
    return value * math.nan if os.environ["RANK"] == "1" and calls["n"] == 3 else value
loop.loss_bits_per_dim = loss
torch.set_num_threads(1)
cfg = preset("digits-tiny").with_updates(epochs=0, max_steps=6, eval_limit=32, log_every=3)
loop.train(cfg, options.RunOptions(out=Path(sys.argv[1]), device="cpu", progress=False))
"""


@pytest.mark.timeout(600)
def test_the_gpu_step_under_ddp_skips_the_same_step_on_every_rank(tmp_path):
    results = _launch(_SKIPPING, [str(tmp_path / "run")])
    assert [code for code, _, _ in results] == [0, 0], results
    log = (tmp_path / "run" / "log.txt").read_text()
    assert "steps 1..3: 1 non-finite loss or gradient; skipped" in log, log
    assert "ranks agree: max |difference| 0 (parameters), 0 (batch-norm averages)" in log, log


# Each rank has its own fast-path cache and a timing stub under which rank 0 finds NCHW fastest, rank 1
# channels_last; it reports on stderr when it measures and which path it applies.
_RANK_PREFERENCES = r"""
import os, runpy, sys, tempfile
rank = os.environ["RANK"]
os.environ["NVP_FASTPATH_CACHE"] = os.path.join(tempfile.mkdtemp(), "fastpath.json")
from nvp_core import fastpath, fastpath_choice
def measure(config, mode, batch, device, paths):
    print(f"rank {rank} measures", file=sys.stderr)
    best = "fp32-nchw" if rank == "0" else "fp32-cl"
    return {p.name: (1.0 if p.name == best else 2.0) for p in paths}
fastpath_choice.measure = measure
real_apply = fastpath.FastPath.apply
def apply(self, model):
    print(f"rank {rank} applies {self.name}", file=sys.stderr)
    return real_apply(self, model)
fastpath.FastPath.apply = apply
sys.argv = ["python -m train", *sys.argv[1:]]
runpy.run_module("train", run_name="__main__", alter_sys=True)
"""


@pytest.mark.timeout(600)
def test_rank_0_measures_the_fast_path_and_every_rank_takes_it(tmp_path):
    argv = [*ARGS, "--precision", "fp32", "--max-steps", "2", "--out", str(tmp_path / "run")]
    (code0, err0, _), (code1, err1, _) = _launch(_RANK_PREFERENCES, argv)
    assert (code0, code1) == (0, 0), err0[-2000:] + err1[-2000:]
    assert "rank 0 measures" in err0 and "rank 1 measures" not in err1
    assert "rank 0 applies fp32-nchw" in err0 and "rank 1 applies fp32-nchw" in err1
    assert "applies fp32-cl" not in err0 + err1
    assert "fast path fp32-nchw" in (tmp_path / "run" / "log.txt").read_text()
