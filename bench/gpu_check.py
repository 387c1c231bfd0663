"""Issue 12's checks on a GPU, in one call of a few minutes: what the CPU tests cannot show.

    python -m bench.gpu_check             # every check; prints PASS / FAIL / SKIP / INFO per point
    python -m bench.gpu_check --quick     # without the throughput comparison (about a minute less)
    python -m bench.gpu_check --dry-run-on-cpu   # the same checks on the CPU: tries this script without a GPU

A check that would start after ``--budget-s`` seconds (default 500) is skipped, so one call of 10 minutes on a
lent machine always ends with a report.

Each check runs the real trainer (``python -m train`` and ``torchrun -m train`` as subprocesses, or ``train()`` in
this process) on synthetic image folders made here, so that nothing needs a network or a dataset package. It
writes its report to ``bench/results/local/`` (``--save``: the committed file) and exits 0 when nothing failed,
1 otherwise, 2 without a GPU.

1. ``single-gpu-run``: a short ``python -m train --device cuda`` run with evaluation ends well and says where it is.
2. ``gpu-checkpoint-on-cpu``: its checkpoint loads on the CPU with the same test bits/dim (TF32 off in evaluation);
   the effect TF32 would have had is reported.
3. ``sample-cpu-generator``: ``model.sample(n, generator=torch.Generator())`` on the CUDA model works and draws
   the CPU model's samples.
4. ``resume-on-gpu``: ``--stop-after`` then ``--resume`` on the GPU; a third ``--resume`` has nothing left to do.
5. ``skip-without-sync``: a non-finite step on the GPU leaves parameters, Adam moments and batch-norm averages
   exactly as they were (fused Adam reads the flag on the device).
6. ``host-syncs-per-step``: CUDA synchronisations per training step of ``train()`` (torch's sync debug mode),
   from the difference between a 40-step and an 80-step run; expected ~0 (the loss is read every --log-every).
7. ``torchrun-nccl``: ``torchrun --nproc_per_node=1`` with a process group of one (``NVP_DIST_FORCE=1``), so
   every collective of the multi-GPU path runs on ``cpu:gloo,cuda:nccl``: DDP, evaluation totals, buffer averages,
   the final rank check; with ``--resnet-bn local`` and ``sync``.
8. ``resnet-bn-local-vs-sync`` (2+ GPUs): ``torchrun --nproc_per_node=2``, the s,t ResNets' batch norm per rank vs
   SyncBatchNorm: images/s and test bits/dim of each (the default, local, should be faster and no worse).
9. ``trainer-vs-benchmark``: images/s of ``python -m train`` next to ``bench.gpu``'s loop on the paper's CIFAR-10
   model (batch 64, float32; and the trainer's --precision auto).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from bench.common import add_save_flag, machine_info, write_results
from train.distributed import backend_for

ROOT = Path(__file__).resolve().parents[1]
DEVICE = "cuda"  # --dry-run-on-cpu: "cpu", to try this script's own logic on a machine without a GPU
SMALL = ["--image-size", "16", "--channels", "1", "--num-scales", "2", "--num-blocks", "1", "--mid-channels", "16",
         "--batch-size", "64", "--warmup-steps", "10", "--epochs", "0", "--eval-limit", "256", "--no-progress",
         "--precision", "fp32", "--checkpoint-minutes", "0"]  # fmt: skip
CIFAR_MODEL = ["--image-size", "32", "--channels", "3", "--num-scales", "2", "--num-blocks", "8", "--mid-channels",
               "64", "--batch-size", "64", "--warmup-steps", "10", "--epochs", "0", "--no-progress", "--device",
               "cuda", "--checkpoint-minutes", "0"]  # fmt: skip


def make_folder(path: Path, n: int, size: int, channels: int, seed: int) -> Path:
    """``n`` smooth random images (blurred noise, so that a flow can learn something) as PNG files."""
    rng = np.random.default_rng(seed)
    path.mkdir(parents=True, exist_ok=True)
    coarse = rng.integers(0, 256, (n, size // 4, size // 4, channels)).astype(np.uint8)
    for i in range(n):
        img = Image.fromarray(coarse[i, ..., 0] if channels == 1 else coarse[i])
        img.resize((size, size), Image.Resampling.BILINEAR).save(path / f"{i:05d}.png")
    return path


def run(cmd: list[str], timeout: float = 200, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})}
    )


def train_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "train", "--device", DEVICE, *args]


def torchrun_cmd(nproc: int, *args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", "-m", "train",
            "--device", DEVICE, *args]  # fmt: skip


def expect_ok(r: subprocess.CompletedProcess, what: str) -> None:
    if r.returncode != 0 or "Traceback" in r.stderr:
        raise AssertionError(f"{what}: exit {r.returncode}\n{r.stderr[-2500:]}")


def records(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


class Checks:
    def __init__(self, work: Path, quick: bool, budget_s: float) -> None:
        self.work, self.quick = work, quick
        self.deadline = time.monotonic() + budget_s
        # 5400 training images: 84 steps of 64 per epoch, so that the runs below evaluate only at their end.
        self.small = make_folder(work / "small", 6000, 16, 1, 0)
        self.small_ds = f"folder:{self.small}"
        self.results: list[dict[str, Any]] = []

    def left(self) -> float:
        """Seconds left of the --budget-s this call was given."""
        return self.deadline - time.monotonic()

    def run(self, name: str, fn: Callable[[], tuple[str, str]]) -> None:
        t = time.perf_counter()
        try:
            status, detail = fn() if self.left() > 30 else ("SKIP", "the time budget (--budget-s) is spent")
        except Exception as e:  # one failing check must not hide the others
            status, detail = "FAIL", f"{type(e).__name__}: {e}\n{traceback.format_exc(limit=3)}"
        seconds = round(time.perf_counter() - t, 1)
        self.results.append({"check": name, "status": status, "detail": detail, "seconds": seconds})
        print(f"[{status}] {name} ({seconds} s): {detail}", flush=True)

    # 1 ------------------------------------------------------------------------------------------------------
    def single_gpu_run(self) -> tuple[str, str]:
        out = self.work / "run1"
        r = run(train_cmd("--dataset", self.small_ds, *SMALL, "--max-steps", "60", "--log-every", "10", "--out",
                          str(out)))  # fmt: skip
        expect_ok(r, "python -m train --device cuda")
        rec = records(out)[-1]
        log = (out / "log.txt").read_text()
        assert rec["step"] == 60 and math.isfinite(rec["test_bpd"]), rec
        assert f"on {DEVICE}" in log, log[:500]
        assert "NVP_MODELS_DIR=" in r.stdout, r.stdout[-500:]
        return "PASS", f"test bits/dim {rec['test_bpd']:.4f} after 60 steps, {rec['images_per_s']:.0f} images/s"

    # 2 ------------------------------------------------------------------------------------------------------
    def gpu_checkpoint_on_cpu(self) -> tuple[str, str]:
        from nvp_core import load_model
        from train.data import load_dataset
        from train.evaluate import eval_bits_per_dim

        out = self.work / "run1"
        test = load_dataset(self.small_ds, None, 16, 1, None, 0.1).test[:256]
        cpu, meta = load_model(out / "last.safetensors")
        bpd_cpu = eval_bits_per_dim(cpu, test)
        gpu, _ = load_model(out / "last.safetensors", map_location=DEVICE)
        bpd_gpu = eval_bits_per_dim(gpu, test)
        # What TF32 would have done: the same evaluation with TF32 left on (outside eval_float32's switch).
        from nvp_core import bits_per_dim

        saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        with torch.no_grad():
            bpd_tf32 = float(bits_per_dim(gpu.eval(), test, seed=1000).double().mean())
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved
        diffs = abs(bpd_cpu - meta["test_bpd"]), abs(bpd_cpu - bpd_gpu)
        detail = (f"trainer (GPU) {meta['test_bpd']:.6f}, CPU {bpd_cpu:.6f}, GPU now {bpd_gpu:.6f}; "
                  f"|GPU - CPU| {max(diffs):.2e}; TF32 on would give {bpd_tf32:.6f}")  # fmt: skip
        return ("PASS" if max(diffs) < 1e-4 else "FAIL"), detail

    # 3 ------------------------------------------------------------------------------------------------------
    def sample_cpu_generator(self) -> tuple[str, str]:
        from nvp_core import load_model

        cpu, _ = load_model(self.work / "run1" / "last.safetensors")
        gpu, _ = load_model(self.work / "run1" / "last.safetensors", map_location=DEVICE)
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
        a = gpu.sample(8, temperature=0.8, generator=torch.Generator().manual_seed(0))
        b = cpu.sample(8, temperature=0.8, generator=torch.Generator().manual_seed(0))
        assert a.device.type == DEVICE and torch.isfinite(a).all()
        diff = float((a.cpu() - b).abs().max())
        return ("PASS" if diff < 1e-3 else "FAIL"), f"max |GPU sample - CPU sample| = {diff:.2e}"

    # 4 ------------------------------------------------------------------------------------------------------
    def resume_on_gpu(self) -> tuple[str, str]:
        out = self.work / "run_resume"
        args = ["--dataset", self.small_ds, *SMALL, "--max-steps", "30", "--log-every", "5", "--out", str(out)]
        expect_ok(run(train_cmd(*args, "--stop-after", "15")), "--stop-after 15")
        expect_ok(run(train_cmd(*args, "--resume")), "--resume")
        counters = json.loads((out / "last.state.json").read_text())["counters"]
        assert counters["step"] == 30 and counters["noise_device"] == DEVICE, counters
        r = run(train_cmd(*args, "--resume"))
        expect_ok(r, "--resume of a finished run")
        assert "nothing left to do" in r.stdout, r.stdout
        return "PASS", f"stopped at 15, resumed to 30 (noise drawn on {DEVICE}); a third --resume: nothing to do"

    # 5 ------------------------------------------------------------------------------------------------------
    def skip_without_sync(self) -> tuple[str, str]:
        from nvp_core import RealNVP
        from train.config import preset
        from train.loop import BufferGuard, build_optimizer, step_on_device

        torch.manual_seed(0)
        model = RealNVP(preset("digits-tiny").flow_config(1, 16)).to(DEVICE).train()
        opt = build_optimizer(model, preset("digits-tiny"), fused=True)
        guard, params = BufferGuard(model), list(model.parameters())
        x = torch.rand(32, 1, 16, 16, device=DEVICE)
        step_on_device(model, model, x, opt, guard, params, 100.0)
        before = {k: v.clone() for k, v in model.state_dict().items()}
        moments = [{k: v.clone() for k, v in s.items()} for s in opt.state.values()]
        _, taken = step_on_device(model, model, x * math.nan, opt, guard, params, 100.0)
        changed = [k for k, v in model.state_dict().items() if "num_batches" not in k and not torch.equal(v, before[k])]
        moved = sum(not torch.equal(m[k], v) for m, s in zip(moments, opt.state.values(), strict=True)
                    for k, v in s.items())  # fmt: skip
        assert not bool(taken)
        ok = not changed and not moved
        return ("PASS" if ok else "FAIL"), f"{len(changed)} tensors and {moved} optimiser states changed by a NaN step"

    # 6 ------------------------------------------------------------------------------------------------------
    def host_syncs_per_step(self) -> tuple[str, str]:
        if DEVICE != "cuda":
            return "SKIP", "CUDA's sync debug mode needs a GPU"
        import warnings
        from collections import Counter

        from train.config import TrainConfig
        from train.loop import train
        from train.options import RunOptions

        def syncs(steps: int) -> Counter:
            cfg = TrainConfig(dataset=self.small_ds, image_size=16, in_channels=1, num_scales=2, num_blocks=1,
                              mid_channels=16, batch_size=64, epochs=0, max_steps=steps, eval_limit=64, log_every=20,
                              precision="fp32", warmup_steps=5)  # fmt: skip
            out = self.work / f"syncs{steps}"
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                torch.cuda.set_sync_debug_mode("warn")
                try:
                    train(cfg, RunOptions(out=out, device="cuda", progress=False, checkpoint_minutes=0))
                finally:
                    torch.cuda.set_sync_debug_mode("default")
            return Counter(f"{Path(w.filename).name}:{w.lineno}" for w in caught if "synchroniz" in str(w.message))

        short, long = syncs(40), syncs(80)
        per_step = (sum(long.values()) - sum(short.values())) / 40
        grown = (long - short).most_common(5)
        detail = f"{per_step:.2f} syncs per step (40 -> 80 steps; log every 20); where they grow: {grown}"
        return ("PASS" if per_step <= 0.25 else "FAIL"), detail

    # 7 ------------------------------------------------------------------------------------------------------
    def torchrun_nccl(self) -> tuple[str, str]:
        found = []
        for mode in ("local", "sync") if DEVICE == "cuda" else ("local",):
            out = self.work / f"ddp1_{mode}"
            r = run(torchrun_cmd(1, "--dataset", self.small_ds, *SMALL, "--max-steps", "20", "--log-every", "5",
                                 "--resnet-bn", mode, "--out", str(out)), env={"NVP_DIST_FORCE": "1"})  # fmt: skip
            expect_ok(r, f"torchrun --nproc_per_node=1 (--resnet-bn {mode})")
            log = (out / "log.txt").read_text()
            assert backend_for(DEVICE) in log and "ranks agree" in log, log[-800:]
            found.append(f"{mode}: test bits/dim {records(out)[-1]['test_bpd']:.4f}")
        return "PASS", f"process group of one on {backend_for(DEVICE)}, every collective ran; " + "; ".join(found)

    # 8 ------------------------------------------------------------------------------------------------------
    def resnet_bn_local_vs_sync(self) -> tuple[str, str]:
        if DEVICE != "cuda" or torch.cuda.device_count() < 2:
            return "SKIP", f"needs 2 GPUs, {torch.cuda.device_count()} visible (the CPU tests run 2 gloo ranks)"
        rows = []
        for mode in ("local", "sync"):
            out = self.work / f"ddp2_{mode}"
            r = run(torchrun_cmd(2, "--dataset", self.small_ds, *SMALL, "--max-steps", "200", "--log-every", "50",
                                 "--resnet-bn", mode, "--out", str(out)))  # fmt: skip
            expect_ok(r, f"torchrun --nproc_per_node=2 (--resnet-bn {mode})")
            rec = records(out)[-1]
            rows.append(f"{mode}: {rec['images_per_s']:.0f} images/s, test {rec['test_bpd']:.4f} bits/dim")
        return "INFO", "; ".join(rows)

    # 9 ------------------------------------------------------------------------------------------------------
    def trainer_vs_benchmark(self) -> tuple[str, str]:
        if self.quick or DEVICE != "cuda":
            return "SKIP", "--quick" if self.quick else "bench.gpu needs a GPU"
        from bench.gpu import run_variant
        from train.data import load_dataset

        cifar = make_folder(self.work / "cifar_like", 7200, 32, 3, 1)  # 6480 train images: 101 steps per epoch
        rates: dict[str, float] = {}

        def trainer(precision: str) -> None:
            out = self.work / f"speed_{precision}"
            cmd = train_cmd("--dataset", f"folder:{cifar}", *CIFAR_MODEL, "--precision", precision, "--max-steps",
                            "200", "--log-every", "50", "--eval-limit", "500", "--out", str(out))  # fmt: skip
            r = run(cmd, timeout=max(10.0, self.left() - 10))
            expect_ok(r, f"python -m train (paper CIFAR-10 model, --precision {precision})")
            rates[precision] = records(out)[-1]["images_per_s"]  # the second epoch's window: no warm-up in it

        trainer("fp32")
        images = load_dataset(f"folder:{cifar}", None, 32, 3, False, 0.1).train
        torch.backends.cudnn.benchmark = True
        bench = {name: run_variant(name, images, 64, 60, bf, cl, False)["images_per_s"]
                 for name, bf, cl in (("fp32-nchw", False, False), ("bf16-cl", True, True))}  # fmt: skip
        auto = "not run (time budget)"
        if self.left() > 90:  # the fast-path choice measures on the GPU first
            trainer("auto")
            auto = f"{rates['auto']:.0f}"
        ratio = rates["fp32"] / bench["fp32-nchw"]
        detail = (f"python -m train: {rates['fp32']:.0f} images/s (fp32), {auto} (auto); bench.gpu: "
                  f"{bench['fp32-nchw']:.0f} (fp32-nchw), {bench['bf16-cl']:.0f} (bf16-cl); trainer/bench fp32 "
                  f"{ratio:.2f}")  # fmt: skip
        return ("PASS" if ratio >= 0.7 else "WARN"), detail


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.gpu_check", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="skip the throughput comparison")
    p.add_argument("--keep", action="store_true", help="keep the work folder (run folders, synthetic data)")
    p.add_argument("--dry-run-on-cpu", action="store_true", help="run the checks on the CPU (tries this script)")
    p.add_argument("--budget-s", type=float, default=500.0, help="skip the checks that would start after this")
    add_save_flag(p)
    args = p.parse_args(argv)
    global DEVICE
    DEVICE = "cpu" if args.dry_run_on_cpu else "cuda"
    if DEVICE == "cuda" and not torch.cuda.is_available():
        print("no CUDA device: nothing to check here (the CPU tests cover what a CPU can show)")
        return 2
    if DEVICE == "cuda":
        print(f"{torch.cuda.get_device_name(0)}, {torch.cuda.device_count()} GPU(s), torch {torch.__version__}")
    work = Path(tempfile.mkdtemp(prefix="nvp-gpu-check-"))
    checks = Checks(work, args.quick, args.budget_s)
    plan = [
        ("single-gpu-run", checks.single_gpu_run),
        ("gpu-checkpoint-on-cpu", checks.gpu_checkpoint_on_cpu),
        ("sample-cpu-generator", checks.sample_cpu_generator),
        ("skip-without-sync", checks.skip_without_sync),
        ("torchrun-nccl", checks.torchrun_nccl),
        ("host-syncs-per-step", checks.host_syncs_per_step),
        ("resume-on-gpu", checks.resume_on_gpu),
        ("resnet-bn-local-vs-sync", checks.resnet_bn_local_vs_sync),
        ("trainer-vs-benchmark", checks.trainer_vs_benchmark),
    ]
    for name, fn in plan:
        checks.run(name, fn)
    failed = [r["check"] for r in checks.results if r["status"] == "FAIL"]
    print(f"\n{len(checks.results) - len(failed)} of {len(checks.results)} checks without failure"
          + (f"; FAILED: {', '.join(failed)}" if failed else ""))  # fmt: skip
    if DEVICE == "cuda":  # a dry run on the CPU leaves no result file
        path = write_results("gpu-check", {"machine": machine_info(), "results": checks.results}, args.save)
        print(f"wrote {path}")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
