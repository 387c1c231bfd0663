"""Training runs as files (Streamlit-free): the run folders ``train/`` writes, found under one folder.

A run folder holds ``metrics.jsonl``, ``samples/step_<n>.png`` (a sample grid per evaluation), ``best``/``last``
``.safetensors`` checkpoints and ``last.state.json``. The app reads them and never imports the trainer.
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.models import REPO_ROOT

ENV_DIR = "NVP_RUNS_DIR"
LIVE_SECONDS = 600  # a run whose files changed this recently is shown as training, and refreshed


def runs_dir() -> Path:
    """``$NVP_RUNS_DIR``, else ``<repo>/runs``."""
    env = os.environ.get(ENV_DIR)
    return Path(env).expanduser() if env else REPO_ROOT / "runs"


@dataclass(frozen=True)
class Run:
    """One run folder: its checkpoints (best first), metrics file, sample grids by step, and last change."""

    path: Path
    checkpoints: list[Path]
    metrics: Path | None
    samples: list[tuple[int, Path]]
    modified: float

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def live(self) -> bool:
        """True while the run is still writing (a file changed in the last ``LIVE_SECONDS``)."""
        return time.time() - self.modified < LIVE_SECONDS

    def state(self) -> dict[str, Any]:
        """The trainer's ``last.state.json`` counters (step, epoch, best bits/dim, its config), or ``{}``."""
        p = self.path / "last.state.json"
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        counters = data.get("counters") if isinstance(data, dict) else None
        return counters if isinstance(counters, dict) else {}


def _run(folder: Path) -> Run | None:
    ckpts = sorted(
        (p for p in folder.glob("*.safetensors") if not p.name.endswith(".state.safetensors")),
        key=lambda p: (p.name != "best.safetensors", p.name),
    )
    metrics = folder / "metrics.jsonl"
    samples = []
    for p in (folder / "samples").glob("step_*.png"):
        m = re.fullmatch(r"step_([0-9]{1,12})\.png", p.name)
        if m:
            samples.append((int(m.group(1)), p))
    if not ckpts and not metrics.is_file():
        return None
    files = [*ckpts, *(p for _, p in samples)] + ([metrics] if metrics.is_file() else [])
    modified = max((p.stat().st_mtime for p in files if p.exists()), default=0.0)
    return Run(folder, ckpts, metrics if metrics.is_file() else None, sorted(samples), modified)


def find_runs(folder: Path | None = None) -> list[Run]:
    """The run folders directly under ``folder`` (default :func:`runs_dir`), most recently changed first."""
    folder = runs_dir() if folder is None else folder
    if not folder.is_dir():
        return []
    found = [r for sub in folder.iterdir() if sub.is_dir() and (r := _run(sub)) is not None]
    return sorted(found, key=lambda r: -r.modified)
