"""Binary masks of the coupling layers (paper, sec. 3.4 and fig. 3)."""

from __future__ import annotations

import torch
from torch import Tensor


def checkerboard_mask(height: int, width: int, parity: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """``[1, 1, H, W]`` mask with 1 where ``(i + j) % 2 == parity``: the pixels a coupling conditions on."""
    # Slice fills, not index arithmetic: on the meta device (the loader's shape check) arithmetic imports torch._dynamo.
    m = torch.zeros(height, width, dtype=dtype)
    m[0::2, parity::2] = 1  # even rows: columns of the parity
    m[1::2, 1 - parity :: 2] = 1  # odd rows: the other columns
    return m.view(1, 1, height, width)


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
