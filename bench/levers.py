"""A/B of single inference levers on the interactive model (one image, encode + decode), alternating the variants
in one process so that machine load hits them alike; plus a check of where channels_last actually reaches.

    python -m bench.levers --threads 1 --rounds 8     # writes bench/results/levers-<UTC time>.json

Each variant adds one lever to the previous one:
  plain:        no_grad, NCHW, weight norm recomputed per call, batch-norm bijector affine map recomputed
  +infer_mode:  torch.inference_mode instead of no_grad
  +chan_last:   model.set_channels_last(True) and a channels_last input
  +wn_cache:    WNConv2d caches g·v/||v|| between calls (invalidated on in-place updates)
  +bn_cache:    BatchNormFlow caches its eval affine map (same invalidation)
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import torch

from bench.common import load_now, machine_info, summarize_ms, table, write_results
from bench.latency import shipped_or_preset_model
from nvp_core import FlowConfig, RealNVP
from nvp_core.batchnorm import BatchNormFlow
from nvp_core.resnet import WNConv2d

LEVERS = ["plain", "+infer_mode", "+chan_last", "+wn_cache", "+bn_cache"]


def conv_layouts(channels_last_model: bool) -> dict[str, int]:
    """How many convolutions see a channels_last input when the *input image* is channels_last."""
    cfg = FlowConfig(in_channels=1, image_size=28, num_scales=2, mid_channels=8, num_blocks=2)
    model = RealNVP(cfg).eval().set_channels_last(channels_last_model)
    seen: list[bool] = []

    def hook(_m: torch.nn.Module, inp: tuple[torch.Tensor, ...]) -> None:
        seen.append(inp[0].is_contiguous(memory_format=torch.channels_last) and not inp[0].is_contiguous())

    for m in model.modules():
        if isinstance(m, WNConv2d):
            m.register_forward_pre_hook(hook)
    with torch.no_grad():
        model(torch.rand(2, 1, 28, 28).contiguous(memory_format=torch.channels_last))
    return {"convs": len(seen), "channels_last": sum(seen)}


def _setup(model: RealNVP, level: int) -> tuple[Callable[[], AbstractContextManager[Any]], bool]:
    WNConv2d.cache_weights = level >= 3
    BatchNormFlow._use_cache_enabled = level >= 4  # type: ignore[attr-defined]
    model.set_channels_last(level >= 2)
    return (torch.inference_mode if level >= 1 else torch.no_grad), level >= 2


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.levers", description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rounds", type=int, default=8)
    p.add_argument("--calls", type=int, default=5, help="timed calls per variant and round")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    model, source = shipped_or_preset_model()
    x = torch.rand(1, 1, model.config.image_size, model.config.image_size) * 0.9 + 0.05
    original_use_cache = BatchNormFlow._use_cache

    def gated(self: BatchNormFlow) -> bool:
        return getattr(BatchNormFlow, "_use_cache_enabled", True) and original_use_cache(self)

    BatchNormFlow._use_cache = gated  # type: ignore[method-assign]
    times: dict[str, list[float]] = {n: [] for n in LEVERS}
    try:
        for _ in range(args.rounds):
            for level, name in enumerate(LEVERS):
                mode, cl = _setup(model, level)
                xi = x.contiguous(memory_format=torch.channels_last) if cl else x
                with mode():
                    zs, _ = model(xi)
                    model.inverse(zs)
                    for _ in range(args.calls):
                        t = time.perf_counter()
                        zs, _ = model(xi)
                        model.inverse(zs)
                        times[name].append(time.perf_counter() - t)
    finally:
        BatchNormFlow._use_cache = original_use_cache  # type: ignore[method-assign]
        WNConv2d.cache_weights = True
        model.set_channels_last(False)
    rows = [{"variant": n, **summarize_ms(times[n])} for n in LEVERS]
    layouts = {"default model": conv_layouts(False), "set_channels_last(True)": conv_layouts(True)}
    print(f"encode+decode of one image, {source}, {args.threads} thread(s), load {load_now()}")
    print(table(rows, ["variant", "p50_ms", "p90_ms", "min_ms", "n"]))
    print("convolutions reached by a channels_last input image:", layouts)
    path = write_results(
        "levers", {"machine": machine_info(), "args": vars(args), "model": source, "rows": rows, "layouts": layouts}
    )
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
