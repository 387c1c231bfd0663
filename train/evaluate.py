"""Evaluation in float32 and eval mode: test bits/dim with fixed noise, sample grids, batch-norm recalibration."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from PIL import Image
from torch import nn
from torch.optim.swa_utils import update_bn

from nvp_core import BatchNormFlow, RealNVP, dequantize
from nvp_core.latent import temperature_rows
from nvp_core.likelihood import EVAL_BATCH, fixed_noise_bits_per_dim


@contextmanager
def eval_float32(model: RealNVP) -> Iterator[RealNVP]:
    """Eval mode and full precision inside; the previous mode and compute dtype are restored after. Full
    precision includes the GPU: TF32 (on by default for cuDNN convolutions) is turned off inside, so that test
    bits/dim on a GPU match the CPU's to float32 accuracy."""
    was_training = model.training
    tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    model.eval()
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        with model.computing_in(None):
            yield model
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32
        model.train(was_training)


@torch.no_grad()
def eval_bits_per_dim(model: RealNVP, images: torch.Tensor, rank: int = 0, world: int = 1) -> float:
    """Mean bits/dim of ``uint8 [N, C, H, W]`` under the one convention of
    :func:`nvp_core.likelihood.fixed_noise_bits_per_dim` (batch ``i`` of ``EVAL_BATCH`` gets noise seed
    ``1000 + i``; eval mode, float32), so the value does not depend on how many processes share the work."""
    total = torch.zeros(2, dtype=torch.float64)  # on the CPU: gloo's part of the process group sums it
    with eval_float32(model):
        for i, start in enumerate(range(0, len(images), EVAL_BATCH)):
            if i % world != rank:
                continue
            bpd = fixed_noise_bits_per_dim(model, images[start : start + EVAL_BATCH], first_index=start)
            total += torch.tensor([bpd.double().sum().item(), bpd.numel()], dtype=torch.float64)
    if world > 1:
        dist.all_reduce(total)
    return float(total[0] / total[1])


@torch.no_grad()
def sample_grid(model: RealNVP, temperatures: tuple[float, ...], per_row: int, seed: int) -> np.ndarray:
    """One row of ``per_row`` samples per temperature, as a ``uint8 [H, W, C]`` image (fixed seed)."""
    zs = temperature_rows(model.latent_shapes, temperatures, per_row, torch.Generator().manual_seed(seed))
    with eval_float32(model):
        device = next(model.parameters()).device
        x = model.inverse([z.to(device) for z in zs]).float().cpu()
    return images_to_grid(x.view(len(temperatures), per_row, *x.shape[1:]))


def images_to_grid(x: torch.Tensor, pad: int = 2, min_cell: int = 32) -> np.ndarray:
    """``[rows, cols, C, H, W]`` floats in [0, 1] -> ``uint8 [H', W', C]`` with padding, upscaled (nearest)
    so that each cell is at least ``min_cell`` pixels."""
    x = torch.nan_to_num(x, nan=0.0).clamp(0, 1)
    rows, cols, c, h, w = x.shape
    k = max(1, -(-min_cell // h))
    x = x.repeat_interleave(k, dim=3).repeat_interleave(k, dim=4)
    h, w = h * k, w * k
    grid = torch.ones(c, rows * (h + pad) + pad, cols * (w + pad) + pad)
    for r in range(rows):
        for j in range(cols):
            top, left = pad + r * (h + pad), pad + j * (w + pad)
            grid[:, top : top + h, left : left + w] = x[r, j]
    return (grid.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def save_png(array: np.ndarray, path: Path) -> None:
    """Writes ``uint8 [H, W, C]`` (C = 1 or 3) as a PNG."""
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array)
    img.save(path)


@torch.no_grad()
def recalibrate_batchnorm(model: RealNVP, batches: Iterator[torch.Tensor]) -> int:
    """Recomputes the running averages of every batch norm as the plain mean over ``batches`` of continuous
    images in train mode, instead of the exponential average of the training trajectory: the s,t ResNets'
    with ``torch.optim.swa_utils.update_bn``, the flow's own in the same pass (``BatchNormFlow`` is no
    ``nn.BatchNorm``, which update_bn leaves alone). Returns the number of batches used. Parameters are not
    touched."""
    flow_bns = [m for m in model.modules() if isinstance(m, BatchNormFlow)]
    saved = [m.momentum for m in flow_bns]
    n = 0

    def next_batch(_module: nn.Module, _args: tuple[object, ...]) -> None:
        nonlocal n
        n += 1
        for flow_bn in flow_bns:
            flow_bn.momentum = 1.0 / n  # lerp with 1/n is the running mean of the batch statistics

    hook = model.register_forward_pre_hook(next_batch)
    try:
        update_bn(batches, model)  # it forwards nothing without an nn.BatchNorm; the s,t ResNets always have one
    finally:
        hook.remove()
        for flow_bn, momentum in zip(flow_bns, saved, strict=True):
            flow_bn.momentum = momentum
    return n


def recalibration_batches(images: torch.Tensor, n: int, batch_size: int, seed: int) -> Iterator[torch.Tensor]:
    """``n`` random batches of dequantised training images (float32), from their own generator."""
    gen = torch.Generator().manual_seed(seed)
    for _ in range(n):
        idx = torch.randint(0, len(images), (batch_size,), generator=gen)
        yield dequantize(images[idx], gen)
