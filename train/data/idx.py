"""``fashion-mnist`` from its IDX files (``*-images-idx3-ubyte[.gz]``, ``*-labels-idx1-ubyte[.gz]``).

A reader of our own, because Debian's package or a folder of those files then trains without torchvision.
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np

from .base import FASHION_CLASSES, DataError, Splits, from_arrays

FASHION_MNIST_DIRS = (Path("/usr/share/datasets/fashion-mnist"),)
_FILES = [f"{p}-{k}" for p in ("train", "t10k") for k in ("images-idx3-ubyte", "labels-idx1-ubyte")]

# IDX type codes -> numpy dtypes (big-endian where it matters).
_DTYPES: dict[int, str] = {0x08: "u1", 0x09: "i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


class IdxError(ValueError):
    """A file that is not a valid IDX file; the message says why."""


def read_idx(path: str | Path) -> np.ndarray:
    """The array stored in an IDX file (gzip-compressed or not), e.g. ``uint8 [N, 28, 28]`` for images."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as e:
        raise IdxError(f"{path}: cannot read ({e})") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise IdxError(f"{path}: not an IDX file (bad magic number)")
    code, ndim = data[2], data[3]
    if code not in _DTYPES or ndim == 0:
        raise IdxError(f"{path}: not an IDX file (type code {code:#x}, {ndim} dimensions)")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise IdxError(f"{path}: truncated header")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    dtype = np.dtype(_DTYPES[code])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(data) - header != expected:
        raise IdxError(f"{path}: expected {expected} bytes of data for shape {shape}, found {len(data) - header}")
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def find_idx(folder: Path, stem: str) -> Path | None:
    """``folder/stem`` or ``folder/stem.gz`` (also the ``stem`` with ``-`` replaced by ``.``), if present."""
    for name in (stem, stem.replace("-idx", ".idx")):
        for candidate in (folder / name, folder / f"{name}.gz"):
            if candidate.is_file():
                return candidate
    return None


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
