"""Streamlit-free glue of the Playground page: the process-wide bound on training chunks, and the toy model's
numbers for the pictures (all the mathematics is in ``nvp_core.toy`` / ``nvp_core.toy_train``)."""

from __future__ import annotations

import math
import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from nvp_core.toy_train import ToyTrainer

SLOTS_ENV = "NVP_APP_TOY_SLOTS"
CHUNK_SECONDS = 0.5  # CPU time of one training chunk: between two screen updates
WAIT_SECONDS = 0.2  # how long a chunk waits for a free slot before this update skips training
TICK = 0.7  # seconds between live updates of a session that trains alone (a chunk trains ~0.5 s of them)
MAX_TICK = 11.2  # the longest wait between updates, however many sessions train
SEEN_SECONDS = 2 * MAX_TICK  # a session that has not updated for this long no longer counts as training


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


_seen: dict[str, float] = {}  # training session -> when it last updated (monotonic seconds)


def waiting() -> int:
    """How many sessions are waiting for a training slot now."""
    return _waiting


def note_training(session: str, now: float | None = None) -> int:
    """Records that ``session`` trains (at each of its updates) and returns how many sessions train now."""
    now = time.monotonic() if now is None else now
    with _busy_lock:
        _seen[session] = now
        for k in [k for k, t in _seen.items() if now - t > SEEN_SECONDS]:
            del _seen[k]
        return len(_seen)


def stop_training(session: str) -> None:
    with _busy_lock:
        _seen.pop(session, None)


def live_tick(sessions: int, slots: int | None = None) -> float:
    """Seconds between a training session's live updates: :data:`TICK` while every session can have a slot, longer
    (doubling, up to :data:`MAX_TICK`) as more sessions share the slots. An update costs the server a rerun even
    when it waits for a slot and shows nothing new, so a class training at once updates about as often as its
    sessions can train, not every ``TICK``."""
    turns = max(1.0, sessions / (slots or slot_count()))
    return min(MAX_TICK, TICK * 2.0 ** math.ceil(math.log2(turns)))


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
