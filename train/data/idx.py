"""``fashion-mnist`` from its IDX files (``*-images-idx3-ubyte[.gz]``, ``*-labels-idx1-ubyte[.gz]``).

The reader is nvp_core.idx (the app reads Fashion-MNIST too); writing is for tests.
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np

from nvp_core.idx import FASHION_MNIST_DIRS, IdxError, find_idx, read_idx

from .base import FASHION_CLASSES, DataError, Splits, from_arrays

__all__ = [
    "FASHION_MNIST_DIRS", "IdxError", "fashion_mnist_missing", "find_idx", "load_fashion_mnist", "read_idx", "write_idx"
]  # fmt: skip

_FILES = [f"{p}-{k}" for p in ("train", "t10k") for k in ("images-idx3-ubyte", "labels-idx1-ubyte")]


def write_idx(path: str | Path, array: np.ndarray) -> None:
    """Writes ``array`` (uint8) as an IDX file, gzip-compressed if ``path`` ends with ``.gz`` (for tests)."""
    path = Path(path)
    array = np.ascontiguousarray(array, dtype=np.uint8)
    payload = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wb") as f:
        f.write(payload)


def load_fashion_mnist(data_dir: Path | None) -> Splits | None:
    """Fashion-MNIST from the IDX files in ``data_dir`` (default: Debian's folder); ``None`` when not there."""
    for folder in [data_dir] if data_dir else list(FASHION_MNIST_DIRS):
        paths = [find_idx(folder, stem) for stem in _FILES]
        if all(paths):
            try:
                x_tr, y_tr, x_te, y_te = (read_idx(p) for p in paths)  # type: ignore[arg-type]
            except IdxError as e:
                raise DataError(f"Fashion-MNIST: {e}") from None
            return from_arrays("fashion-mnist", x_tr, y_tr, x_te, y_te, FASHION_CLASSES)
    return None


def fashion_mnist_missing(data_dir: Path | None, why: str) -> DataError:
    """The message when neither the IDX files nor torchvision (``why``) gave Fashion-MNIST."""
    where = f"--data-dir {data_dir}" if data_dir else " or ".join(str(f) for f in FASHION_MNIST_DIRS)
    return DataError(
        f"Fashion-MNIST not found in {where} (expected {', '.join(f + '[.gz]' for f in _FILES)}). Fix: install "
        f"Debian's package (sudo apt install dataset-fashion-mnist), or pass --data-dir DIR with those files. ({why})"
    )
