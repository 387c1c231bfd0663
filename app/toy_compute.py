"""Streamlit-free glue of the Playground page: the process-wide bound on training chunks, and the toy model's
numbers for the pictures (all the mathematics is in ``nvp_core.toy`` / ``nvp_core.toy_train``)."""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from nvp_core.toy_train import ToyTrainer

SLOTS_ENV = "NVP_APP_TOY_SLOTS"
CHUNK_SECONDS = 0.5  # CPU time of one training chunk: between two screen updates
WAIT_SECONDS = 0.2  # how long a chunk waits for a free slot before this update skips training


def slot_count() -> int:
    """Training chunks that may run at once in this server process: ``$NVP_APP_TOY_SLOTS``, else half the cores
    (at least one), so that a class pressing Train together leaves the other pages their share of the CPU."""
    env = os.environ.get(SLOTS_ENV, "")
    if re.fullmatch(r"[0-9]{1,3}", env) and int(env) > 0:
        return int(env)
    return max(1, (os.cpu_count() or 1) // 2)


_SLOTS = threading.BoundedSemaphore(slot_count())
_busy_lock = threading.Lock()
_waiting = 0


def waiting() -> int:
    """How many sessions are waiting for a training slot now."""
    return _waiting


def train_chunk(
    trainer: ToyTrainer,
    seconds: float = CHUNK_SECONDS,
    wait: float = WAIT_SECONDS,
    then: Callable[[], object] | None = None,
) -> bool:
    """Trains ``trainer`` for about ``seconds`` if a slot is free within ``wait`` seconds, then runs ``then`` (the
    pictures of the new model) in the same slot, so that what a live update costs, not only its training, is
    bounded; returns whether it trained. An unexpected failure becomes the trainer's error (the page shows it with
    a Reset), never a traceback."""
    global _waiting
    with _busy_lock:
        _waiting += 1
    try:
        got = _SLOTS.acquire(timeout=wait)
    finally:
        with _busy_lock:
            _waiting -= 1
    if not got:
        return False
    try:
        trainer.train_for(seconds)
        if then is not None and trainer.error is None:
            then()
    except (RuntimeError, ValueError) as e:  # e.g. a singular step or out of memory: the run cannot go on
        trainer.error = f"Training stopped: {e}. Press Reset to start again."
    finally:
        _SLOTS.release()
    return True


@dataclass(frozen=True)
class Trace:
    """A layer-by-layer trace for the pictures: per stage its name, points ``[N, 2]``, grid lines ``[L, P, 2]`` and
    the mean log-det of that step over the points (nats)."""

    names: list[str]
    points: list[np.ndarray]
    lines: list[np.ndarray]
    logdets: list[float]


def trace(trainer: ToyTrainer, start: np.ndarray, lines: np.ndarray, generation: bool) -> Trace:
    """Pushes ``start`` points and grid ``lines`` through the flow layer by layer: forward (inference, from data
    space) or backward (generation, from latent space)."""
    model = trainer.model.eval()
    n = len(start)
    both = torch.from_numpy(np.concatenate([start, lines.reshape(-1, 2)]).astype(np.float32))
    with torch.no_grad():
        stages = model.trace_inverse(both) if generation else model.trace_forward(both)
    return Trace(
        names=[s.name for s in stages],
        points=[s.points[:n].numpy() for s in stages],
        lines=[s.points[n:].numpy().reshape(lines.shape) for s in stages],
        logdets=[float(s.logdet[:n].mean()) if n else 0.0 for s in stages],
    )


def steps_per_second(trainer: ToyTrainer) -> float:
    return trainer.steps / trainer.seconds if trainer.seconds > 0 else 0.0
