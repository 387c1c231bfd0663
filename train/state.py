"""The resume state: model, optimiser and the run's counters and RNG states (a :class:`RunState`), stored
without pickle.

Tensors go to ``<stem>.state.safetensors``, whose header also holds everything else as JSON, so a single
atomic rename (temporary file + rename) commits a state; ``<stem>.state.json`` is a readable copy of that
JSON, written after it. A run killed at any moment leaves a loadable state.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from nvp_core.fileio import atomic_write

from .run_state import RunState

STATE_FORMAT = "nvp_train_state/1"


class StateError(ValueError):
    """A resume state that cannot be used; the message says why."""


def state_paths(out: Path, stem: str = "last") -> tuple[Path, Path]:
    return out / f"{stem}.state.safetensors", out / f"{stem}.state.json"


def _optimizer_split(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    plain: dict[str, dict[str, Any]] = {}
    for idx, st in sd["state"].items():
        for key, val in st.items():
            if isinstance(val, torch.Tensor):
                tensors[f"optim.{idx}.{key}"] = val.detach().cpu().contiguous()
            else:
                plain.setdefault(str(idx), {})[key] = val
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in sd["param_groups"]]
    return tensors, {"param_groups": groups, "plain_state": plain}


def _optimizer_join(tensors: dict[str, torch.Tensor], info: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for name, val in tensors.items():
        if name.startswith("optim."):
            _, idx, key = name.split(".", 2)
            state.setdefault(int(idx), {})[key] = val
    for idx, st in info["plain_state"].items():
        state.setdefault(int(idx), {}).update(st)
    groups = [{k: (tuple(v) if k == "betas" else v) for k, v in g.items()} for g in info["param_groups"]]
    return {"state": state, "param_groups": groups}


def save_state(
    out: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    rng: dict[str, torch.Tensor],
    counters: dict[str, Any],
    stem: str = "last",
    ema: dict[str, torch.Tensor] | None = None,
) -> None:
    """Writes the resume state. ``rng``: named generator states (uint8 tensors); ``counters``: JSON-able;
    ``ema``: the weight average's tensors (keys ``ema.*``), if the run keeps one."""
    t_path, j_path = state_paths(out, stem)
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    opt_tensors, opt_info = _optimizer_split(optimizer)
    tensors.update(opt_tensors)
    tensors.update({f"rng.{k}": v.cpu().contiguous() for k, v in rng.items()})
    tensors.update({k: v.detach().cpu().contiguous() for k, v in (ema or {}).items() if k.startswith("ema.")})
    doc = {"format": STATE_FORMAT, "counters": counters, "optimizer": opt_info}
    text = json.dumps(doc, indent=1)
    # The tensors file carries the whole JSON document in its header, so that one rename commits a
    # consistent state; the .json file beside it is a readable copy, written after it.
    meta = {"format": STATE_FORMAT, "step": str(counters["step"]), "state": text}
    atomic_write(t_path, lambda tmp: save_file(tensors, tmp, metadata=meta))
    atomic_write(j_path, lambda tmp: Path(tmp).write_text(text))


def load_state(out: Path, stem: str = "last") -> tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, Any]]:
    """Reads a state written by :func:`save_state`: ``(model state_dict, optimizer state_dict, counters)``;
    the RNG states are in ``counters["rng"]`` as tensors, the weight average's in ``counters["ema"]`` (keys
    ``ema.*``, empty when the run keeps none). Only the ``.safetensors`` file is needed."""
    t_path, _ = state_paths(out, stem)
    if not t_path.is_file():
        raise StateError(f"nothing to resume in {out}: expected {t_path.name} (from an earlier run)")
    try:
        with safe_open(str(t_path), "pt") as f:
            meta = f.metadata() or {}
        doc = json.loads(meta.get("state", "{}"))
        tensors = load_file(str(t_path))
    except (OSError, ValueError, SafetensorError) as e:
        raise StateError(f"{t_path}: the resume state is unreadable ({e})") from None
    if meta.get("format") != STATE_FORMAT or doc.get("format") != STATE_FORMAT:
        raise StateError(f"{t_path}: not a resume state of this trainer (format {meta.get('format')!r})")
    counters = doc["counters"]
    model_sd = {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
    counters["rng"] = {k[len("rng.") :]: v for k, v in tensors.items() if k.startswith("rng.")}
    counters["ema"] = {k: v for k, v in tensors.items() if k.startswith("ema.")}
    return model_sd, _optimizer_join(tensors, doc["optimizer"]), counters


def save_run_state(out: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, run: RunState) -> None:
    """Writes ``run`` with the model and optimiser as the run's resume state (``last``)."""
    save_state(out, model, optimizer, run.rng, run.counters(), ema=run.ema)


def load_run_state(out: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any], RunState]:
    """Reads the run's resume state: ``(model state_dict, optimizer state_dict, run state)``. The format is
    the one :func:`save_state` has always written, so states of earlier trainers load the same way."""
    model_sd, optim_sd, counters = load_state(out)
    return model_sd, optim_sd, RunState.from_counters(counters, counters.pop("rng"), counters.pop("ema"))
