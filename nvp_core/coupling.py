"""Affine coupling layers (paper, eq. 7–9) with checkerboard and channel-wise masks."""

from __future__ import annotations

from contextlib import nullcontext

import torch
from torch import Tensor, nn

from .base import Bijector, sum_except_batch
from .masks import channel_mask, checkerboard_mask
from .resnet import ResNet


class _AffineCoupling(Bijector):
    """Shared parts: the bounded log-scale ``s = scale · tanh(raw)`` and the optional bf16 fast path.

    ``compute_dtype`` (``None`` or e.g. ``torch.bfloat16``) runs only the s,t ResNet under autocast; the
    coupling arithmetic and the log-det stay in the input's dtype, so the flow stays exactly invertible
    for the s,t values it computes.
    """

    compute_dtype: torch.dtype | None = None
    mask: Tensor  # the subclasses' mask buffer (declared: nn.Module's __getattr__ types it as Tensor | Module)

    def __init__(self, channels_out: int) -> None:
        super().__init__()
        # The factor on tanh bounds |s| (no overflow when sampling hot); it is one of the parameters that
        # the paper's L2 penalty applies to.
        self.scale = nn.Parameter(torch.ones(channels_out, 1, 1))

    def _run_net(self, net: nn.Module, h: Tensor) -> Tensor:
        dtype = self.compute_dtype
        ctx = torch.autocast(h.device.type, dtype=dtype) if dtype is not None else nullcontext()
        with ctx:
            out = net(h)
        return out.to(h.dtype)

    def _bound(self, raw_s: Tensor) -> Tensor:
        return self.scale * torch.tanh(raw_s)


class CheckerboardCoupling(_AffineCoupling):
    r"""Affine coupling with a spatial checkerboard mask ``b`` (paper, eq. 9):

    .. math:: y = b \odot x + (1-b) \odot \big(x \odot \exp(s(b \odot x)) + t(b \odot x)\big)

    Shapes: ``[B, C, H, W] -> [B, C, H, W]``; log-det :math:`\sum (1-b) \odot s`. ``parity`` picks which
    colour of the board is conditioned on, so consecutive couplings alternate. The mask is fed to the
    ResNet as an extra channel so that it knows which inputs are zeros by masking.
    """

    def __init__(self, channels: int, height: int, width: int, mid: int, num_blocks: int, parity: int) -> None:
        super().__init__(channels)
        self.parity = parity
        self.register_buffer("mask", checkerboard_mask(height, width, parity), persistent=False)
        self.net = ResNet(channels + 1, mid, 2 * channels, num_blocks)

    def _s_t(self, x_cond: Tensor) -> tuple[Tensor, Tensor]:
        b = self.mask.to(x_cond.dtype)
        inp = torch.cat([x_cond, b.expand(x_cond.shape[0], 1, -1, -1)], dim=1)
        raw_s, t = self._run_net(self.net, inp).chunk(2, dim=1)
        free = 1.0 - b
        return self._bound(raw_s) * free, t * free

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        s, t = self._s_t(x * self.mask.to(x.dtype))
        return x * s.exp() + t, sum_except_batch(s)

    def inverse(self, y: Tensor) -> Tensor:
        s, t = self._s_t(y * self.mask.to(y.dtype))
        return (y - t) * (-s).exp()

    def describe(self) -> str:
        return f"checkerboard coupling ({'even' if self.parity == 0 else 'odd'})"


class ChannelCoupling(_AffineCoupling):
    r"""Affine coupling with a channel-wise mask (paper, eq. 9 with ``b`` splitting the channels):
    one half of the channels conditions the other half,

    .. math:: y_2 = x_2 \odot \exp(s(x_1)) + t(x_1), \qquad y_1 = x_1.

    Shapes: ``[B, C, H, W] -> [B, C, H, W]`` with C even; log-det :math:`\sum s(x_1)`. ``parity`` 0
    conditions on the first half, 1 on the second. Only the changed half is computed (no wasted work).
    ``net`` replaces the default ResNet by any ``[B, C/2, H, W] -> [B, C, H, W]`` module (raw s and t stacked on
    the channels), e.g. an MLP for vectors seen as ``[B, D, 1, 1]`` (:mod:`nvp_core.toy`).
    """

    def __init__(self, channels: int, mid: int, num_blocks: int, parity: int, net: nn.Module | None = None) -> None:
        if channels % 2:
            raise ValueError(f"ChannelCoupling needs an even channel count, got {channels}")
        super().__init__(channels // 2)
        self.parity = parity
        self.register_buffer("mask", channel_mask(channels, parity), persistent=False)
        self.net = net if net is not None else ResNet(channels // 2, mid, channels, num_blocks)

    def _split(self, x: Tensor) -> tuple[Tensor, Tensor]:
        a, b = x.chunk(2, dim=1)
        return (a, b) if self.parity == 0 else (b, a)

    def _join(self, cond: Tensor, free: Tensor) -> Tensor:
        return torch.cat([cond, free] if self.parity == 0 else [free, cond], dim=1)

    def _s_t(self, cond: Tensor) -> tuple[Tensor, Tensor]:
        raw_s, t = self._run_net(self.net, cond).chunk(2, dim=1)
        return self._bound(raw_s), t

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        cond, free = self._split(x)
        s, t = self._s_t(cond)
        return self._join(cond, free * s.exp() + t), sum_except_batch(s)

    def inverse(self, y: Tensor) -> Tensor:
        cond, free = self._split(y)
        s, t = self._s_t(cond)
        return self._join(cond, (free - t) * (-s).exp())

    def describe(self) -> str:
        return f"channel coupling ({'first' if self.parity == 0 else 'second'} half fixed)"
