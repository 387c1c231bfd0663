"""Shared helpers for the math tests: non-trivial weights and brute-force Jacobians."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from nvp_core import BatchNormFlow, FlowConfig, RealNVP


def perturb(module: nn.Module, seed: int = 0, strength: float = 1.0) -> nn.Module:
    """Moves every parameter away from its (identity) initialisation, so that the tests exercise real
    s and t functions, then runs a few training batches so batch-norm statistics are not trivial."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            noise = torch.randn(p.shape, generator=g, dtype=torch.float64).to(p.dtype)
            if name.endswith(".g") or name == "g" or name.endswith("scale"):
                p.copy_(strength * (0.5 + 0.5 * noise.abs()))
            else:
                p.add_(0.3 * strength * noise)
    return module


def warm_batchnorm(module: nn.Module, make_batch: Callable[[], Tensor], steps: int = 3) -> nn.Module:
    """Runs ``steps`` training-mode forward passes with a high momentum, then switches to eval mode."""
    saved = {}
    for m in module.modules():
        if isinstance(m, BatchNormFlow | nn.BatchNorm2d):
            saved[m] = m.momentum
            m.momentum = 0.5
    module.train()
    with torch.no_grad():
        for _ in range(steps):
            module(make_batch())
    for m, mom in saved.items():
        m.momentum = mom
    return module.eval()


def jacobian_logdet(fn: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
    """``log |det J|`` of ``fn`` at a single example ``x`` ``[1, ...]``, by brute force."""
    flat = x.reshape(-1)

    def f(v: Tensor) -> Tensor:
        return fn(v.view_as(x)).reshape(-1)

    jac = torch.autograd.functional.jacobian(f, flat, vectorize=True)
    sign, logabs = torch.linalg.slogdet(jac)
    assert sign != 0, "Jacobian is singular"
    return logabs


def nontrivial_model(
    cfg: FlowConfig, seed: int = 0, dtype: torch.dtype = torch.float64, strength: float = 1.0
) -> RealNVP:
    """A model in eval mode with perturbed weights and warmed batch-norm statistics."""
    torch.manual_seed(seed)
    model = RealNVP(cfg).to(dtype)
    perturb(model, seed, strength)
    c, s = cfg.in_channels, cfg.image_size
    gen = torch.Generator().manual_seed(seed + 1)
    warm_batchnorm(model, lambda: torch.rand(8, c, s, s, generator=gen, dtype=torch.float64).to(dtype) * 0.9 + 0.05)
    return model
