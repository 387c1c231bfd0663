"""Dequantisation and bits/dim (paper, sec. 4.1), with the split of the bits/dim by level."""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from torch import Tensor

from .base import standard_normal_logprob
from .model import RealNVP


def dequantize(images_uint8: Tensor, generator: torch.Generator | None = None, noise: bool = True) -> Tensor:
    """Integer images ``[B, C, H, W]`` in 0..255 → continuous images in [0, 1): ``(x + u) / 256`` with
    ``u ~ U[0, 1)`` (or ``u = 0.5``, the bin centre, when ``noise`` is false). Float32 output."""
    if images_uint8.is_floating_point():
        raise TypeError("dequantize expects integer pixel values (uint8, 0..255), got a float tensor")
    x = images_uint8.to(torch.float32)
    if not noise:
        return (x + 0.5) / 256.0
    device = x.device if generator is None else generator.device
    u = torch.rand(x.shape, generator=generator, device=device).to(x.device)
    return (x + u) / 256.0


def _model_input(model: RealNVP, images_uint8: Tensor, seed: int | None, generator: torch.Generator | None) -> Tensor:
    if generator is None and seed is not None:
        generator = torch.Generator().manual_seed(seed)
    ref = next(model.parameters())
    return dequantize(images_uint8.cpu(), generator).to(device=ref.device, dtype=ref.dtype)


def bits_per_dim(
    model: RealNVP, images_uint8: Tensor, seed: int | None = 0, generator: torch.Generator | None = None
) -> Tensor:
    r"""``[B]`` bits per dimension of 8-bit images: :math:`-\log_2 p(x + u) / D + 8`, with the uniform
    dequantisation noise ``u`` drawn from ``generator`` (or a generator seeded with ``seed``; ``seed=None``
    and no generator: the global RNG). Uses the model in its current mode; call ``model.eval()`` first
    for the exact, deterministic value."""
    x = _model_input(model, images_uint8, seed, generator)
    return model.bits_per_dim_of(model.log_prob(x))


def bits_per_dim_breakdown(
    model: RealNVP, images_uint8: Tensor, seed: int | None = 0, generator: torch.Generator | None = None
) -> dict[str, Tensor]:
    """Splits the bits/dim into additive terms, each ``[B]``, that sum to :func:`bits_per_dim`:

    * ``"prior level l"``: ``-log N(z_l) / (D ln 2)`` for every level l = 1..L;
    * ``"logdet <layer>"``: ``-logdet / (D ln 2)`` of the logit layer and of each scale;
    * ``"dequantisation"``: the constant +8 bits of the 1/256 bins.
    """
    return _breakdown(model, _model_input(model, images_uint8, seed, generator))


# --- The one convention for every bits/dim a user reads: the paper's and the model card's ---------------
EVAL_SEED = 1000  # image i of a set gets the noise of row i % EVAL_BATCH of a draw seeded EVAL_SEED + i // EVAL_BATCH
EVAL_BATCH = 500
CONVENTION = (
    "−log₂ p(x + u)/D + 8 with uniform dequantisation noise u from fixed seeds (as the model card's test "
    "bits/dim), eval mode, float32"
)
CONVENTION_SHORT = "uniform dequantisation noise from fixed seeds, eval mode, float32"


def _fixed_noise_blocks(images_uint8: Tensor, first_index: int) -> Iterator[Tensor]:
    """The images' dequantised values, float32, one tensor per block of indices that share a noise draw."""
    if first_index < 0:
        raise ValueError(f"first_index must be ≥ 0, got {first_index}")
    if images_uint8.is_floating_point():
        raise TypeError("dequantize expects integer pixel values (uint8, 0..255), got a float tensor")
    images = images_uint8.cpu()
    start = 0
    while start < len(images):
        block, row = divmod(first_index + start, EVAL_BATCH)
        rows = min(EVAL_BATCH - row, len(images) - start)
        # A CPU generator fills a tensor in order, so the first rows of a draw do not depend on its length.
        u = torch.rand((row + rows, *images.shape[1:]), generator=torch.Generator().manual_seed(EVAL_SEED + block))
        yield (images[start : start + rows].to(torch.float32) + u[row:]) / 256.0
        start += rows


