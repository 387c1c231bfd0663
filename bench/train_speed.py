"""Training throughput: images/s of full optimisation steps (forward, backward, Adam), FLOPs per image counted
with ``torch.utils.flop_counter``, and the memory the step needs."""

from __future__ import annotations

import resource
import time
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from bench.common import load_now, median
from nvp_core import FlowConfig, RealNVP
from train.compiling import compile_nets

#: The issue's reference configuration: the paper's CIFAR-10 model (2 scales, 8 residual blocks, 64 features)
#: applied to 28×28×1 images, batch 64.
PAPER_28 = FlowConfig(in_channels=1, image_size=28, num_scales=2, mid_channels=64, num_blocks=8)


@dataclass(frozen=True)
class Variant:
    """One way of running the same model."""

    name: str
    channels_last: bool = False
    compute_dtype: torch.dtype | None = None
    compile: bool = False
    batch: int | None = None  # None: the run's batch size (emulated bf16 is too slow for the full batch)


VARIANTS: dict[str, Variant] = {
    "fp32-nchw": Variant("fp32-nchw"),
    "fp32-cl": Variant("fp32-cl", channels_last=True),
    "bf16-nchw": Variant("bf16-nchw", compute_dtype=torch.bfloat16),
    "bf16-cl": Variant("bf16-cl", channels_last=True, compute_dtype=torch.bfloat16),
    "fp32-cl-compiled": Variant("fp32-cl-compiled", channels_last=True, compile=True),
    "bf16-cl-compiled": Variant("bf16-cl-compiled", channels_last=True, compute_dtype=torch.bfloat16, compile=True),
}


def _images(batch: int, cfg: FlowConfig, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(batch, cfg.in_channels, cfg.image_size, cfg.image_size, generator=gen) * 0.9 + 0.05


class _Trainer:
    def __init__(self, cfg: FlowConfig, variant: Variant, batch: int, seed: int = 0) -> None:
        torch.manual_seed(seed)
        self.variant = variant
        self.batch = variant.batch or batch
        self.model = RealNVP(cfg).train()
        self.model.set_channels_last(variant.channels_last).set_compute_dtype(variant.compute_dtype)
        if variant.compile:
            compile_nets(self.model)
        self.opt = torch.optim.Adam(self.model.parameters(), lr=1e-4)
        x = _images(self.batch, cfg, seed)
        self.x = x.contiguous(memory_format=torch.channels_last) if variant.channels_last else x

    def step(self) -> float:
        loss = self.model.bits_per_dim_of(self.model.log_prob(self.x)).mean()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return float(loss.detach())


def _count(cfg: FlowConfig, batch: int) -> tuple[int, int]:
    torch.manual_seed(0)
    model = RealNVP(cfg).train()
    x = _images(batch, cfg)
    saved = [0]

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved[0] += t.numel() * t.element_size()
        return t

    counter = FlopCounterMode(display=False)
    with counter, torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model.bits_per_dim_of(model.log_prob(x)).mean().backward()
    return int(counter.get_total_flops()), saved[0]


def count_step_flops(cfg: FlowConfig) -> dict[str, Any]:
    """FLOPs of one forward + backward per image (float32 reference model), and the bytes autograd saves for
    the backward, split into a per-image part and a fixed part (the computed weights), from batches 1 and 2."""
    f1, s1 = _count(cfg, 1)
    f2, s2 = _count(cfg, 2)
    n_params = sum(p.numel() for p in RealNVP(cfg).parameters())
    return {
        "flops_per_image": f2 - f1 if f2 - f1 > 0 else f1,
        "gflop_per_image": round((f2 - f1) / 1e9, 3),
        "saved_mb_per_image": round((s2 - s1) / 2**20, 2),
        "saved_mb_fixed": round((2 * s1 - s2) / 2**20, 1),
        "params": n_params,
        # parameters + gradients + Adam's two moments, float32
        "param_state_mb": round(4 * 4 * n_params / 2**20, 1),
    }


def train_throughput(
    cfg: FlowConfig, batch: int, variants: list[Variant], repeats: int = 3, warmup: int = 1
) -> list[dict[str, Any]]:
    """Images/s of each variant: ``warmup`` steps each (compilation included, timed separately), then
    ``repeats`` rounds that alternate the variants step by step, so machine load hits them alike."""
    trainers = {}
    warm: dict[str, float] = {}
    for v in variants:
        tr = _Trainer(cfg, v, batch)
        t = time.perf_counter()
        for _ in range(warmup):
            tr.step()
        warm[v.name] = time.perf_counter() - t
        trainers[v.name] = tr
    times: dict[str, list[float]] = {v.name: [] for v in variants}
    loads: list[float] = []
    for _ in range(repeats):
        for v in variants:
            t = time.perf_counter()
            trainers[v.name].step()
            times[v.name].append(time.perf_counter() - t)
            loads.append(load_now())
    out = []
    for v in variants:
        b = trainers[v.name].batch
        step_s = median(times[v.name])
        out.append(
            {
                "variant": v.name,
                "batch": b,
                "images_per_s": round(b / step_s, 3),
                "step_s_median": round(step_s, 3),
                "step_s_all": [round(t, 3) for t in times[v.name]],
                "warmup_s": round(warm[v.name], 2),
                "load_during": [min(loads), max(loads)],
            }
        )
    out.append({"max_rss_mb_process": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)})
    return out
