r"""Operations on per-level latents (lists of L tensors, level 1 = finest .. L = coarsest).

Every function takes latents as lists of tensors ``[B, C_l, H_l, W_l]`` and returns new lists; inputs are
never modified. ``levels`` selects the levels (1-based) an operation acts on; the others stay fixed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

Latents = list[Tensor]


def _levels(n_levels: int, levels: Sequence[int] | None) -> set[int]:
    if levels is None:
        return set(range(1, n_levels + 1))
    bad = [lv for lv in levels if not 1 <= lv <= n_levels]
    if bad:
        raise ValueError(f"levels must be in 1..{n_levels}, got {bad}")
    return set(levels)


def _check_pair(za: Sequence[Tensor], zb: Sequence[Tensor]) -> None:
    if len(za) != len(zb):
        raise ValueError(f"latents have {len(za)} and {len(zb)} levels")
    for level, (a, b) in enumerate(zip(za, zb, strict=True), start=1):
        if a.shape[1:] != b.shape[1:]:
            raise ValueError(f"level {level}: shapes {list(a.shape)} and {list(b.shape)} differ")


def lerp(a: Tensor, b: Tensor, t: Tensor) -> Tensor:
    """Linear interpolation of ``[1, ...]`` endpoints at times ``t`` ``[n]`` → ``[n, ...]``."""
    t = t.view(-1, *([1] * (a.dim() - 1))).to(a.dtype)
    return a + t * (b - a)


def slerp(a: Tensor, b: Tensor, t: Tensor) -> Tensor:
    r"""Spherical interpolation of ``[1, ...]`` endpoints at ``t`` ``[n]`` → ``[n, ...]``:
    :math:`\frac{\sin((1-t)\Omega)}{\sin\Omega} a + \frac{\sin(t\Omega)}{\sin\Omega} b` with
    :math:`\cos\Omega = \hat a \cdot \hat b`; falls back to :func:`lerp` for (anti)parallel endpoints."""
    af, bf = a.reshape(-1), b.reshape(-1)
    cos = (af @ bf) / (af.norm() * bf.norm()).clamp_min(1e-12)
    omega = torch.arccos(cos.clamp(-1.0, 1.0))
    if float(torch.sin(omega).abs()) < 1e-6:
        return lerp(a, b, t)
    t = t.view(-1, *([1] * (a.dim() - 1))).to(a.dtype)
    so = torch.sin(omega)
    return torch.sin((1 - t) * omega) / so * a + torch.sin(t * omega) / so * b


def interpolate(
    za: Sequence[Tensor],
    zb: Sequence[Tensor],
    steps: int,
    method: str = "linear",
    level_weights: Sequence[float] | None = None,
) -> Latents:
    """A path of ``steps`` frames from ``za`` to ``zb`` (each ``[1, ...]`` per level).

    Frame ``k`` sits at ``t_k = k/(steps-1)``; level ``l`` moves to ``t_k · w_l`` where ``w_l`` is its
    weight (default 1 for every level; 0 keeps image A's level, 1 moves it all the way to B).
    Returns latents ``[steps, ...]`` per level. ``method``: ``"linear"`` or ``"spherical"``.
    """
    _check_pair(za, zb)
    if steps < 2:
        raise ValueError(f"steps must be >= 2, got {steps}")
    if method not in ("linear", "spherical"):
        raise ValueError(f"method must be 'linear' or 'spherical', got {method!r}")
    weights = [1.0] * len(za) if level_weights is None else [float(w) for w in level_weights]
    if len(weights) != len(za):
        raise ValueError(f"expected {len(za)} level weights, got {len(weights)}")
    fn = lerp if method == "linear" else slerp
    t = torch.linspace(0.0, 1.0, steps, dtype=za[0].dtype, device=za[0].device)
    return [fn(a[:1], b[:1], t * w) for a, b, w in zip(za, zb, weights, strict=True)]


def manifold(
    z1: Sequence[Tensor],
    z2: Sequence[Tensor],
    z3: Sequence[Tensor],
    z4: Sequence[Tensor],
    n: int,
    levels: Sequence[int] | None = None,
) -> Latents:
    r"""The paper's manifold through four examples (eq. 19), on an ``n × n`` grid:

    .. math:: z = \cos\phi\,(\cos\phi' z_1 + \sin\phi' z_2) + \sin\phi\,(\cos\phi' z_3 + \sin\phi' z_4)

    with :math:`\phi` (rows) and :math:`\phi'` (columns) in :math:`[0, \pi/2]`. Returns ``[n*n, ...]``
    per level, row-major, so the corners are z1 (top left), z2 (top right), z3 (bottom left) and z4
    (bottom right). Levels not in ``levels`` keep ``z1``'s values in every cell.
    """
    for other in (z2, z3, z4):
        _check_pair(z1, other)
    if n < 2:
        raise ValueError(f"n must be >= 2, got {n}")
    chosen = _levels(len(z1), levels)
    ang = torch.linspace(0.0, math.pi / 2, n, dtype=torch.float64)
    phi, phi2 = torch.meshgrid(ang, ang, indexing="ij")
    phi, phi2 = phi.reshape(-1), phi2.reshape(-1)
    coef = torch.stack(
        [phi.cos() * phi2.cos(), phi.cos() * phi2.sin(), phi.sin() * phi2.cos(), phi.sin() * phi2.sin()], dim=1
    )
    # Exact corners: cos(pi/2) is 6e-17, not 0, in floating point.
    coef = torch.where(coef.abs() < 1e-12, torch.zeros_like(coef), coef)
    out: Latents = []
    for level, parts in enumerate(zip(z1, z2, z3, z4, strict=True), start=1):
        a = parts[0][:1]
        if level not in chosen:
            out.append(a.expand(n * n, *a.shape[1:]).clone())
            continue
        stack = torch.stack([p[:1].reshape(-1) for p in parts])  # [4, d]
        cells = coef.to(stack.dtype).to(stack.device) @ stack
        out.append(cells.view(n * n, *a.shape[1:]))
    return out


def resample_finer(
    z: Sequence[Tensor],
    keep_from: int,
    n: int,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
) -> Latents:
    """Keeps levels ``keep_from..L`` of ``z`` (``[1, ...]``) and draws levels ``1..keep_from-1`` afresh
    from the prior at ``temperature`` (the paper's appendix D). ``keep_from = L+1`` resamples all levels;
    ``keep_from = 1`` keeps everything. Returns ``n`` draws, ``[n, ...]`` per level."""
    L = len(z)
    if not 1 <= keep_from <= L + 1:
        raise ValueError(f"keep_from must be in 1..{L + 1}, got {keep_from}")
    out: Latents = []
    for level, zl in enumerate(z, start=1):
        if level >= keep_from:
            out.append(zl[:1].expand(n, *zl.shape[1:]).clone())
        else:
            noise = torch.randn((n, *zl.shape[1:]), generator=generator, dtype=zl.dtype)
            out.append(noise.to(zl.device) * temperature)
    return out


def swap_levels(za: Sequence[Tensor], zb: Sequence[Tensor], levels_from_b: Sequence[int]) -> Latents:
    """``za`` with the levels in ``levels_from_b`` taken from ``zb`` (e.g. coarse from A, fine from B)."""
    _check_pair(za, zb)
    chosen = _levels(len(za), levels_from_b)
    return [(b if level in chosen else a).clone() for level, (a, b) in enumerate(zip(za, zb, strict=True), start=1)]


def mean_latents(zs: Sequence[Tensor]) -> Latents:
    """Per-level mean over the batch: ``[B, ...] -> [1, ...]``."""
    return [z.mean(dim=0, keepdim=True) for z in zs]


def attribute_direction(zs_a: Sequence[Tensor], zs_b: Sequence[Tensor]) -> Latents:
    """Per-level direction from set B to set A: ``mean(zs_a) - mean(zs_b)``, each ``[1, ...]``
    (e.g. A = ankle boots, B = sneakers gives "sneaker → ankle boot")."""
    _check_pair(zs_a, zs_b)
    return [a - b for a, b in zip(mean_latents(zs_a), mean_latents(zs_b), strict=True)]


def apply_direction(
    z: Sequence[Tensor],
    direction: Sequence[Tensor],
    strength: float | Sequence[float],
    levels: Sequence[int] | None = None,
) -> Latents:
    """``z + strength · direction`` on the chosen levels. ``strength`` is a float (one result per input
    row) or a sequence of strengths (a strip: ``[len(strength), ...]`` from the first row of ``z``)."""
    _check_pair(z, direction)
    chosen = _levels(len(z), levels)
    if isinstance(strength, int | float):
        return [
            zl + strength * d if lv in chosen else zl.clone()
            for lv, (zl, d) in enumerate(zip(z, direction, strict=True), 1)
        ]
    s = torch.as_tensor(list(strength), dtype=z[0].dtype, device=z[0].device)
    out: Latents = []
    for level, (zl, d) in enumerate(zip(z, direction, strict=True), start=1):
        base = zl[:1].expand(len(s), *zl.shape[1:])
        out.append(base + s.view(-1, 1, 1, 1) * d if level in chosen else base.clone())
    return out


def level_stats(zs: Sequence[Tensor]) -> list[dict[str, float]]:
    """Per level of the first example: its size, mean, std, L2 norm, and norm/√d (≈1 under the prior). In float64,
    with NumPy: a dozen small reductions per level, which as torch calls would each release the GIL (and, in a
    busy server, wait to win it back)."""
    rows = []
    for level, z in enumerate(zs, start=1):
        v = z.numpy(force=True)[0].astype(np.float64).reshape(-1)
        norm = float(np.sqrt(np.dot(v, v)))
        rows.append(
            {
                "level": level,
                "dims": v.size,
                "mean": float(v.mean()),
                "std": float(v.std()),
                "norm": norm,
                "norm_per_sqrt_dim": norm / math.sqrt(v.size),
            }
        )
    return rows


def temperature_rows(
    latent_shapes: Sequence[tuple[int, ...]], temperatures: Sequence[float], per_row: int, generator: torch.Generator
) -> Latents:
    """Latents of a sample grid with one row of ``per_row`` draws per temperature: row ``r`` is
    ``z ~ N(0, T_r² I)`` on every level (the paper's sampling with a temperature, sec. 5). Drawn row by row,
    level by level, from ``generator``, so a seed names one grid (the model card's and the trainer's sample grids
    and the app's temperature rows are the same draws). Returns per level ``[len(temperatures) * per_row, ...]``,
    row-major."""
    rows = [[torch.randn((per_row, *s), generator=generator) * t for s in latent_shapes] for t in temperatures]
    return [torch.cat([row[level] for row in rows]) for level in range(len(latent_shapes))]
