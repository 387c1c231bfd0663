"""Inference with the s,t ResNets traced and frozen by TorchScript: the same networks, run as one graph each.

Freezing makes the weights constants (weight norm computed once, each batch norm that follows a convolution folded
into it), and a traced network runs without the Python interpreter, so it does not hold the GIL: a server whose
sessions decode in several threads uses every core. Inference only (autograd off); the parameters stay on the model
(for counting, saving and training, which run the eager networks). Whether it pays and keeps the pictures is
measured per machine and model by :func:`try_freezing`.
"""

from __future__ import annotations

import statistics
import time
import warnings
from typing import Any

import torch

from .fastpath import ALL_PATHS, FastPath, distance, fidelity_latents, pictures_and_bpd
from .model import RealNVP
from .resnet import ResNet


def _nets(model: RealNVP) -> dict[str, ResNet]:
    return {name: m for name, m in model.named_modules() if isinstance(m, ResNet)}


def unfreeze(model: RealNVP) -> RealNVP:
    """Back to the eager networks (in place)."""
    for net in _nets(model).values():
        net.__dict__.pop("frozen", None)
    return model


def is_frozen(model: RealNVP) -> bool:
    return any("frozen" in net.__dict__ for net in _nets(model).values())


def freeze(model: RealNVP, batch: int = 2) -> RealNVP:
    """Traces each s,t ResNet of ``model`` (eval mode, its fast path applied) at its input in a decode of ``batch``
    samples and freezes it; the model then runs the frozen networks whenever autograd is off (in place)."""
    unfreeze(model)
    inputs: dict[str, torch.Tensor] = {}
    nets = _nets(model)
    hooks = [
        net.register_forward_pre_hook(lambda _m, a, n=name: inputs.setdefault(n, a[0])) for name, net in nets.items()
    ]
    try:
        with torch.inference_mode():
            model.inverse(model.sample_latents(batch, 0.5, torch.Generator().manual_seed(0)))
    finally:
        for h in hooks:
            h.remove()
    traced = {}
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")  # TorchScript's notices (tracer, maintenance mode)
        for name, net in nets.items():
            graph = torch.jit.trace(net.eval(), inputs[name].clone(), check_trace=False)
            traced[name] = torch.jit.freeze(graph)
    for name, net in nets.items():
        net.__dict__["frozen"] = traced[name]  # a plain attribute: not a submodule, not in the state dict
    return model


def _median_ms(fn: Any, other: Any, rounds: int) -> tuple[float, float]:
    """Median ms of ``fn`` and ``other`` timed in alternating rounds (a load that comes and goes hits both)."""
    a: list[float] = []
    b: list[float] = []
    for r in range(rounds + 1):
        for f, out in ((fn, a), (other, b)) if r % 2 else ((other, b), (fn, a)):
            t = time.perf_counter()
            f()
            if r:  # round 0 warms up
                out.append(time.perf_counter() - t)
    return 1e3 * statistics.median(a), 1e3 * statistics.median(b)


@torch.no_grad()
def try_freezing(
    model: RealNVP,
    path: FastPath,
    batch: int = 16,
    rounds: int = 4,
    max_grey_levels: int = 1,
    max_bpd_diff: float = 1e-4,
) -> dict[str, Any]:
    """Freezes ``model`` (running ``path``, float32) if its frozen networks draw the same pictures as float32 NCHW
    (within ``max_grey_levels``, bits/dim within ``max_bpd_diff``, as :func:`nvp_core.fastpath.faithful` asks of a
    path) and decode ``batch`` samples no slower than its eager networks; else leaves it eager. Returns the report."""
    if path.dtype is not None:
        return {"frozen": False, "why": "only float32 paths are frozen"}
    zs = fidelity_latents(model)
    ALL_PATHS[0].apply(model)
    ref = pictures_and_bpd(model, zs)
    path.apply(model)
    freeze(model)
    report: dict[str, Any] = distance(ref, pictures_and_bpd(model, zs))
    big = model.sample_latents(batch, 0.7, torch.Generator().manual_seed(1))
    frozen_nets = {name: net.__dict__["frozen"] for name, net in _nets(model).items()}

    def eager() -> None:
        unfreeze(model)
        model.inverse(big)

    def frozen() -> None:
        for name, net in _nets(model).items():
            net.__dict__["frozen"] = frozen_nets[name]
        model.inverse(big)

    report["frozen_ms"], report["eager_ms"] = (round(v, 2) for v in _median_ms(frozen, eager, rounds))
    keep = (
        report["max_grey_levels"] <= max_grey_levels
        and report["max_bpd_diff"] <= max_bpd_diff
        and report["frozen_ms"] <= report["eager_ms"]
    )
    if keep:
        frozen()
    else:
        unfreeze(model)
    report["frozen"] = keep
    return report
