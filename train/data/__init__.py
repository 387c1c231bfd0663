"""Datasets as in-memory ``uint8`` tensors ``[N, C, H, W]`` with a train and a test split.

``load_dataset(name, ...)`` understands ``fashion-mnist``, ``mnist``, ``cifar10``, ``celeba``, ``digits`` and
``folder:PATH``. Every problem (missing files, no network, no torchvision) is a :class:`DataError` whose
message names the fix. Each loader is a module of its own that imports only :mod:`train.data.base`.
"""

from __future__ import annotations

from pathlib import Path

from .base import (
    CIFAR10_CLASSES,
    DIGIT_CLASSES,
    FASHION_CLASSES,
    DataError,
    Splits,
    default_cache_dir,
    fixed_split,
    hold_out_validation,
    validation_indices,
)
from .convert import convert, resize
from .digits import load_digits
from .folder import load_folder
from .idx import fashion_mnist_missing, load_fashion_mnist
from .torchvision_sets import load_torchvision

__all__ = [
    "CIFAR10_CLASSES",
    "DATASETS",
    "DIGIT_CLASSES",
    "FASHION_CLASSES",
    "DataError",
    "Splits",
    "convert",
    "fixed_split",
    "hold_out_validation",
    "load_dataset",
    "resize",
    "validation_indices",
]

DATASETS = ("fashion-mnist", "mnist", "cifar10", "celeba", "digits", "folder:PATH")
# The paper flips horizontally for CIFAR-10 and CelebA only.
_FLIP_BY_DEFAULT = {"cifar10", "celeba"}


def load_dataset(
    name: str,
    data_dir: str | Path | None = None,
    image_size: int = 0,
    channels: int = 0,
    flip: bool | None = None,
    test_fraction: float = 0.1,
    validation_images: int = 0,
) -> Splits:
    """Loads ``name`` and converts it to ``channels`` and ``image_size`` (``0``: keep the dataset's own), with
    ``validation_images`` training images held out (:func:`hold_out_validation`)."""
    folder = Path(data_dir).expanduser() if data_dir else None
    if name.startswith("folder:"):
        splits = load_folder(Path(name[len("folder:") :]).expanduser(), image_size, channels, test_fraction)
    elif name == "fashion-mnist":
        splits = _fashion_mnist(folder)
    elif name == "digits":
        splits = load_digits(test_fraction)
    elif name in ("mnist", "cifar10", "celeba"):
        splits = load_torchvision(name, folder or default_cache_dir())
    else:
        raise DataError(f"unknown dataset {name!r}; choose one of: {', '.join(DATASETS)}")
    splits.flip = (name in _FLIP_BY_DEFAULT) if flip is None else flip
    return convert(hold_out_validation(splits, validation_images), channels, image_size)


def _fashion_mnist(data_dir: Path | None) -> Splits:
    """The IDX files where they are, else torchvision's download."""
    splits = load_fashion_mnist(data_dir)
    if splits is not None:
        return splits
    try:
        return load_torchvision("fashion-mnist", data_dir or default_cache_dir())
    except DataError as e:
        raise fashion_mnist_missing(data_dir, str(e)) from None
