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


def read_header(path: str | os.PathLike[str]) -> dict[str, str]:
    """The string metadata of a safetensors file, read without trusting it: checks the 8-byte length
    prefix and the JSON header before any tensor is touched. Raises :class:`CheckpointError`."""
    path = Path(path)
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
    return meta


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
    meta = read_header(path)
    try:
        config = FlowConfig.from_json(meta["config"])
        metadata = json.loads(meta.get("metadata", "{}"))
    except (ValueError, TypeError) as e:
        raise CheckpointError(f"{path.name}: its config does not build a model: {e}") from None
    try:
        tensors = load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path.name}: unreadable .safetensors data (truncated or corrupt?): {e}") from None
    model = RealNVP(config)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"{path.name}: tensors do not match its config "
            f"(missing {len(missing)}: {missing[:3]}, unexpected {len(unexpected)}: {unexpected[:3]})"
        )
    for k, v in tensors.items():
        if v.shape != expected[k].shape:
            raise CheckpointError(
                f"{path.name}: tensor {k} has shape {list(v.shape)}, its config needs {list(expected[k].shape)}"
            )
        if v.dtype.is_floating_point != expected[k].dtype.is_floating_point:
            raise CheckpointError(f"{path.name}: tensor {k} has dtype {v.dtype}, expected {expected[k].dtype}")
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in tensors.items()})
    model.to(map_location).eval()
    return model, metadata
