"""The reference: FLOP/s of one plain 3×3 convolution, the flow's dominant operation, in each dtype and layout."""

from __future__ import annotations

import time
from typing import Any

import torch
import torch.nn.functional as F

from bench.common import load_now, median
from nvp_core.fastpath import bf16_can_be_fast


def conv_flops(batch: int, c_in: int, c_out: int, size: int, k: int = 3) -> int:
    """Multiply-adds × 2 of a same-padded ``k×k`` convolution on ``[batch, c_in, size, size]``."""
    return 2 * batch * c_in * c_out * k * k * size * size


def conv_rate(
    dtype: torch.dtype,
    channels_last: bool,
    batch: int = 64,
    channels: int = 64,
    size: int = 28,
    backward: bool = False,
    min_seconds: float = 1.0,
    max_iters: int = 20,
) -> dict[str, Any]:
    """GFLOP/s (median over iterations after one warm-up call) of a ``channels→channels`` 3×3 convolution."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, channels, size, size, generator=gen)
    w = torch.randn(channels, channels, 3, 3, generator=gen) * 0.05
    if channels_last:
        x, w = x.contiguous(memory_format=torch.channels_last), w.contiguous(memory_format=torch.channels_last)
    x, w = x.to(dtype).requires_grad_(backward), w.to(dtype).requires_grad_(backward)

    def call() -> None:
        if backward:
            y = F.conv2d(x, w, padding=1)
            y.backward(torch.ones_like(y))
        else:
            with torch.no_grad():
                F.conv2d(x, w, padding=1)

    call()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < max_iters and (time.perf_counter() - start < min_seconds or len(times) < 2):
        t = time.perf_counter()
        call()
        times.append(time.perf_counter() - t)
    flops = conv_flops(batch, channels, channels, size) * (3 if backward else 1)
    return {
        "dtype": str(dtype).replace("torch.", ""),
        "layout": "channels_last" if channels_last else "NCHW",
        "pass": "fwd+bwd" if backward else "fwd",
        "shape": [batch, channels, size, size],
        "gflops_per_s": round(flops / median(times) / 1e9, 2),
        "iters": len(times),
        "load": load_now(),
    }


def conv_reference(quick: bool = False) -> list[dict[str, Any]]:
    """All four dtype × layout combinations (bf16 at batch 8 where it is emulated, which is very slow)."""
    out = []
    bf16_batch = 64 if bf16_can_be_fast(torch.device("cpu")) else 8
    for dtype in (torch.float32, torch.bfloat16):
        for cl in (False, True):
            batch = 64 if dtype == torch.float32 else bf16_batch
            if quick:
                batch = min(batch, 8)
            out.append(conv_rate(dtype, cl, batch=batch, min_seconds=0.3 if quick else 1.0))
    out.append(conv_rate(torch.float32, True, batch=8 if quick else 64, backward=True))
    out.append(conv_rate(torch.float32, False, batch=8 if quick else 64, backward=True))
    return out
