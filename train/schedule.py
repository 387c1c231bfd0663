"""The learning-rate schedule: a short linear warm-up, then constant or a cosine decay to the end of the budget."""

from __future__ import annotations

import math


def budget_progress(step: int, elapsed_s: float, total_steps: int, max_seconds: float) -> float:
    """Fraction in [0, 1] of the training budget used: the furthest of the step budget and the time budget
    (``0`` means that budget is not set). A run with a time budget anneals by the wall clock."""
    p = 0.0
    if total_steps > 0:
        p = max(p, step / total_steps)
    if max_seconds > 0:
        p = max(p, elapsed_s / max_seconds)
    return min(1.0, p)


def learning_rate(
    base_lr: float, step: int, warmup_steps: int, progress: float, schedule: str, min_lr_ratio: float
) -> float:
    """The learning rate at ``step`` (0-based) given the budget ``progress`` in [0, 1]."""
    warm = min(1.0, (step + 1) / warmup_steps) if warmup_steps > 0 else 1.0
    if schedule == "constant":
        return base_lr * warm
    cosine = 0.5 * (1.0 + math.cos(math.pi * min(1.0, max(0.0, progress))))
    return base_lr * warm * (min_lr_ratio + (1.0 - min_lr_ratio) * cosine)
