"""The training statistics between two curve points: the train bits/dim and images/s that the next metrics
record reports, and the smoothed loss the progress bar shows."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from .metrics import MetricsWriter
from .step_checks import MAX_BAD_STEPS, StepTally, diverged


@dataclass
class LossWindow:
    """Sums over the good steps since the last curve point (:meth:`restart`). ``read_step``: the step up to
    which a deferred :class:`StepTally` has been read into the sums."""

    read_step: int = 0
    loss_sum: float = 0.0  # bits/dim without the +8 of the 8-bit bins
    good_steps: int = 0
    images: int = 0
    started: float = field(default_factory=time.time)
    smooth_loss: float | None = None  # a moving average for the bar; the metrics get the window's mean

    def add(self, loss: float) -> None:
        """One good step checked on the host."""
        self.loss_sum += loss
        self.smooth_loss = loss if self.smooth_loss is None else 0.95 * self.smooth_loss + 0.05 * loss
        self.good_steps += 1

    def read_tally(self, tally: StepTally | None, metrics: MetricsWriter, step: int) -> None:
        """Moves what ``tally`` counted on the device since the last read into the sums (the one host sync of
        a deferred-checks run): notes skipped steps, and raises when too many came in a row."""
        if tally is None or step == self.read_step:
            return
        loss_sum, good, skipped, worst = tally.read()
        self.loss_sum, self.good_steps = self.loss_sum + loss_sum, self.good_steps + good
        self.smooth_loss = loss_sum / good if good else self.smooth_loss
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
