"""The fast path of the flow: one way of running the same model (issues 5 and 11).

A *fast path* is a compute dtype for the s,t ResNets (float32, or bf16 under autocast) and a memory layout for
their convolutions (NCHW or channels_last). Whatever the path, the coupling arithmetic, the log-determinant and
every number shown to a user stay float32: bf16 touches only the s,t ResNets, and evaluation switches it off.
Which path is fastest depends on the machine, so it is measured, never guessed from a CPU's name: see
:mod:`nvp_core.fastpath_choice`. The weight-norm cache (inference) is always on; see
:class:`nvp_core.resnet.WNConv2d`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from .model import RealNVP
from .resnet import ResNet

ENV_OVERRIDE = "NVP_FASTPATH"


@dataclass(frozen=True)
class FastPath:
    """One way of running the same model: the s,t ResNets' compute dtype (``None``: float32) and layout."""

    dtype: torch.dtype | None
    channels_last: bool

    @property
    def name(self) -> str:
        return f"{'bf16' if self.dtype == torch.bfloat16 else 'fp32'}-{'cl' if self.channels_last else 'nchw'}"

    @classmethod
    def from_name(cls, name: str) -> FastPath:
        for p in ALL_PATHS:
            if p.name == name:
                return p
        raise ValueError(f"unknown fast path {name!r}; known: {', '.join(p.name for p in ALL_PATHS)}")

    def apply(self, model: RealNVP) -> RealNVP:
        """Sets this path on ``model`` (in place) and returns it."""
        return model.set_channels_last(self.channels_last).set_compute_dtype(self.dtype)


ALL_PATHS = (
    FastPath(None, False),
    FastPath(None, True),
    FastPath(torch.bfloat16, False),
    FastPath(torch.bfloat16, True),
)
#: What ``precision`` / ``$NVP_FASTPATH`` accept: auto, a dtype, or one full path name.
OVERRIDES = ("auto", "fp32", "bf16", *(p.name for p in ALL_PATHS))


@dataclass
class Choice:
    """The chosen path and why: ``source`` is ``measured``, ``cache``, ``override`` or ``only candidate``."""

    path: FastPath
    source: str
    timings_ms: dict[str, float] = field(default_factory=dict)
    key: dict[str, Any] = field(default_factory=dict)
    #: per path, how far its pictures and numbers are from float32 (set by :func:`configure`)
    fidelity: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.path.name

    def describe(self) -> str:
        """One line for logs and result files, e.g. ``bf16-cl (measured: bf16-cl 31 ms, fp32-cl 52 ms, …)``."""
        times = ", ".join(f"{k} {v:.3g} ms" for k, v in sorted(self.timings_ms.items(), key=lambda kv: kv[1]))
        return f"{self.name} ({self.source}{': ' + times if times else ''})"

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.name, "source": self.source, "timings_ms": self.timings_ms, "fidelity": self.fidelity}


def bf16_can_be_fast(device: torch.device) -> bool:
    """Whether bf16 is worth timing on ``device``: a GPU with bf16, or a CPU for which oneDNN has bf16 kernels
    (AVX-512 or AMX). Without them (AVX2 only) oneDNN emulates bf16 at 10–40× the cost of float32."""
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    if device.type == "cpu":
        try:
            return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except (RuntimeError, AttributeError):
            return False
    return False


def candidates(device: torch.device, precision: str = "auto") -> list[FastPath]:
    """The paths worth timing on ``device`` under the override ``precision`` (see :data:`OVERRIDES`)."""
    if precision not in OVERRIDES:
        raise ValueError(f"fast path override must be one of {', '.join(OVERRIDES)}, got {precision!r}")
    if precision not in ("auto", "fp32", "bf16"):
        return [FastPath.from_name(precision)]
    paths = [p for p in ALL_PATHS if p.dtype is None or bf16_can_be_fast(device) or precision == "bf16"]
    if precision == "fp32":
        paths = [p for p in paths if p.dtype is None]
    elif precision == "bf16":
        paths = [p for p in paths if p.dtype == torch.bfloat16]
    return paths


def pictures_and_bpd(model: RealNVP, zs: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """What fidelity is judged on: the grey levels (0..255) ``model`` decodes from ``zs``, and their bits/dim."""
    grey = (model.inverse(zs).float() * 256.0).floor().clamp(0, 255)
    return grey, model.bits_per_dim_of(model.log_prob((grey + 0.5) / 256.0))


def distance(ref: tuple[torch.Tensor, torch.Tensor], got: tuple[torch.Tensor, torch.Tensor]) -> dict[str, float]:
    """How far :func:`pictures_and_bpd`'s ``got`` is from ``ref``: the largest grey-level and bits/dim differences."""
    return {
        "max_grey_levels": float((got[0] - ref[0]).abs().max()),
        "max_bpd_diff": float((got[1] - ref[1]).abs().max()),
    }


def fidelity_latents(model: RealNVP, samples: int = 16) -> list[torch.Tensor]:
    """The fixed latents (T = 0.7, seed 0) that every fidelity check decodes."""
    device = next(model.parameters()).device
    gen = torch.Generator().manual_seed(0)
    return [(torch.randn((samples, *s), generator=gen) * 0.7).to(device) for s in model.latent_shapes]


def faithful(
    model: RealNVP, paths: list[FastPath], samples: int = 16, max_grey_levels: int = 1, max_bpd_diff: float = 1e-4
) -> tuple[list[FastPath], dict[str, dict[str, float]]]:
    """The paths under which ``model`` (eval mode, float32 weights) draws the same pictures and computes the same
    numbers as float32 NCHW: decoded samples (T = 0.7, fixed seed) within ``max_grey_levels`` of 255, and the
    bits/dim of those pictures within ``max_bpd_diff``. Checked on the model's own weights (a freshly built
    model starts at the identity, where every path agrees); the model's path is restored afterwards."""
    saved = [(m, m.compute_dtype) for m in model.modules() if hasattr(m, "compute_dtype")]
    saved_fmt = [(m, m.memory_format) for m in model.modules() if isinstance(m, ResNet)]
    report: dict[str, dict[str, float]] = {}
    try:
        with torch.inference_mode():
            zs = fidelity_latents(model, samples)

            def run(p: FastPath) -> tuple[torch.Tensor, torch.Tensor]:
                p.apply(model)
                return pictures_and_bpd(model, zs)

            ref = run(ALL_PATHS[0])
            ok = []
            for p in paths:
                report[p.name] = d = distance(ref, ref if p == ALL_PATHS[0] else run(p))
                if d["max_grey_levels"] <= max_grey_levels and d["max_bpd_diff"] <= max_bpd_diff:
                    ok.append(p)
    finally:
        for m, dt in saved:
            m.compute_dtype = dt
        for m, fmt in saved_fmt:
            m.memory_format = fmt
    return ok, report
