"""Real NVP for vectors (the paper's 2-D toy of fig. 1): the image flow's channel couplings and batch norm on
``[B, D]`` points, seen as ``[B, D, 1, 1]`` images of one pixel."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple, cast

import torch
from torch import Tensor, nn

from .base import Bijector, Sequential, standard_normal_logprob
from .batchnorm import BatchNormFlow
from .coupling import ChannelCoupling


class MLP(nn.Module):
    """``[B, c_in, 1, 1] -> [B, c_out, 1, 1]``: ``depth`` hidden layers of ``hidden`` units (SiLU, so that the learned
    density is smooth) and a zero-initialised output layer, so that a coupling built on it starts as the identity."""

    def __init__(self, c_in: int, hidden: int, c_out: int, depth: int = 2) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = c_in
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), nn.SiLU()]
            width = hidden
        out = nn.Linear(width, c_out)
        nn.init.zeros_(out.weight)
        nn.init.zeros_(out.bias)
        self.body = nn.Sequential(*layers, out)

    def forward(self, h: Tensor) -> Tensor:
        return self.body(h.flatten(1)).view(h.shape[0], -1, 1, 1)


class Stage(NamedTuple):
    """One step of a layer-by-layer trace: the layer's name (``"data"`` / ``"latent"`` for the start), the points
    after it ``[N, D]`` and the log-det of that step ``[N]`` (zeros for the start)."""

    name: str
    points: Tensor
    logdet: Tensor


class ToyFlow(Bijector):
    r"""``num_couplings`` affine channel couplings with alternating halves fixed, a batch-norm bijector between
    consecutive couplings, and a standard normal prior on ``z``:

    .. math:: \log p(x) = \log \mathcal N(f(x); 0, I) + \log |\det \partial f / \partial x|.

    ``forward(x [B, D]) -> (z [B, D], logdet[B])`` (data → latent); ``inverse(z) -> x``. ``dim`` must be even
    (each coupling conditions one half on the other). Each coupling's log-scale is bounded, ``|s| <= scale``
    (``scale`` starts at 1), and every coupling starts as the identity.
    """

    def __init__(
        self,
        dim: int = 2,
        num_couplings: int = 6,
        hidden: int = 64,
        depth: int = 2,
        batchnorm: bool = True,
        momentum: float = 0.05,
    ) -> None:
        super().__init__()
        if dim < 2 or dim % 2:
            raise ValueError(f"ToyFlow needs an even dimension of at least 2, got {dim}")
        if num_couplings < 1 or hidden < 1 or depth < 1:
            raise ValueError(
                f"ToyFlow needs at least one coupling, unit and layer, got {num_couplings}, {hidden}, {depth}"
            )
        self.dim = dim
        layers: list[Bijector] = []
        for k in range(num_couplings):
            if k and batchnorm:
                layers.append(BatchNormFlow(dim, momentum=momentum))
            layers.append(ChannelCoupling(dim, hidden, 0, k % 2, net=MLP(dim // 2, hidden, dim, depth)))
        self.flow = Sequential(layers)

    @property
    def parts(self) -> Sequence[Bijector]:
        return self.flow.parts

    def _check(self, x: Tensor) -> None:
        if x.dim() != 2 or x.shape[1] != self.dim:
            raise ValueError(f"ToyFlow(dim={self.dim}) takes points [B, {self.dim}], got {list(x.shape)}")

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        self._check(x)
        z, logdet = self.flow(x.view(x.shape[0], self.dim, 1, 1))
        return z.view(x.shape[0], self.dim), logdet

    def inverse(self, z: Tensor) -> Tensor:
        self._check(z)
        return self.flow.inverse(z.view(z.shape[0], self.dim, 1, 1)).view(z.shape[0], self.dim)

    def log_prob(self, x: Tensor) -> Tensor:
        """Exact ``log p(x)`` per point ``[B]`` (nats), by the change of variables."""
        z, logdet = self(x)
        return standard_normal_logprob(z) + logdet

    def sample(self, n: int, temperature: float = 1.0, generator: torch.Generator | None = None) -> Tensor:
        """``n`` points ``x = f^{-1}(T z)``, ``z ~ N(0, I)``; batch norm's inverse uses its running statistics."""
        p = next(self.parameters())
        z = torch.randn(n, self.dim, generator=generator, dtype=p.dtype).to(p.device)
        return self.inverse(temperature * z)

    def trace_forward(self, x: Tensor) -> list[Stage]:
        """Inference layer by layer: ``x`` then the points after each layer, each with that layer's log-det."""
        self._check(x)
        n = x.shape[0]
        stages = [Stage("data", x, x.new_zeros(n))]
        h = x.view(n, self.dim, 1, 1)
        for layer in self.parts:
            h, ld = layer(h)
            stages.append(Stage(layer.describe(), h.view(n, self.dim), ld))
        return stages

    def trace_inverse(self, z: Tensor) -> list[Stage]:
        """Generation layer by layer: ``z`` then the points after each layer's inverse (last layer first), each
        with the log-det of that inverse step (minus the forward log-det at the point it returns)."""
        self._check(z)
        n = z.shape[0]
        stages = [Stage("latent", z, z.new_zeros(n))]
        h = z.view(n, self.dim, 1, 1)
        for layer in reversed(self.parts):
            h = layer.inverse(h)
            _, ld = layer(h)
            stages.append(Stage(f"{layer.describe()} inverse", h.view(n, self.dim), -ld))
        return stages

    def batchnorms(self) -> list[BatchNormFlow]:
        return [cast("BatchNormFlow", m) for m in self.modules() if isinstance(m, BatchNormFlow)]
