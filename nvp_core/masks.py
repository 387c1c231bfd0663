"""Binary masks of the coupling layers (paper, sec. 3.4 and fig. 3)."""

from __future__ import annotations

import torch
from torch import Tensor


def checkerboard_mask(height: int, width: int, parity: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """``[1, 1, H, W]`` mask with 1 where ``(i + j) % 2 == parity``: the pixels a coupling conditions on."""
    i = torch.arange(height).view(-1, 1)
    j = torch.arange(width).view(1, -1)
    return ((i + j) % 2 == parity).to(dtype).view(1, 1, height, width)


def channel_mask(channels: int, parity: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """``[1, C, 1, 1]`` mask with 1 on the half of the channels a coupling conditions on
    (the first half for parity 0, the second for parity 1)."""
    half = channels // 2
    m = torch.zeros(channels, dtype=dtype)
    if parity == 0:
        m[:half] = 1
    else:
        m[half:] = 1
    return m.view(1, channels, 1, 1)
