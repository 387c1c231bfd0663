"""The s,t networks: pre-activation ResNets of 3×3 convolutions with weight normalisation (paper, sec. 4.1)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class WNConv2d(nn.Module):
    r"""A convolution with weight normalisation (Salimans & Kingma, 2016): :math:`w = g\, v / \lVert v \rVert`.

    The norm is taken per output channel. ``g`` is the parameter the paper's L2 penalty applies to.
    ``zero_init`` starts ``g`` at 0 so that the layer outputs its bias (0): a coupling built on it starts
    as the identity.
    """

    #: Reuse the normalised weight between calls when autograd is off (see :meth:`_cached_weight`);
    #: a class-wide switch so that benchmarks can measure the uncached path.
    cache_weights: bool = True

    def __init__(self, c_in: int, c_out: int, kernel_size: int = 3, zero_init: bool = False) -> None:
        super().__init__()
        self.padding = kernel_size // 2
        v = torch.empty(c_out, c_in, kernel_size, kernel_size)
        if not v.is_meta:  # a shape-only model (the loader's check) draws nothing: meta kernels import torch._dynamo
            nn.init.kaiming_normal_(v, nonlinearity="relu")
        self.v = nn.Parameter(v)
        g = torch.zeros(c_out) if zero_init or v.is_meta else v.flatten(1).norm(dim=1)
        self.g = nn.Parameter(g)
        self.bias = nn.Parameter(torch.zeros(c_out))

    def weight(self) -> Tensor:
        norm = self.v.flatten(1).norm(dim=1).clamp_min(1e-12)
        return self.v * (self.g / norm).view(-1, 1, 1, 1)

    def _layout_weight(self, channels_last: bool) -> Tensor:
        w = self.weight()
        # Keep the convolution in the input's layout; a mismatched weight forces a slow path.
        return w.contiguous(memory_format=torch.channels_last) if channels_last else w

    def _cached_weight(self, channels_last: bool) -> Tensor:
        """The weight without autograd, recomputed only when ``v`` or ``g`` changed (in place, e.g. an optimizer
        step or ``load_state_dict``, bumps ``_version``; ``.to()`` or ``.data =`` moves ``data_ptr``). The same
        operations as :meth:`weight`, so the result is bit-identical; it saves a norm and a multiply per call
        in inference, where every image otherwise recomputes every weight."""
        v, g = self.v, self.g
        key = (v.data_ptr(), v._version, g.data_ptr(), g._version, v.dtype, v.device, channels_last)
        cache = self.__dict__.get("_weight_cache")
        if cache is None or cache[0] != key:
            cache = (key, self._layout_weight(channels_last))
            self.__dict__["_weight_cache"] = cache  # a plain attribute: never in the state dict
        return cache[1]

    def _apply(self, fn: Any, recurse: bool = True) -> WNConv2d:  # .to(), .cuda(), .double(), ...
        self.__dict__.pop("_weight_cache", None)
        return super()._apply(fn, recurse)

    def forward(self, x: Tensor) -> Tensor:
        channels_last = x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
        uncached = torch.is_grad_enabled() or not self.cache_weights or torch.compiler.is_compiling()
        # Parameters created under inference_mode have no version counter: never cache those.
        if uncached or self.v.is_inference() or self.g.is_inference():
            w = self._layout_weight(channels_last)
        else:
            w = self._cached_weight(channels_last)
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

    #: ``torch.channels_last`` runs every convolution of the network in NHWC (set by
    #: :meth:`nvp_core.RealNVP.set_channels_last`); the input is converted on entry because cat/chunk of
    #: tensors with 1 or 2 channels silently fall back to NCHW.
    memory_format: torch.memory_format = torch.contiguous_format

    def forward(self, x: Tensor) -> Tensor:
        if self.memory_format == torch.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        h = self.blocks(self.inp(x))
        return self.out(F.relu(self.out_bn(h)))
