"""The one layer contract of ``nvp_core``.

Every bijective layer is an :class:`torch.nn.Module` that subclasses :class:`Bijector`:

* ``forward(x) -> (y, logdet)`` maps **data → latent**. ``logdet`` is
  ``log |det ∂y/∂x|`` summed over every dimension of one example, with shape ``[B]``;
  a layer starts its sum from ``x.new_zeros(B)`` so that device and dtype follow the input.
* ``inverse(y) -> x`` maps latent → data and is exact (up to floating point) in eval mode.

Permutations (squeeze, channel reordering) return a zero log-det. Composites add the log-dets of
their parts and walk their parts in reverse order for the inverse.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import cast

import torch
from torch import Tensor, nn


class Bijector(nn.Module):
    """Base class: ``forward(x) -> (y, logdet[B])`` (data → latent) and ``inverse(y) -> x``."""

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError

    def inverse(self, y: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def describe(self) -> str:
        """A short human-readable name for tables (how-it-works, traces); layers override it with details."""
        return type(self).__name__

    def forward_parts(self, x: Tensor) -> tuple[Tensor, Tensor, list[Tensor]]:
        """``forward(x)`` and the log-det ``[B]`` of each of its parts in order (a plain layer is its one part)."""
        y, logdet = self(x)
        return y, logdet, [logdet]

    def output_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        """The shape of ``forward``'s output (without the batch) for an input of ``shape``; most layers keep it."""
        return shape


class Sequential(Bijector):
    """A chain of bijectors applied in order; the log-det is the sum of the parts' log-dets."""

    def __init__(self, layers: Iterable[Bijector]) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)

    @property
    def parts(self) -> Sequence[Bijector]:
        """``layers`` typed as what it holds (``nn.ModuleList`` yields plain modules to a type checker)."""
        return cast("Sequence[Bijector]", self.layers)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        y, logdet, _ = self.forward_parts(x)
        return y, logdet

    def forward_parts(self, x: Tensor) -> tuple[Tensor, Tensor, list[Tensor]]:
        # One sum for forward, trace and a frozen graph of this chain, so their log-dets agree to the bit.
        logdet = x.new_zeros(x.shape[0])
        parts = []
        for layer in self.parts:
            x, ld = layer(x)
            parts.append(ld)
            logdet = logdet + ld
        return x, logdet, parts

    def inverse(self, y: Tensor) -> Tensor:
        for layer in reversed(self.parts):
            y = layer.inverse(y)
        return y

    def output_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        for layer in self.parts:
            shape = layer.output_shape(shape)
        return shape


def sum_except_batch(x: Tensor) -> Tensor:
    """Sum over every dimension but the first: ``[B, ...] -> [B]``."""
    return x.reshape(x.shape[0], -1).sum(dim=1)


def standard_normal_logprob(z: Tensor) -> Tensor:
    """Log-density of a standard normal, summed per example: ``[B, ...] -> [B]``."""
    return sum_except_batch(-0.5 * (z * z) - 0.5 * torch.log(torch.tensor(2 * torch.pi, dtype=z.dtype)))
