"""The multi-scale Real NVP (paper, sec. 3.6)."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, NamedTuple, cast

import torch
from torch import Tensor, nn

from .base import Bijector, Sequential, standard_normal_logprob
from .batchnorm import BatchNormFlow
from .config import FlowConfig
from .coupling import ChannelCoupling, CheckerboardCoupling, _AffineCoupling
from .preprocess import LogitTransform
from .resnet import ResNet
from .squeeze import CheckerboardOrder, Squeeze

Temperature = float | Sequence[float]


def _coupling_with_bn(coupling: Bijector, channels: int, cfg: FlowConfig) -> list[Bijector]:
    return [coupling, BatchNormFlow(channels, cfg.bn_momentum, cfg.bn_eps)]


def _build_scale(cfg: FlowConfig, c: int, size: int, index: int, final: bool) -> Sequential:
    """One scale. Not final: 3 checkerboard couplings, squeeze, 3 channel couplings, checkerboard order
    (the last half of the channels is then factored out). Final: ``cfg.final_couplings`` checkerboard
    couplings. Each coupling is followed by a batch-norm bijector."""
    layers: list[Bijector] = []
    width = cfg.width(index)
    n_checker = cfg.final_couplings if final else 3
    for k in range(n_checker):
        layers += _coupling_with_bn(CheckerboardCoupling(c, size, size, width, cfg.num_blocks, k % 2), c, cfg)
    if not final:
        layers.append(Squeeze())
        for k in range(3):
            coupling = ChannelCoupling(4 * c, cfg.width(index + 1), cfg.num_blocks, k % 2)
            layers += _coupling_with_bn(coupling, 4 * c, cfg)
        layers.append(CheckerboardOrder(4 * c))
    return Sequential(layers)


class LayerRow(NamedTuple):
    """One row of :meth:`RealNVP.trace_layers`: a layer as it acted on an input."""

    scale: int  # 0: the logit preprocessing; 1..S: the scale the layer belongs to
    layer: str  # the layer's description
    input: tuple[int, ...]  # shape without the batch
    output: tuple[int, ...]
    parameters: int
    logdet: Tensor  # [B] (0 for the squeeze and for factoring out a latent level)


class RealNVP(nn.Module):
    r"""Real NVP on images ``[B, C, H, W]`` with values in (0, 1).

    ``forward(x) -> (zs, logdet)``: ``zs`` is a list of L latents, level 1 (finest, factored out first)
    to level L (coarsest, the output of the final scale), with shapes :attr:`latent_shapes`; ``logdet``
    ``[B]`` is the log-det of the whole map, the logit preprocessing included. The prior is a standard
    normal on every level, so (paper, eq. 3)

    .. math:: \log p_X(x) = \sum_l \log \mathcal N(z_l; 0, I) + \log\left|\det \frac{\partial f}{\partial x}\right|.

    In eval mode the map is an exact bijection and :meth:`inverse` undoes it.
    """

    _device_probe: Tensor  # a buffer (declared: nn.Module's __getattr__ types it as Tensor | Module)

    def __init__(self, config: FlowConfig) -> None:
        super().__init__()
        self.config = config
        self.preprocess = LogitTransform(config.logit_alpha)
        scales: list[Sequential] = []
        shapes: list[tuple[int, int, int]] = []
        c, size = config.in_channels, config.image_size
        for i in range(config.num_scales):
            final = i == config.num_scales - 1
            scales.append(_build_scale(config, c, size, i, final))
            if final:
                shapes.append((c, size, size))
            else:
                size //= 2
                shapes.append((2 * c, size, size))
                c *= 2
        self.scales = nn.ModuleList(scales)
        self.latent_shapes: list[tuple[int, int, int]] = shapes
        self.register_buffer("_device_probe", torch.zeros(()), persistent=False)

    # --- the bijection -------------------------------------------------------------------------
    @property
    def scale_flows(self) -> Sequence[Sequential]:
        """``scales`` typed as what it holds (``nn.ModuleList`` yields plain modules to a type checker)."""
        return cast("Sequence[Sequential]", self.scales)

    @property
    def num_levels(self) -> int:
        return len(self.latent_shapes)

    @property
    def dim(self) -> int:
        """D = C·H·W, the number of dimensions of an image."""
        c, s = self.config.in_channels, self.config.image_size
        return c * s * s

    def _check_input(self, x: Tensor) -> None:
        c, s = self.config.in_channels, self.config.image_size
        if x.dim() != 4 or tuple(x.shape[1:]) != (c, s, s):
            raise ValueError(f"RealNVP expects images of shape [B, {c}, {s}, {s}], got {list(x.shape)}")

    def forward(self, x: Tensor) -> tuple[list[Tensor], Tensor]:
        zs, logdet, _ = self._encode(x, trace=False)
        return zs, logdet

    def _encode(self, x: Tensor, trace: bool) -> tuple[list[Tensor], Tensor, list[tuple[str, Tensor]]]:
        self._check_input(x)
        frozen = self._frozen()
        if frozen is not None:
            *zs, logdet, stacked = frozen.encode(x)
            parts: Sequence[Tensor] = stacked.unbind(0) if trace else []
        else:
            zs, logdet, parts = self.encode_parts(x)
        return zs, logdet, list(zip(self._layer_names(), parts, strict=True)) if trace else []

    def encode_parts(self, x: Tensor) -> tuple[list[Tensor], Tensor, list[Tensor]]:
        """:meth:`forward` and the log-det ``[B]`` of every layer in order (the logit preprocessing, then each
        scale's layers): the one walk through the stages that every forward pass is (eager or frozen)."""
        h, logdet, parts = self.preprocess.forward_parts(x)
        zs: list[Tensor] = []
        for i, scale in enumerate(self.scale_flows):
            h, ld, layer_parts = scale.forward_parts(h)
            parts += layer_parts
            logdet = logdet + ld
            if i < len(self.scale_flows) - 1:
                h, z = h.chunk(2, dim=1)
                zs.append(z)
        zs.append(h)
        return zs, logdet, parts

    def _layer_names(self) -> list[str]:
        names = [self.preprocess.describe()]
        for i, scale in enumerate(self.scale_flows):
            names += [f"scale {i + 1}: {m.describe()}" for m in scale.parts]
        return names

    @property
    def stages(self) -> list[Bijector]:
        """The flow's stages, data → latent: the logit preprocessing, then each scale (latents are factored out
        between them). A model frozen for inference (:mod:`nvp_core.freezing`) runs the forward pass as one graph and
        the inverse of each stage as one graph, so that a decode can stop or start between stages."""
        return [self.preprocess, *self.scale_flows]

    def _frozen(self) -> Any:
        """The graphs :mod:`nvp_core.freezing` set on this model, when autograd is off (training runs eagerly)."""
        return None if torch.is_grad_enabled() else self.__dict__.get("frozen")

    def _stage_inverse(self, i: int, y: Tensor) -> Tensor:
        frozen = self._frozen()
        return self.stages[i].inverse(y) if frozen is None else frozen.inverse[i](y)

    def trace(self, x: Tensor) -> tuple[list[Tensor], Tensor, list[tuple[str, Tensor]]]:
        """Latents, the total log-det ``[B]`` and the log-det of every layer in order, as ``(name, logdet[B])``
        (for teaching). The total is :meth:`forward`'s to the bit: each scale sums its layers' terms in the
        order :class:`~nvp_core.base.Sequential` does, so a number computed from a trace equals one computed
        from :meth:`forward`."""
        return self._encode(x, trace=True)

    def trace_layers(self, x: Tensor) -> tuple[list[Tensor], list[LayerRow]]:
        """Latents and one :class:`LayerRow` per layer, in the order the layers act (the logit preprocessing,
        then each scale's couplings, batch norms and squeeze, then factoring out half of the dimensions as a
        latent level), for teaching: a page displays these rows rather than walking the layers itself. The
        rows' log-dets are :meth:`trace`'s, from the same pass as :meth:`forward`'s."""
        zs, _, named = self._encode(x, trace=True)
        lds = iter(ld for _, ld in named)
        count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
        shape, rows = tuple(x.shape[1:]), []
        for s, stage in enumerate(self.stages):
            for layer in stage.parts if isinstance(stage, Sequential) else [stage]:
                out = layer.output_shape(shape)
                rows.append(LayerRow(s, layer.describe(), shape, out, count(layer), next(lds)))
                shape = out
            if 0 < s < len(self.stages) - 1:
                z_shape = self.latent_shapes[s - 1]
                rows.append(LayerRow(s, f"factor out → latent level {s}", shape, z_shape, 0, x.new_zeros(x.shape[0])))
                shape = (shape[0] - z_shape[0], *shape[1:])
        return zs, rows

    def inverse(self, zs: Sequence[Tensor]) -> Tensor:
        """Latents (list of L tensors ``[B, *latent_shapes[l]]``) → images ``[B, C, H, W]`` in [0, 1].

        The logit layer maps (0,1) onto the interval ``(logit α, logit 1-α)``; latents of real images always
        land inside it, so they round-trip exactly. Prior samples can fall outside, and their pixels are
        clipped to [0, 1]."""
        if len(zs) != self.num_levels:
            raise ValueError(f"expected {self.num_levels} latent levels, got {len(zs)}")
        return self.inverse_fine(self.inverse_coarse(zs), [])  # inverse_coarse checks the shapes

    def inverse_coarse(self, zs_coarse: Sequence[Tensor]) -> Tensor:
        """The first part of :meth:`inverse`: latents of levels ``k+1..L`` (``k = L - len(zs_coarse)``, 0 ≤ k < L)
        → the state that level ``k``'s latents join (the inverse of scales ``k+1..L``); for k = 0, the logit-space
        image. A path whose coarse levels stay put (a finer level's weight moves) reuses it:
        ``inverse(zs) == inverse_fine(inverse_coarse(zs[k:]), zs[:k])`` exactly, as both run the same layers."""
        L, k = self.num_levels, self.num_levels - len(zs_coarse)
        if not 0 <= k < L:
            raise ValueError(f"expected 1 to {L} coarse latent levels, got {len(zs_coarse)}")
        self._check_levels(zs_coarse, k)
        h = zs_coarse[-1]
        for i in range(L - 1, k - 1, -1):
            if i < L - 1:
                h = torch.cat([h, zs_coarse[i - k]], dim=1)
            h = self._stage_inverse(i + 1, h)
        return h

    def inverse_fine(self, h: Tensor, zs_fine: Sequence[Tensor]) -> Tensor:
        """The rest of :meth:`inverse`: the state ``h`` of :meth:`inverse_coarse` and the latents of levels
        ``1..k`` (``k = len(zs_fine)``) → images ``[B, C, H, W]`` in [0, 1]."""
        k = len(zs_fine)
        if not 0 <= k < self.num_levels:
            raise ValueError(f"expected 0 to {self.num_levels - 1} fine latent levels, got {k}")
        self._check_levels(zs_fine, 0)
        for i in range(k - 1, -1, -1):
            h = self._stage_inverse(i + 1, torch.cat([h, zs_fine[i]], dim=1))
        return self._stage_inverse(0, h).clamp(0.0, 1.0)

    def _check_levels(self, zs: Sequence[Tensor], first: int) -> None:
        """Checks the shapes of latents of levels ``first+1 .. first+len(zs)``."""
        for level, (z, shape) in enumerate(zip(zs, self.latent_shapes[first:], strict=False), start=first + 1):
            if tuple(z.shape[1:]) != shape:
                raise ValueError(
                    f"level {level}: expected latents [B, {', '.join(map(str, shape))}], got {list(z.shape)}"
                )

    # --- densities and sampling ----------------------------------------------------------------
    def log_prob(self, x: Tensor) -> Tensor:
        """``[B]`` log-density (nats) of continuous images ``x`` in (0,1)^D."""
        return self.log_prob_of(*self(x))

    @staticmethod
    def log_prob_of(zs: Sequence[Tensor], logdet: Tensor) -> Tensor:
        """``[B]`` log-density (nats) from :meth:`forward`'s latents and log-det: the change of variables
        (eq. 3), ``log p(x) = Σ_l log N(z_l; 0, I) + log|det ∂f/∂x|``."""
        return sum(standard_normal_logprob(z) for z in zs) + logdet

    def _temperatures(self, temperature: Temperature) -> list[float]:
        if isinstance(temperature, int | float):
            return [float(temperature)] * self.num_levels
        temps = [float(t) for t in temperature]
        if len(temps) != self.num_levels:
            raise ValueError(f"expected one temperature per level ({self.num_levels}), got {len(temps)}")
        return temps

    def sample_latents(
        self, n: int, temperature: Temperature = 1.0, generator: torch.Generator | None = None
    ) -> list[Tensor]:
        """``n`` draws of every level from the prior, level ``l`` scaled by its temperature. The draws are
        made on ``generator``'s device (a CPU generator gives the same latents for a model on any device), then
        moved to the model's."""
        device, dtype = self._device_probe.device, self._device_probe.dtype
        drawn_on = device if generator is None else generator.device
        zs = [
            torch.randn((n, *shape), generator=generator, device=drawn_on, dtype=dtype) * t
            for shape, t in zip(self.latent_shapes, self._temperatures(temperature), strict=True)
        ]
        return zs if drawn_on == device else [z.to(device) for z in zs]

    @torch.no_grad()
    def sample(self, n: int, temperature: Temperature = 1.0, generator: torch.Generator | None = None) -> Tensor:
        """``[n, C, H, W]`` samples in (0, 1). ``temperature``: one float, or one value per level."""
        return self.inverse(self.sample_latents(n, temperature, generator))

    # --- training helpers ----------------------------------------------------------------------
    def regularized_parameters(self) -> list[nn.Parameter]:
        """The parameters the paper's L2 penalty (5e-5) applies to: weight-norm scales ``g`` and the
        couplings' tanh scale factors."""
        return [p for name, p in self.named_parameters() if name.endswith(".g") or name.endswith(".scale")]

    def set_compute_dtype(self, dtype: torch.dtype | None) -> RealNVP:
        """Run the s,t ResNets under autocast to ``dtype`` (e.g. ``torch.bfloat16``), or in full precision
        for ``None``. The coupling arithmetic and log-dets stay in the input's dtype."""
        for m in self.modules():
            if isinstance(m, _AffineCoupling):
                m.compute_dtype = dtype
        return self

    @contextmanager
    def computing_in(self, dtype: torch.dtype | None) -> Iterator[RealNVP]:
        """Inside the block the s,t ResNets compute in ``dtype`` (``None``: full precision); after it every
        coupling gets its previous dtype back, whatever it was (evaluation in float32 of a bf16-trained model)."""
        couplings = [m for m in self.modules() if isinstance(m, _AffineCoupling)]
        before = [m.compute_dtype for m in couplings]
        self.set_compute_dtype(dtype)
        try:
            yield self
        finally:
            for m, dt in zip(couplings, before, strict=True):
                m.compute_dtype = dt

    def set_channels_last(self, enabled: bool = True) -> RealNVP:
        """Run the s,t ResNets' convolutions in channels_last (NHWC) memory format, the layout oneDNN's
        CPU convolutions and tensor cores prefer. Parameters, the state dict and the latents' shapes are
        unchanged; results equal the default layout's up to float rounding of the convolutions."""
        fmt = torch.channels_last if enabled else torch.contiguous_format
        for m in self.modules():
            if isinstance(m, ResNet):
                m.memory_format = fmt
        return self

    def set_sync_batchnorm(self, sync: bool) -> RealNVP:
        """All-reduce the flow's batch-norm statistics across processes (DistributedDataParallel)."""
        for m in self.modules():
            if isinstance(m, BatchNormFlow):
                m.sync = sync
        return self

    def bits_per_dim_of(self, log_prob: Tensor) -> Tensor:
        """Converts a continuous log-density on (0,1)^D to bits/dim of 8-bit images (adds 8 bits)."""
        return -log_prob / (self.dim * math.log(2.0)) + 8.0
