"""Scoring images as out of distribution: AUROC, PNG complexity and the complexity-corrected score.

A likelihood model's bits/dim is a natural outlier score (higher = less likely = more outlying), yet flows rate
simple outsiders higher than their own test data (Nalisnick et al., ICLR 2019). Serrà et al. (ICLR 2020) trace
this to input complexity: subtracting a compressor's code length from the bits/dim corrects much of it.
"""

from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image

from .likelihood import fixed_noise_bits_per_dim
from .model import RealNVP

BATCH = 100  # images per pass of the flow: bounded memory, whatever the set's size


def auroc(in_scores: np.ndarray, out_scores: np.ndarray) -> float:
    """The probability that a random outsider scores higher than a random insider (ties count half): the area
    under the ROC curve of detecting outsiders by ``score > threshold``. 0.5 is chance, below 0.5 the score ranks
    outsiders as *more* typical than the model's own data. NaN scores count as the most outlying (+inf)."""
    a = np.sort(_finite_or_inf(in_scores))
    b = _finite_or_inf(out_scores)
    if a.size == 0 or b.size == 0:
        raise ValueError(f"AUROC needs scores of both sets, got {a.size} insiders and {b.size} outsiders")
    below = np.searchsorted(a, b, side="left")  # insiders strictly below each outsider
    at_most = np.searchsorted(a, b, side="right")
    return float((below.sum() + 0.5 * (at_most - below).sum()) / (a.size * b.size))


def _finite_or_inf(scores: np.ndarray) -> np.ndarray:
    s = np.asarray(scores, dtype=np.float64).ravel()
    return np.where(np.isnan(s), np.inf, s)


def png_complexity(image: np.ndarray) -> float:
    """Serrà et al.'s input complexity of one uint8 image ``[C, H, W]`` (C = 1 or 3): the length in bits of its
    PNG file at Pillow's strongest compression, per value (C·H·W), the unit of bits/dim. The file's fixed headers
    count too, so even a constant image costs a little."""
    c, h, w = image.shape
    if c not in (1, 3) or image.dtype != np.uint8:
        raise ValueError(f"expected uint8 [1 or 3, H, W], got {image.dtype} {list(image.shape)}")
    arr = image[0] if c == 1 else image.transpose(1, 2, 0)
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(arr), mode="L" if c == 1 else "RGB").save(
        buf, format="PNG", compress_level=9, optimize=True
    )
    return len(buf.getvalue()) * 8 / (c * h * w)


def png_complexities(images: np.ndarray) -> np.ndarray:
    """:func:`png_complexity` of each of uint8 images ``[N, C, H, W]``, ``[N]`` float64."""
    return np.array([png_complexity(im) for im in images], dtype=np.float64)


def corrected(bits_per_dim: np.ndarray, complexity: np.ndarray) -> np.ndarray:
    """Serrà et al.'s score S(x) = bits/dim − complexity: how many more bits the model needs than a generic
    compressor. High S: the model explains the image worse than its mere simplicity would predict."""
    return np.asarray(bits_per_dim, dtype=np.float64) - np.asarray(complexity, dtype=np.float64)


def score_images(model: RealNVP, images: np.ndarray, batch: int = BATCH) -> tuple[np.ndarray, np.ndarray]:
    """Bits/dim (``nvp_core.likelihood.fixed_noise_bits_per_dim``: image ``i`` of a set gets test image ``i``'s
    noise) and PNG complexity ``[N]`` of uint8 images ``[N, C, H, W]``, ``batch`` images per pass of the flow."""
    x = torch.from_numpy(np.array(images, dtype=np.uint8))  # a copy: cached arrays are read-only
    parts = [fixed_noise_bits_per_dim(model, x[i : i + batch], first_index=i).numpy() for i in range(0, len(x), batch)]
    bpd = np.concatenate(parts).astype(np.float64) if parts else np.zeros(0)
    return bpd, png_complexities(images)