def fixed_noise_dequantize(images_uint8: Tensor, first_index: int = 0) -> Tensor:
    """``(x + u) / 256`` (float32) with the fixed noise of the evaluation convention: image ``first_index + j``
    of a data set gets row ``(first_index + j) % 500`` of ``torch.rand`` drawn with seed ``1000 + index // 500``
    (one draw per block of 500, as ``train.evaluate`` draws one per test batch). So an image's noise depends only
    on its index, and the mean over a test set is the model card's test bits/dim."""
    blocks = list(_fixed_noise_blocks(images_uint8, first_index))
    return torch.cat(blocks) if blocks else torch.zeros(images_uint8.shape, dtype=torch.float32)


def _check_eval_float32(model: RealNVP) -> None:
    # Eval mode is required: in training mode batch norm uses the batch's statistics, so an image's number would
    # depend on the others. A bf16 compute path for the s,t networks is not refused: the app uses one only where
    # nvp_core.fastpath.faithful found its bits/dim within 1e-4 of float32 on the model's weights.
    if model.training:
        raise ValueError("the bits/dim convention uses the model in eval mode: call model.eval() first")


@torch.inference_mode()
def fixed_noise_bits_per_dim(model: RealNVP, images_uint8: Tensor, first_index: int = 0) -> Tensor:
    """``[B]`` bits/dim of 8-bit images, the one convention every number shown to a user follows
    (:data:`CONVENTION`): uniform dequantisation noise from :func:`fixed_noise_dequantize` (``first_index``: the
    index of the first image in its data set; an image from elsewhere counts as image 0), eval mode, float32.
    Computed block by block (the blocks of 500 that share a draw), so over a test set in order it gives the
    very numbers of ``train.evaluate.eval_bits_per_dim`` (their mean)."""
    _check_eval_float32(model)
    ref = next(model.parameters())
    out = [
        model.bits_per_dim_of(model.log_prob(x.to(device=ref.device, dtype=ref.dtype)))
        for x in _fixed_noise_blocks(images_uint8, first_index)
    ]
    return torch.cat(out) if out else torch.zeros(0, dtype=ref.dtype, device=ref.device)


@torch.inference_mode()
def fixed_noise_breakdown(model: RealNVP, images_uint8: Tensor, first_index: int = 0) -> dict[str, Tensor]:
    """:func:`bits_per_dim_breakdown` under the convention of :func:`fixed_noise_bits_per_dim` (its terms sum to
    that function's value up to float rounding)."""
    return fixed_noise_bits_per_dim_and_breakdown(model, images_uint8, first_index)[1]


@torch.inference_mode()
def fixed_noise_bits_per_dim_and_breakdown(
    model: RealNVP, images_uint8: Tensor, first_index: int = 0
) -> tuple[Tensor, dict[str, Tensor]]:
    """:func:`fixed_noise_bits_per_dim` ``[B]`` and its terms (:func:`fixed_noise_breakdown`) from one pass of the
    flow instead of two. The bits/dim are that function's to the bit: the same blocks, and a traced pass whose
    log-det is :meth:`RealNVP.forward`'s (:meth:`RealNVP.trace`), turned into a density the same way."""
    _check_eval_float32(model)
    ref = next(model.parameters())
    done = [
        _traced(model, x.to(device=ref.device, dtype=ref.dtype)) for x in _fixed_noise_blocks(images_uint8, first_index)
    ]
    if not done:
        raise ValueError("no images: expected uint8 images [B, C, H, W] with B ≥ 1")
    return torch.cat([bpd for bpd, _ in done]), {k: torch.cat([parts[k] for _, parts in done]) for k in done[0][1]}


def _breakdown(model: RealNVP, x: Tensor) -> dict[str, Tensor]:
    return _traced(model, x)[1]


def _traced(model: RealNVP, x: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
    """One traced pass over continuous images ``x``: the bits/dim ``[B]`` (:meth:`RealNVP.log_prob`'s density) and
    its additive terms (see :func:`bits_per_dim_breakdown`)."""
    zs, logdet, parts = model.trace(x)
    scale = 1.0 / (model.dim * math.log(2.0))
    out: dict[str, Tensor] = {}
    for level, z in enumerate(zs, start=1):
        out[f"prior level {level}"] = -standard_normal_logprob(z) * scale
    out["logdet logit"] = -parts[0][1] * scale
    for name, ld in parts[1:]:
        key = f"logdet {name.split(':')[0]}"
        out[key] = out.get(key, torch.zeros_like(ld)) - ld * scale
    out["dequantisation"] = torch.full_like(parts[0][1], 8.0)
    return model.bits_per_dim_of(model.log_prob_of(zs, logdet)), out
