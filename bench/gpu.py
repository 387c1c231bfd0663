"""The GPU benchmark (issue 5): the paper's CIFAR-10 model at 32×32×3 on CUDA — images/s, peak memory and
bits/dim after a fixed number of steps, for float32 NCHW vs bf16 autocast + channels_last (+ torch.compile).

    python -m bench.gpu
    python -m bench.gpu --steps 300 --no-compile

Results: ``bench/results/local/`` (``--save``: the committed ``bench/results/<name>-<cpu kind>.json``).
Training data: CIFAR-10 through train.data if it is on disk, else uniform-noise images (stated in the JSON).
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import torch

from bench.common import add_save_flag, machine_info, median, table, write_results
from nvp_core import FlowConfig, RealNVP, dequantize
from train.compiling import compile_nets

PAPER_CIFAR10 = FlowConfig(in_channels=3, image_size=32, num_scales=2, mid_channels=64, num_blocks=8)


def _data(n: int) -> tuple[torch.Tensor, str]:
    try:
        from train.data import load_dataset

        splits = load_dataset("cifar10")
        return splits.train[:n], "cifar10"
    except Exception as exc:  # no dataset on the machine: still time the model
        gen = torch.Generator().manual_seed(0)
        return torch.randint(0, 256, (n, 3, 32, 32), generator=gen, dtype=torch.uint8), f"random ({exc})"


def run_variant(
    name: str, images: torch.Tensor, batch: int, steps: int, bf16: bool, cl: bool, compile: bool
) -> dict[str, Any]:
    dev = torch.device("cuda")
    torch.manual_seed(0)
    model = RealNVP(PAPER_CIFAR10).to(dev).train()
    model.set_channels_last(cl).set_compute_dtype(torch.bfloat16 if bf16 else None)
    if compile:
        compile_nets(model)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(0)
    torch.cuda.reset_peak_memory_stats()
    times: list[float] = []
    first = None
    for step in range(steps):
        idx = torch.randint(0, len(images), (batch,), generator=gen)
        x = dequantize(images[idx], gen).to(dev, non_blocking=True)
        if cl:
            x = x.contiguous(memory_format=torch.channels_last)
        torch.cuda.synchronize()
        t = time.perf_counter()
        loss = model.bits_per_dim_of(model.log_prob(x)).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        torch.cuda.synchronize()
        dt = time.perf_counter() - t
        if step == 0:
            first = dt
        elif step >= 3:
            times.append(dt)
    model.eval().set_compute_dtype(None)
    with torch.no_grad():
        x = dequantize(images[:512], torch.Generator().manual_seed(1)).to(dev)
        bpd = float(model.bits_per_dim_of(model.log_prob(x)).mean())
    return {
        "variant": name,
        "batch": batch,
        "steps": steps,
        "images_per_s": round(batch / median(times), 1) if times else None,
        "first_step_s": round(first or 0.0, 2),
        "peak_memory_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1),
        "bpd_after_steps_on_512_train_images": round(bpd, 4),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.gpu", description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--no-compile", action="store_true")
    add_save_flag(p)
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        print("no CUDA device: nothing to measure (python -m bench covers the CPU)")
        return 2
    torch.backends.cudnn.benchmark = True
    images, source = _data(20000)
    plan = [("fp32-nchw", False, False, False), ("bf16-cl", True, True, False)]
    if not args.no_compile:
        plan.append(("bf16-cl-compiled", True, True, True))
    rows = [run_variant(n, images, args.batch, args.steps, bf, cl, co) for n, bf, cl, co in plan]
    print(table(rows, list(rows[0])))
    path = write_results(
        "gpu", {"machine": machine_info(), "config": PAPER_CIFAR10.to_dict(), "data": source, "rows": rows}, args.save
    )
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
