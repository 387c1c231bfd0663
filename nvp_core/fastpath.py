"""The fast paths of the flow in one place (issue 5; bench/README.md has the measurements behind them).

* channels_last for the s,t ResNets: helps the oneDNN convolutions on every CPU and tensor cores on a GPU;
* bf16 autocast for the s,t ResNets: only where bf16 has hardware support (AMX on a CPU, a bf16 GPU). On a
  CPU without it (e.g. AVX2 only), oneDNN emulates bf16 and the convolutions get 10–40× *slower*;
* ``torch.compile`` of the s,t ResNets: opt-in (compile time is minutes on a small CPU).

The weight-norm cache (inference) is always on; see :class:`nvp_core.resnet.WNConv2d`.
"""

from __future__ import annotations

from typing import Any

import torch

from .model import RealNVP
from .resnet import ResNet


def cpu_has_fast_bf16() -> bool:
    """Whether this CPU runs bf16 matrix work faster than float32 (AMX tiles; oneDNN's bf16 kernels)."""
    amx = getattr(torch.cpu, "_is_amx_tile_supported", None)
    try:
        return bool(amx is not None and amx() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (RuntimeError, AttributeError):
        return False


def fast_compute_dtype(device: torch.device) -> torch.dtype | None:
    """The dtype for the s,t ResNets on ``device``: bf16 where it is fast, else ``None`` (float32)."""
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    if device.type == "cpu":
        return torch.bfloat16 if cpu_has_fast_bf16() else None
    return None


def compile_nets(model: RealNVP, **compile_kwargs: Any) -> RealNVP:
    """``torch.compile`` every s,t ResNet in place (``nn.Module.compile``): the state dict keys stay the same
    (no ``_orig_mod.`` prefix), so checkpoints are unaffected. Compilation happens lazily on the first call of
    each shape; ``compile_kwargs`` go to :func:`torch.compile` (e.g. ``mode="max-autotune-no-cudagraphs"``)."""
    for m in model.modules():
        if isinstance(m, ResNet):
            m.compile(**compile_kwargs)
    return model


def configure(model: RealNVP, device: torch.device, compile: bool = False) -> dict[str, Any]:
    """Applies the fastest measured settings for ``device`` to ``model`` (already on that device) and returns
    them: channels_last everywhere, bf16 autocast where the hardware has it, ``torch.compile`` if asked."""
    dtype = fast_compute_dtype(device)
    model.set_channels_last(True).set_compute_dtype(dtype)
    if compile:
        compile_nets(model)
    return {"channels_last": True, "compute_dtype": dtype, "compiled": compile}
