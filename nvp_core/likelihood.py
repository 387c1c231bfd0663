"""Dequantisation and bits/dim (paper, sec. 4.1), with the split of the bits/dim by level."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .base import standard_normal_logprob
from .model import RealNVP


def dequantize(images_uint8: Tensor, generator: torch.Generator | None = None, noise: bool = True) -> Tensor:
    """Integer images ``[B, C, H, W]`` in 0..255 → continuous images in [0, 1): ``(x + u) / 256`` with
    ``u ~ U[0, 1)`` (or ``u = 0.5``, the bin centre, when ``noise`` is false). Float32 output."""
    if images_uint8.is_floating_point():
        raise TypeError("dequantize expects integer pixel values (uint8, 0..255), got a float tensor")
    x = images_uint8.to(torch.float32)
    if noise:
        device = x.device if generator is None else generator.device
        u = torch.rand(x.shape, generator=generator, device=device).to(x.device)
    else:
        u = torch.full_like(x, 0.5)
    return (x + u) / 256.0


def _model_input(model: RealNVP, images_uint8: Tensor, seed: int | None, generator: torch.Generator | None) -> Tensor:
    if generator is None and seed is not None:
        generator = torch.Generator().manual_seed(seed)
    ref = next(model.parameters())
    return dequantize(images_uint8.cpu(), generator).to(device=ref.device, dtype=ref.dtype)


def bits_per_dim(
    model: RealNVP, images_uint8: Tensor, seed: int | None = 0, generator: torch.Generator | None = None
) -> Tensor:
    r"""``[B]`` bits per dimension of 8-bit images: :math:`-\log_2 p(x + u) / D + 8`, with the uniform
    dequantisation noise ``u`` drawn from ``generator`` (or a generator seeded with ``seed``; ``seed=None``
    and no generator: the global RNG). Uses the model in its current mode; call ``model.eval()`` first
    for the exact, deterministic value."""
    x = _model_input(model, images_uint8, seed, generator)
    return model.bits_per_dim_of(model.log_prob(x))


def bits_per_dim_breakdown(
    model: RealNVP, images_uint8: Tensor, seed: int | None = 0, generator: torch.Generator | None = None
) -> dict[str, Tensor]:
    """Splits the bits/dim into additive terms, each ``[B]``, that sum to :func:`bits_per_dim`:

    * ``"prior level l"``: ``-log N(z_l) / (D ln 2)`` for every level l = 1..L;
    * ``"logdet <layer>"``: ``-logdet / (D ln 2)`` of the logit layer and of each scale;
    * ``"dequantisation"``: the constant +8 bits of the 1/256 bins.
    """
    x = _model_input(model, images_uint8, seed, generator)
    zs, parts = model.trace(x)
    scale = 1.0 / (model.dim * math.log(2.0))
    out: dict[str, Tensor] = {}
    for level, z in enumerate(zs, start=1):
        out[f"prior level {level}"] = -standard_normal_logprob(z) * scale
    out["logdet logit"] = -parts[0][1] * scale
    for name, ld in parts[1:]:
        key = f"logdet {name.split(':')[0]}"
        out[key] = out.get(key, torch.zeros_like(ld)) - ld * scale
    out["dequantisation"] = torch.full_like(parts[0][1], 8.0)
    return out
