"""Interactive latency of the explorer's operations: encode + decode of one image, a 16-frame interpolation,
64 samples; plus forward/inverse time per batch and per image for the default configurations."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from bench.common import load_now, summarize_ms, time_calls
from nvp_core import FlowConfig, RealNVP, load_model
from nvp_core.fastpath import ALL_PATHS, FastPath
from nvp_core.fastpath_choice import choose
from nvp_core.latent import interpolate
from nvp_core.resnet import WNConv2d
from train.compiling import compile_nets

SHIPPED = Path(__file__).resolve().parent.parent / "models" / "fashion_mnist.safetensors"


@dataclass(frozen=True)
class InferenceVariant:
    """``baseline``: what a plain implementation does (no_grad, NCHW, weight norm recomputed per call, one
    decode per interpolation frame). ``fast``: inference_mode, channels_last, cached weights, batched decode."""

    name: str
    fast: bool
    threads: int
    compile: bool = False


def shipped_or_preset_model() -> tuple[RealNVP, str]:
    """The shipped Fashion-MNIST model if it exists, else a freshly initialised model of the same preset
    (timings do not depend on the weights' values)."""
    if SHIPPED.exists():
        model, _meta = load_model(SHIPPED)
        return model.eval(), str(SHIPPED.name)
    from train.config import preset

    cfg = preset("fashion-mnist").flow_config(1, 28)
    torch.manual_seed(0)
    return RealNVP(cfg).eval(), "fashion-mnist preset (random init; shipped model not present)"


def _mode(fast: bool) -> AbstractContextManager[Any]:
    return torch.inference_mode() if fast else torch.no_grad()


def _prep(model: RealNVP, x: torch.Tensor, fast: bool) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last) if fast else x


def _ops(model: RealNVP, fast: bool) -> dict[str, Callable[[], None]]:
    cfg = model.config
    gen = torch.Generator().manual_seed(0)
    x1 = torch.rand(1, cfg.in_channels, cfg.image_size, cfg.image_size, generator=gen) * 0.9 + 0.05
    x2 = torch.rand(2, cfg.in_channels, cfg.image_size, cfg.image_size, generator=gen) * 0.9 + 0.05

    def encode_decode() -> None:
        with _mode(fast):
            zs, _ = model(_prep(model, x1, fast))
            model.inverse(zs)

    def interpolation() -> None:
        with _mode(fast):
            zs, _ = model(_prep(model, x2, fast))
            za, zb = [z[:1] for z in zs], [z[1:] for z in zs]
            frames = interpolate(za, zb, 16)
            if fast:
                model.inverse(frames)  # one batched decode of all 16 frames
            else:
                for i in range(16):
                    model.inverse([z[i : i + 1] for z in frames])

    def samples() -> None:
        with _mode(fast):
            model.sample(64, temperature=0.7, generator=torch.Generator().manual_seed(1))

    # The Interpolate page's weight sliders: a 9-frame path decoded whole (a move of the coarsest level's
    # weight), or from the memoised coarse state when only the finest level's weight moved.
    with _mode(fast):
        zs, _ = model(_prep(model, x2, fast))
        path = interpolate([z[:1] for z in zs], [z[1:] for z in zs], 9, level_weights=[0.5] + [1.0] * (len(zs) - 1))
        coarse = model.inverse_coarse(path[1:]) if len(path) > 1 else None

    def weight_move_whole() -> None:
        with _mode(fast):
            model.inverse(path)

    def weight_move_finest() -> None:
        with _mode(fast):
            if coarse is None:
                model.inverse(path)
            else:
                model.inverse_fine(coarse, path[:1])

    return {
        "encode_decode_1": encode_decode,
        "interpolation_16": interpolation,
        "samples_64": samples,
        "weight_move_whole_9": weight_move_whole,
        "weight_move_finest_9": weight_move_finest,
    }


#: timed calls of each operation per variant and round
CALLS = {
    "encode_decode_1": 5,
    "interpolation_16": 1,
    "samples_64": 1,
    "weight_move_whole_9": 3,
    "weight_move_finest_9": 3,
}


def interactive_latency(
    model: RealNVP, variants: list[InferenceVariant], rounds: int = 8, fast_path: FastPath = ALL_PATHS[1]
) -> list[dict[str, Any]]:
    """p50/p90 of the three interactive operations for each variant. The variants alternate round by round
    (so that machine load hits them alike); a compiled variant runs on its own compiled copy of the model.
    Fast variants run ``fast_path`` (the app's: ``nvp_core.fastpath_choice.configure(..., same_pictures=True)``),
    baselines float32 NCHW."""
    models = {v.name: compile_nets(copy.deepcopy(model)) if v.compile else model for v in variants}
    times: dict[str, dict[str, list[float]]] = {v.name: {op: [] for op in CALLS} for v in variants}
    first: dict[str, float] = {}
    loads: list[float] = []
    prev_threads = torch.get_num_threads()
    try:
        for r in range(rounds):
            for v in variants:
                m = models[v.name]
                torch.set_num_threads(v.threads)
                WNConv2d.cache_weights = v.fast
                (fast_path if v.fast else ALL_PATHS[0]).apply(m)
                ops = _ops(m, v.fast)
                if r == 0:
                    t = time.perf_counter()
                    for fn in ops.values():
                        fn()  # first calls: compilation, allocation
                    first[v.name] = time.perf_counter() - t
                for op, fn in ops.items():
                    times[v.name][op] += time_calls(fn, CALLS[op], warmup=0)
                loads.append(load_now())
    finally:
        torch.set_num_threads(prev_threads)
        WNConv2d.cache_weights = True
        for m in models.values():
            ALL_PATHS[0].apply(m)
    return [
        {
            "variant": v.name,
            "threads": v.threads,
            "first_calls_s": round(first[v.name], 2),
            **{op: summarize_ms(times[v.name][op]) for op in CALLS},
            "load_during": [min(loads), max(loads)],
        }
        for v in variants
    ]


def forward_inverse_times(cfg: FlowConfig, batch: int, fast: bool, repeats: int = 5) -> dict[str, Any]:
    """Forward and inverse time of ``cfg`` at ``batch`` (eval mode; ``fast``: the measured fast path)."""
    torch.manual_seed(0)
    path = choose(cfg, "infer", batch).path if fast else ALL_PATHS[0]
    model = path.apply(RealNVP(cfg).eval())
    x = torch.rand(batch, cfg.in_channels, cfg.image_size, cfg.image_size) * 0.9 + 0.05
    x = _prep(model, x, fast)
    with _mode(fast):
        zs, _ = model(x)
        fwd = time_calls(lambda: model(x), repeats)
        inv = time_calls(lambda: model.inverse(zs), repeats)
    f, i = summarize_ms(fwd), summarize_ms(inv)
    return {
        "batch": batch,
        "fast": fast,
        "path": path.name,
        "forward_ms_p50": f["p50_ms"],
        "inverse_ms_p50": i["p50_ms"],
        "forward_ms_per_image": round(f["p50_ms"] / batch, 3),
        "inverse_ms_per_image": round(i["p50_ms"] / batch, 3),
        "load": load_now(),
    }


def default_configs() -> dict[str, FlowConfig]:
    """FlowConfig's defaults, the training presets at their datasets' sizes, and the issue's reference."""
    from bench.train_speed import PAPER_28
    from train.config import preset

    return {
        "FlowConfig() default": FlowConfig(),
        "preset fashion-mnist": preset("fashion-mnist").flow_config(1, 28),
        "preset digits (8x8)": preset("digits").flow_config(1, 8),
        "paper CIFAR-10 net at 28x28x1": PAPER_28,
    }
