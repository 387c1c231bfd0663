"""Squeeze (space-to-channel) and the checkerboard channel order used before factoring out."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .base import Bijector


class Squeeze(Bijector):
    """Space to channels: ``[B, C, H, W] -> [B, 4C, H/2, W/2]`` (paper, fig. 3); log-det 0.

    Output channel ``4c + 2i + j`` holds the pixels at offset ``(i, j)`` of each 2×2 block of channel ``c``.
    """

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return F.pixel_unshuffle(x, 2), x.new_zeros(x.shape[0])

    def inverse(self, y: Tensor) -> Tensor:
        return F.pixel_shuffle(y, 2)

    def describe(self) -> str:
        return "squeeze 2x2"

    def output_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        c, h, w = shape
        return (4 * c, h // 2, w // 2)


class CheckerboardOrder(Bijector):
    """Reorders the channels of a squeezed tensor ``[B, 4C, h, w]`` so that the first ``2C`` channels hold the
    pixels of one colour of the checkerboard (offsets (0,0), (1,1)) and the last ``2C`` the other colour
    (offsets (0,1), (1,0)). The multi-scale model factors out the last half, so what each level carries is a
    checkerboard pattern of the finer grid, consistent across scales. A permutation: log-det 0.
    """

    perm: Tensor  # buffers (declared: nn.Module's __getattr__ types them as Tensor | Module)
    inv_perm: Tensor

    def __init__(self, channels: int) -> None:
        super().__init__()
        if channels % 4:
            raise ValueError(f"CheckerboardOrder needs a multiple of 4 channels, got {channels}")
        c = channels // 4
        # Python ints, not tensor arithmetic: the loader's shape check builds this on the meta device (see masks).
        perm = [4 * i + offset for offset in (0, 3, 1, 2) for i in range(c)]
        inv_perm = sorted(range(channels), key=perm.__getitem__)
        self.register_buffer("perm", torch.tensor(perm), persistent=False)
        self.register_buffer("inv_perm", torch.tensor(inv_perm), persistent=False)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return x.index_select(1, self.perm), x.new_zeros(x.shape[0])

    def inverse(self, y: Tensor) -> Tensor:
        return y.index_select(1, self.inv_perm)

    def describe(self) -> str:
        return "checkerboard channel order"
