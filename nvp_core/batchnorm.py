"""Batch normalisation as a bijector (paper, sec. 3.7)."""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from .base import Bijector


class BatchNormFlow(Bijector):
    r"""Per-channel batch normalisation used as a layer of the flow (paper, eq. 10–11):

    .. math:: y = \frac{x - \tilde\mu}{\sqrt{\tilde\sigma^2 + \epsilon}} \, e^{\gamma} + \beta

    Shapes: ``[B, C, H, W] -> [B, C, H, W]``. Log-det per example:
    :math:`HW \sum_c \big(\gamma_c - \tfrac12 \log(\tilde\sigma_c^2 + \epsilon)\big)`.
    In training, :math:`\tilde\mu, \tilde\sigma^2` are the batch statistics (their dependence on the
    example is ignored, as in the paper) and the running averages are updated; in eval mode and in the
    inverse the running averages are used, so the eval-mode model is an exact bijection.
    ``sync`` all-reduces the batch statistics across processes under DistributedDataParallel.
    """

    running_mean: Tensor  # buffers (declared: nn.Module's __getattr__ types them as Tensor | Module)
    running_var: Tensor

    def __init__(self, channels: int, momentum: float = 0.05, eps: float = 1e-4) -> None:
        super().__init__()
        self.momentum = momentum
        self.eps = eps
        self.sync = False
        self.log_gamma = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.beta = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.register_buffer("running_mean", torch.zeros(1, channels, 1, 1))
        self.register_buffer("running_var", torch.ones(1, channels, 1, 1))

    def _batch_stats(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if self.sync and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            from torch.distributed.nn.functional import all_reduce

            n = x.new_tensor(float(x.shape[0] * x.shape[2] * x.shape[3]))
            sums = torch.cat([x.sum(dim=(0, 2, 3)), (x * x).sum(dim=(0, 2, 3)), n.view(1)])
            sums = all_reduce(sums)
            c = x.shape[1]
            count = sums[-1]
            mean = sums[:c] / count
            var = (sums[c : 2 * c] / count - mean * mean).clamp_min(0.0)
            return mean.view(1, -1, 1, 1), var.view(1, -1, 1, 1)
        var, mean = torch.var_mean(x, dim=(0, 2, 3), keepdim=True, correction=0)
        return mean, var

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if self.training:
            mean, var = self._batch_stats(x)
            with torch.no_grad():
                self.running_mean.lerp_(mean.detach().to(self.running_mean.dtype), self.momentum)
                self.running_var.lerp_(var.detach().to(self.running_var.dtype), self.momentum)
        elif self._use_cache():
            mean, log_scale, scale, _inv_scale, beta = self._cached_eval_affine(x)
            y = (x - mean) * scale + beta
            logdet = (log_scale.sum() * (x.shape[2] * x.shape[3])).expand(x.shape[0])
            return y, x.new_zeros(x.shape[0]) + logdet
        else:
            mean, var = self.running_mean.to(x.dtype), self.running_var.to(x.dtype)
        log_scale = self.log_gamma.to(x.dtype) - 0.5 * torch.log(var + self.eps)
        y = (x - mean) * log_scale.exp() + self.beta.to(x.dtype)
        logdet = (log_scale.sum() * (x.shape[2] * x.shape[3])).expand(x.shape[0])
        return y, x.new_zeros(x.shape[0]) + logdet

    def inverse(self, y: Tensor) -> Tensor:
        if self._use_cache():
            mean, _log_scale, _scale, inv_scale, beta = self._cached_eval_affine(y)
            return (y - beta) * inv_scale + mean
        mean, var = self.running_mean.to(y.dtype), self.running_var.to(y.dtype)
        log_scale = self.log_gamma.to(y.dtype) - 0.5 * torch.log(var + self.eps)
        return (y - self.beta.to(y.dtype)) * (-log_scale).exp() + mean

    # --- inference: the eval-mode affine map, computed once --------------------------------------------
    def _use_cache(self) -> bool:
        tensors = (self.running_mean, self.running_var, self.log_gamma, self.beta)
        return (
            not torch.is_grad_enabled()
            and not torch.compiler.is_compiling()
            and not any(t.is_inference() for t in tensors)  # no version counter to invalidate on
        )

    def _cached_eval_affine(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """``(mean, log_scale, exp(log_scale), exp(-log_scale), beta)`` in ``x``'s dtype, by the same operations
        as the uncached path (bit-identical), recomputed only when a statistic or parameter changed in place
        (``_version``) or moved (``data_ptr``). Saves ~9 small operations per layer and call in inference."""
        tensors = (self.running_mean, self.running_var, self.log_gamma, self.beta)
        key = (*(t.data_ptr() for t in tensors), *(t._version for t in tensors), x.dtype, x.device)
        cache = self.__dict__.get("_affine_cache")
        if cache is None or cache[0] != key:
            mean, var = self.running_mean.to(x.dtype), self.running_var.to(x.dtype)
            log_scale = self.log_gamma.to(x.dtype) - 0.5 * torch.log(var + self.eps)
            cache = (key, (mean, log_scale, log_scale.exp(), (-log_scale).exp(), self.beta.to(x.dtype)))
            self.__dict__["_affine_cache"] = cache  # a plain attribute: never in the state dict
        return cache[1]

    def _apply(self, fn: Any, recurse: bool = True) -> BatchNormFlow:  # .to(), .double(), ...
        self.__dict__.pop("_affine_cache", None)
        return super()._apply(fn, recurse)

    def describe(self) -> str:
        return "batch norm"
