"""Run logging: metrics.jsonl (one JSON object per evaluation), log.txt, and TensorBoard when installed."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from nvp_core.fastpath_choice import cpu_model


class MetricsWriter:
    """Appends records to ``out/metrics.jsonl`` and notes to ``out/log.txt`` (only where ``enabled``: rank 0)."""

    def __init__(self, out: Path, enabled: bool = True) -> None:
        self.out = out
        self.enabled = enabled
        self._tb: Any = None
        if enabled:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(out / "tensorboard"))
            except ImportError:  # tensorboard is optional
                self._tb = None

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        self.out.mkdir(parents=True, exist_ok=True)
        with open(self.out / "metrics.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
        if self._tb is not None:
            for key in ("train_bpd", "validation_bpd", "test_bpd", "lr", "images_per_s"):
                if isinstance(record.get(key), float | int):
                    self._tb.add_scalar(key, record[key], record["step"])
            self._tb.flush()
        held = "validation" if "validation_bpd" in record else "test"
        self.note(
            f"step {record['step']} epoch {record['epoch']:.2f}: train {record['train_bpd']:.4f} "
            f"{held} {record[f'{held}_bpd']:.4f} bits/dim, {record['images_per_s']:.1f} images/s"
        )

    def note(self, text: str) -> None:
        if not self.enabled:
            return
        line = f"{time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime())}Z {text}"
        tqdm.write(line)
        self.out.mkdir(parents=True, exist_ok=True)
        with open(self.out / "log.txt", "a") as f:
            f.write(line + "\n")


def hardware_description(device: torch.device, world: int) -> str:
    """E.g. ``"1 x CPU AMD EPYC (2 threads)"`` or ``"2 x NVIDIA H200"``."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = f"CPU {cpu_model()} ({torch.get_num_threads()} threads)"
    return f"{world} x {name}"
