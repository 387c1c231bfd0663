"""A dataset at the run's channels and image size, resampled as the app resamples uploads."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from nvp_core.images import to_array

from .base import DataError, Splits


def convert(splits: Splits, channels: int, image_size: int) -> Splits:
    """Converts both splits to ``channels`` (1 or 3) and ``image_size`` (resampled with Lanczos); 0 keeps."""
    if channels not in (0, 1, 3):
        raise DataError(f"--channels must be 1 or 3, got {channels}")
    if image_size < 0:
        raise DataError(f"--image-size must be positive, got {image_size}")
    for attr in ("train", "test", "validation"):
        x = getattr(splits, attr)
        if len(x) == 0:
            continue
        if channels and x.shape[1] != channels:
            x = x.expand(-1, 3, -1, -1).contiguous() if channels == 3 else _luma(x)
        if image_size and x.shape[2] != image_size:
            x = resize(x, image_size)
        setattr(splits, attr, x)
    return splits


def _luma(x: torch.Tensor) -> torch.Tensor:
    """RGB ``uint8 [N, 3, H, W]`` -> grayscale ``[N, 1, H, W]`` (ITU-R 601 weights, as PIL's ``L``)."""
    w = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    return (x.float() * w).sum(1, keepdim=True).round().clamp(0, 255).to(torch.uint8)


def resize(x: torch.Tensor, size: int) -> torch.Tensor:
    """``uint8 [N, C, H, W]`` -> ``[N, C, size, size]``, channel by channel, with the app's own crop and resize
    (:func:`nvp_core.images.to_array`: centre crop to a square, then Lanczos), so training and uploads match."""
    out = np.empty((x.shape[0], x.shape[1], size, size), dtype=np.uint8)
    arr = x.numpy()
    for i in range(arr.shape[0]):
        for c in range(arr.shape[1]):
            out[i, c] = to_array(Image.fromarray(arr[i, c]), 1, size)[0]
    return torch.from_numpy(out)
