"""Training a :class:`~nvp_core.toy.ToyFlow` in bounded chunks (a live demo trains between screen updates)."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace

import numpy as np
import torch

from .toy import ToyFlow
from .toy_data import make

_ADVICE = "Lower the learning rate and press Reset."
HISTORY_MAX = 4000  # loss points kept; older ones are thinned (memory stays bounded however long it trains)


@dataclass(frozen=True)
class ToySettings:
    """What a toy run is made of. ``lr`` may change while training; the others make a new model."""

    dataset: str = "two moons"
    num_couplings: int = 6
    hidden: int = 64
    lr: float = 3e-3
    batch: int = 256
    train_size: int = 4000
    test_size: int = 2000
    seed: int = 0

    def same_model(self, other: ToySettings) -> bool:
        """Whether ``other`` differs from these settings only in the learning rate."""
        return replace(other, lr=self.lr) == self


class ToyTrainer:
    """A model, its Adam optimizer and seeded train/test points. :meth:`train_for` trains for about ``seconds`` and
    returns the losses of the steps it took. When a loss or a parameter stops being finite, or the loss diverges,
    training stops with :attr:`error` set (the model is then unusable); :meth:`reset` starts again."""

    def __init__(self, settings: ToySettings | None = None) -> None:
        self.settings = settings or ToySettings()
        self.reset()

    def reset(self) -> None:
        s = self.settings
        torch.manual_seed(s.seed)
        self.model = ToyFlow(2, num_couplings=s.num_couplings, hidden=s.hidden)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=s.lr)
        self.train_points = torch.from_numpy(make(s.dataset, s.train_size, seed=s.seed))
        self.test_points = torch.from_numpy(make(s.dataset, s.test_size, seed=s.seed + 1))
        self.generator = torch.Generator().manual_seed(s.seed)
        self.steps = 0
        self.seconds = 0.0  # time spent training
        self.history: list[tuple[int, float]] = []  # (step, training loss in nats per point)
        self.error: str | None = None
        self._first_loss: float | None = None

    def set_lr(self, lr: float) -> None:
        self.settings = replace(self.settings, lr=lr)
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def _diverged(self, loss: float) -> str | None:
        if not math.isfinite(loss):
            return f"the loss became {loss} at step {self.steps}"
        if self._first_loss is None:
            self._first_loss = loss
        elif loss > max(50.0, 10.0 * abs(self._first_loss)):
            return f"the loss diverged to {loss:.3g} nats at step {self.steps} (it started at {self._first_loss:.3g})"
        return None

    def _step(self) -> float:
        idx = torch.randint(0, len(self.train_points), (self.settings.batch,), generator=self.generator)
        loss = -self.model.log_prob(self.train_points[idx]).mean()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        # A clip keeps one bad batch from throwing the flow far away; lr that is too large still diverges.
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 100.0)
        self.optimizer.step()
        return float(loss.detach())

    def train_for(self, seconds: float = 0.5, max_steps: int = 100_000) -> list[float]:
        """Trains for about ``seconds`` (at least one step, at most ``max_steps``) unless :attr:`error` is set."""
        losses: list[float] = []
        if self.error is not None:
            return losses
        self.model.train()
        start = time.perf_counter()
        with torch.enable_grad():
            while len(losses) < max_steps and (not losses or time.perf_counter() - start < seconds):
                loss = self._step()
                self.steps += 1
                problem = self._diverged(loss)
                if problem is not None:
                    self.error = f"Training stopped: {problem}. {_ADVICE}"
                    break
                losses.append(loss)
        # Checked once a chunk: a NaN weight makes the next loss NaN anyway, and a check per step costs a third.
        if self.error is None and not all(bool(torch.isfinite(p).all()) for p in self.model.parameters()):
            self.error = f"Training stopped: a weight became infinite or NaN by step {self.steps}. {_ADVICE}"
        self.model.eval()
        self.seconds += time.perf_counter() - start
        self._record(losses)
        return losses

    def _record(self, losses: list[float]) -> None:
        first = self.steps - len(losses) - (1 if self.error else 0) + 1
        self.history.extend((first + i, v) for i, v in enumerate(losses))
        if len(self.history) > HISTORY_MAX:
            self.history = self.history[::2]  # thinned: the curve keeps its shape

    def test_log_likelihood(self) -> float:
        """Mean exact ``log p(x)`` (nats per point) of the held-out points, in eval mode; ``nan`` after an error."""
        if self.error is not None:
            return float("nan")
        self.model.eval()
        with torch.no_grad():
            return float(self.model.log_prob(self.test_points).mean())

    def samples(self, n: int, temperature: float = 1.0, seed: int = 0) -> np.ndarray:
        """``n`` model samples ``[n, 2]`` (eval mode), the same for the same seed and weights."""
        self.model.eval()
        with torch.no_grad():
            return self.model.sample(n, temperature, torch.Generator().manual_seed(seed)).numpy()

    def log_density(self, points: np.ndarray) -> np.ndarray:
        """Exact ``log p(x)`` of ``points`` ``[N, 2]`` (eval mode)."""
        self.model.eval()
        with torch.no_grad():
            return self.model.log_prob(torch.from_numpy(np.asarray(points, np.float32))).numpy()
