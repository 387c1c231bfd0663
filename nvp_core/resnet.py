"""The s,t networks: pre-activation ResNets of 3×3 convolutions with weight normalisation (paper, sec. 4.1)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class WNConv2d(nn.Module):
    r"""A convolution with weight normalisation (Salimans & Kingma, 2016): :math:`w = g\, v / \lVert v \rVert`.

    The norm is taken per output channel. ``g`` is the parameter the paper's L2 penalty applies to.
    ``zero_init`` starts ``g`` at 0 so that the layer outputs its bias (0): a coupling built on it starts
    as the identity.
    """

    def __init__(self, c_in: int, c_out: int, kernel_size: int = 3, zero_init: bool = False) -> None:
        super().__init__()
        self.padding = kernel_size // 2
        v = torch.empty(c_out, c_in, kernel_size, kernel_size)
        nn.init.kaiming_normal_(v, nonlinearity="relu")
        self.v = nn.Parameter(v)
        g = torch.zeros(c_out) if zero_init else v.flatten(1).norm(dim=1)
        self.g = nn.Parameter(g)
        self.bias = nn.Parameter(torch.zeros(c_out))

    def weight(self) -> Tensor:
        norm = self.v.flatten(1).norm(dim=1).clamp_min(1e-12)
        return self.v * (self.g / norm).view(-1, 1, 1, 1)

    def forward(self, x: Tensor) -> Tensor:
        w = self.weight()
        if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
            # Keep the convolution in the input's layout; a mismatched weight forces a slow path.
            w = w.contiguous(memory_format=torch.channels_last)
        return F.conv2d(x, w, self.bias, padding=self.padding)


class ResidualBlock(nn.Module):
    """Pre-activation residual block: ``x + conv(relu(bn(conv(relu(bn(x))))))``; ``[B, c, H, W]`` in and out."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv1 = WNConv2d(channels, channels)
        self.bn2 = nn.BatchNorm2d(channels)
        self.conv2 = WNConv2d(channels, channels)

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv1(F.relu(self.bn1(x)))
        h = self.conv2(F.relu(self.bn2(h)))
        return x + h


class ResNet(nn.Module):
    """``[B, c_in, H, W] -> [B, c_out, H, W]``: an input convolution, ``num_blocks`` residual blocks, and a
    zero-initialised output convolution (so that s = t = 0 at initialisation)."""

    def __init__(self, c_in: int, mid: int, c_out: int, num_blocks: int) -> None:
        super().__init__()
        self.inp = WNConv2d(c_in, mid)
        self.blocks = nn.Sequential(*(ResidualBlock(mid) for _ in range(num_blocks)))
        self.out_bn = nn.BatchNorm2d(mid)
        self.out = WNConv2d(mid, c_out, zero_init=True)

    def forward(self, x: Tensor) -> Tensor:
        h = self.blocks(self.inp(x))
        return self.out(F.relu(self.out_bn(h)))
