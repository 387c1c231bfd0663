"""The training statistics between two curve points: the train bits/dim and images/s that the next metrics
record reports, and the latest mean loss the progress bar shows."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

from .metrics import MetricsWriter
from .step_checks import MAX_BAD_STEPS, StepTally, diverged


@dataclass
class LossWindow:
    """Sums over the good steps since the last curve point (:meth:`restart`). ``read_step``: the step up to
    which the :class:`StepTally` has been read into the sums."""

    read_step: int = 0
    loss_sum: float = 0.0  # bits/dim without the +8 of the 8-bit bins
    good_steps: int = 0
    images: int = 0
    started: float = field(default_factory=time.time)
    latest_loss: float | None = None  # the mean over the latest read, for the bar; the metrics get the window's

    def last_bpd(self) -> float:
        """The progress bar's bits/dim: the good steps' mean over the latest read (nan before any)."""
        return math.nan if self.latest_loss is None else self.latest_loss + 8.0

    def read_tally(self, tally: StepTally, metrics: MetricsWriter, step: int) -> None:
        """Moves what ``tally`` counted on the device since the last read into the sums (the one host sync of
        the loop): notes skipped steps, and raises when too many came in a row."""
        if step == self.read_step:
            return
        loss_sum, good, skipped, worst = tally.read()
        self.loss_sum, self.good_steps = self.loss_sum + loss_sum, self.good_steps + good
        self.latest_loss = loss_sum / good if good else self.latest_loss
        if skipped:
            metrics.note(f"steps {self.read_step + 1}..{step}: {skipped} non-finite loss or gradient; skipped")
        self.read_step = step
        if worst >= MAX_BAD_STEPS:
            raise diverged(f"{worst} non-finite steps in a row before step {step}")

    def train_bpd(self) -> float:
        return self.loss_sum / max(1, self.good_steps) + 8.0

    def images_per_s(self) -> float:
        return self.images / max(1e-9, time.time() - self.started)

    def restart(self) -> None:
        """After a curve point: the next one reports the steps from here."""
        self.loss_sum, self.good_steps, self.images, self.started = 0.0, 0, 0, time.time()
