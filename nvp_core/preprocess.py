"""The logit preprocessing of the paper (section 4.1 of its experiments) as a bijector."""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor

from .base import Bijector, sum_except_batch


class LogitTransform(Bijector):
    r"""Maps images in (0,1) to the real line: :math:`p = \alpha + (1-2\alpha)x`, :math:`y = \mathrm{logit}(p)`.

    Shapes: ``[B, C, H, W] -> [B, C, H, W]``. Per dimension the log-det is
    :math:`\log(1-2\alpha) - \log p - \log(1-p)`, so it is a valid change of variables on (0,1)^D
    and ``log_prob`` of the model is a density of the continuous image.
    """

    def __init__(self, alpha: float = 0.05) -> None:
        super().__init__()
        self.alpha = float(alpha)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        p = self.alpha + (1.0 - 2.0 * self.alpha) * x
        log_p, log_1mp = p.log(), (-p).log1p()
        y = log_p - log_1mp
        logdet = sum_except_batch(math.log1p(-2.0 * self.alpha) - log_p - log_1mp)
        return y, logdet

    def inverse(self, y: Tensor) -> Tensor:
        return (F.sigmoid(y) - self.alpha) / (1.0 - 2.0 * self.alpha)

    def describe(self) -> str:
        return f"logit (alpha={self.alpha:g})"
