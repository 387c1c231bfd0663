"""Saving and loading models as one ``.safetensors`` file; nothing is ever unpickled."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .config import FlowConfig
from .fileio import atomic_write
from .model import RealNVP

FORMAT = "nvp_core/1"
_MAX_HEADER = 100 * 1024 * 1024
_MAX_TENSORS = 100_000  # a model has a few thousand tensors
_MIN_TENSORS_PER_BLOCK = 8  # each residual block of each coupling stores 16 (two weight-normed convs, norms)
_MAX_BUFFER_BYTES = 1 << 30  # masks built from the config alone (not stored in the file)


class CheckpointError(ValueError):
    """A file that is not a model saved by :func:`save_model`, with a message that says why."""


def save_model(
    model: RealNVP, path: str | os.PathLike[str], metadata: dict[str, Any] | None = None, half: bool = False
) -> Path:
    """Writes ``model`` (config, weights, batch-norm statistics) and JSON-able ``metadata`` to one
    ``.safetensors`` file, atomically (temporary file + rename). ``half`` stores float16 weights."""
    path = Path(path)
    meta_json = json.dumps(metadata or {}, sort_keys=True)
    dtype = torch.float16 if half else torch.float32
    tensors = {
        k: v.detach().to("cpu", dtype if v.is_floating_point() else v.dtype).contiguous()
        for k, v in model.state_dict().items()
    }
    header = {"format": FORMAT, "config": model.config.to_json(), "metadata": meta_json}
    return atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=header))


def _header(path: Path) -> dict[str, Any]:
    """The whole JSON header (tensor entries and ``__metadata__``), validated as :func:`read_header` says."""
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    size = path.stat().st_size
    with open(path, "rb") as f:
        prefix = f.read(8)
        if len(prefix) < 8:
            raise CheckpointError(f"{path.name}: file is too short to be a .safetensors checkpoint")
        (n,) = struct.unpack("<Q", prefix)
        if n > min(_MAX_HEADER, size - 8) or n < 2:
            raise CheckpointError(_not_safetensors(path, prefix))
        raw = f.read(n)
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise CheckpointError(_not_safetensors(path, prefix)) from None
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or "config" not in meta:
        raise CheckpointError(
            f"{path.name}: a .safetensors file, but not a model saved by nvp_core (train/ or save_model)"
        )
    return header


def read_header(path: str | os.PathLike[str]) -> dict[str, str]:
    """The string metadata of a safetensors file, read without trusting it: checks the 8-byte length
    prefix and the JSON header before any tensor is touched. Raises :class:`CheckpointError`."""
    return _header(Path(path))["__metadata__"]


def _check_fits(path: Path, config: FlowConfig, header: dict[str, Any]) -> None:
    """Checks that ``config`` describes exactly the tensors listed in the header, before anything is
    allocated: the config is untrusted too, and a few bytes of it could otherwise ask for a model of
    hundreds of GB (width), minutes of construction (depth) or huge masks (image size)."""
    entries = {k: v for k, v in header.items() if k != "__metadata__" and isinstance(v, dict)}
    couplings = (config.num_scales - 1) * 6 + config.final_couplings
    if len(entries) > _MAX_TENSORS or couplings * config.num_blocks * _MIN_TENSORS_PER_BLOCK > len(entries):
        raise CheckpointError(
            f"{path.name}: its config ({couplings} couplings of {config.num_blocks} residual blocks) does not fit "
            f"the {len(entries)} tensors in the file"
        )
    try:
        with torch.device("meta"):  # shapes only: nothing is allocated
            skeleton = RealNVP(config)
    except (ValueError, RuntimeError) as e:
        raise CheckpointError(f"{path.name}: its config does not build a model: {e}") from None
    expected = skeleton.state_dict()
    missing = sorted(set(expected) - set(entries))
    unexpected = sorted(set(entries) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"{path.name}: tensors do not match its config "
            f"(missing {len(missing)}: {missing[:3]}, unexpected {len(unexpected)}: {unexpected[:3]})"
        )
    for k, v in expected.items():
        if list(entries[k].get("shape", [])) != list(v.shape):
            raise CheckpointError(
                f"{path.name}: tensor {k} has shape {list(entries[k].get('shape', []))}, its config needs "
                f"{list(v.shape)}"
            )
    extra = sum(b.numel() * b.element_size() for name, b in skeleton.named_buffers() if name not in expected)
    if extra > _MAX_BUFFER_BYTES:
        raise CheckpointError(
            f"{path.name}: its config (image size {config.image_size}) needs {extra / 2**30:.1f} GB of masks; "
            f"the limit is {_MAX_BUFFER_BYTES / 2**30:.0f} GB"
        )


def _not_safetensors(path: Path, prefix: bytes) -> str:
    kind = ""
    if prefix[:1] == b"\x80" or prefix[:2] == b"PK":
        kind = " It looks like a pickle / torch.save file, which is never loaded (it could run code)."
    return f"{path.name}: not a .safetensors checkpoint.{kind} Use a model saved by nvp_core (train/ or save_model)."


def load_model(
    path: str | os.PathLike[str], map_location: str | torch.device = "cpu"
) -> tuple[RealNVP, dict[str, Any]]:
    """Loads a model saved by :func:`save_model`. Returns ``(model in eval mode, float32; metadata)``.

    Raises :class:`CheckpointError` with a clear message for anything else: a pickle, a truncated file,
    a config that does not build, missing, unexpected or mis-shaped tensors.
    """
    path = Path(path)
    header = _header(path)
    meta = header["__metadata__"]
    try:
        config = FlowConfig.from_json(meta["config"])
        metadata = json.loads(meta.get("metadata", "{}"))
    except (ValueError, TypeError) as e:
        raise CheckpointError(f"{path.name}: its config does not build a model: {e}") from None
    _check_fits(path, config, header)
    try:
        tensors = load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path.name}: unreadable .safetensors data (truncated or corrupt?): {e}") from None
    model = RealNVP(config)
    expected = model.state_dict()
    # Names and shapes were checked against the header by _check_fits; load_file returns exactly those tensors.
    for k, v in tensors.items():
        if v.dtype.is_floating_point != expected[k].dtype.is_floating_point:
            raise CheckpointError(f"{path.name}: tensor {k} has dtype {v.dtype}, expected {expected[k].dtype}")
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in tensors.items()})
    model.to(map_location).eval()
    return model, metadata
