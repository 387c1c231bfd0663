"""What every dataset loader shares: :class:`Splits` (the images in memory), :class:`DataError`, the class
names, arrays to splits, and the fixed test and validation splits."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

FASHION_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
DIGIT_CLASSES = [str(i) for i in range(10)]
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


class DataError(ValueError):
    """A dataset that cannot be loaded; the message says how to fix it."""


@dataclass
class Splits:
    """A dataset in memory. Images ``uint8 [N, C, H, W]``, labels ``int64 [N]`` (``-1`` where unknown)."""

    name: str
    train: torch.Tensor
    test: torch.Tensor
    train_labels: torch.Tensor
    test_labels: torch.Tensor
    class_names: list[str] = field(default_factory=list)
    flip: bool = False
    skipped: int = 0  # unreadable files (folder datasets)
    # Training images held out to choose checkpoints (never trained on); empty: the run chooses on the test set.
    validation: torch.Tensor = field(default_factory=lambda: torch.empty(0, dtype=torch.uint8))
    validation_labels: torch.Tensor = field(default_factory=lambda: torch.empty(0, dtype=torch.int64))

    @property
    def channels(self) -> int:
        return int(self.train.shape[1])

    @property
    def image_size(self) -> int:
        return int(self.train.shape[2])


def default_cache_dir() -> Path:
    """Where torchvision downloads go when no ``--data-dir`` is given."""
    return Path(os.environ.get("NVP_DATA", Path.home() / ".cache" / "nvp-explorer" / "datasets"))


def from_arrays(
    name: str, x_tr: np.ndarray, y_tr: np.ndarray, x_te: np.ndarray, y_te: np.ndarray, classes: list[str]
) -> Splits:
    """Grayscale ``[N, H, W]`` or channels-last ``[N, H, W, C]`` arrays -> :class:`Splits`."""

    def images(x: np.ndarray) -> torch.Tensor:
        x = np.asarray(x, dtype=np.uint8)
        x = x[:, None] if x.ndim == 3 else x.transpose(0, 3, 1, 2)
        return torch.from_numpy(np.ascontiguousarray(x))

    def labels(y: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.asarray(y, dtype=np.int64).copy())

    return Splits(name, images(x_tr), images(x_te), labels(y_tr), labels(y_te), list(classes))


def fixed_split(n: int, test_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """``(train indices, test indices)`` of ``n`` items: a fixed permutation (seed 0), independent of the training
    seed, so test numbers stay comparable between runs; at least one test item."""
    order = np.random.default_rng(0).permutation(n)
    n_test = max(1, int(round(n * test_fraction)))
    return order[n_test:], order[:n_test]


def validation_indices(n_train: int, n_validation: int) -> np.ndarray:
    """The training-set indices held out for validation: the first ``n_validation`` of a fixed permutation
    (``numpy.random.default_rng(0).permutation(n_train)``), independent of the training seed, in that order."""
    return np.random.default_rng(0).permutation(n_train)[:n_validation]


def hold_out_validation(splits: Splits, n: int) -> Splits:
    """Moves ``n`` training images (:func:`validation_indices`) to ``splits.validation``; the rest keep their
    order. ``n = 0`` holds nothing out."""
    if n <= 0:
        return splits
    if n >= len(splits.train):
        raise DataError(f"--validation-images {n}: the training split has only {len(splits.train)} images")
    held = torch.from_numpy(validation_indices(len(splits.train), n))
    keep = torch.ones(len(splits.train), dtype=torch.bool)
    keep[held] = False
    splits.validation, splits.validation_labels = splits.train[held], splits.train_labels[held]
    splits.train, splits.train_labels = splits.train[keep], splits.train_labels[keep]
    return splits
