"""The toy trainer (nvp_core.toy_train): bounded chunks, learning, divergence → error state → reset."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
import torch

from nvp_core import toy_train
from nvp_core.toy_train import ToySettings, ToyTrainer

SMALL = ToySettings(num_couplings=4, hidden=32, train_size=1000, test_size=500)


def test_a_chunk_is_bounded_in_time_and_steps() -> None:
    t = ToyTrainer(SMALL)
    start = time.perf_counter()
    losses = t.train_for(0.2)
    assert time.perf_counter() - start < 0.2 + 1.0  # one step past the budget at most (a loaded machine)
    assert len(losses) >= 1 and t.steps == len(losses) and len(t.history) == len(losses)
    assert len(t.train_for(60.0, max_steps=7)) == 7 and t.steps == len(losses) + 7
    assert [s for s, _ in t.history] == list(range(1, t.steps + 1))
    assert not t.model.training  # pictures are drawn in eval mode


def test_training_learns_two_moons() -> None:
    torch.set_num_threads(1)
    t = ToyTrainer(ToySettings(lr=5e-3, train_size=2000, test_size=1000))
    before = t.test_log_likelihood()
    t.train_for(1000.0, max_steps=600)
    after = t.test_log_likelihood()
    assert t.error is None
    assert after > before + 1.0, (before, after)
    # Samples land where the data is: most are close to some training point.
    samples = torch.from_numpy(t.samples(300))
    nearest = torch.cdist(samples, t.train_points).min(dim=1).values
    assert float((nearest < 0.3).float().mean()) > 0.8


@pytest.mark.parametrize("lr", [1.0, 30.0])
def test_divergence_sets_an_error_and_reset_clears_it(lr: float) -> None:
    t = ToyTrainer(ToySettings(lr=lr, num_couplings=4, hidden=32))
    for _ in range(20):
        t.train_for(10.0, max_steps=50)
        if t.error:
            break
    assert t.error is not None and "Reset" in t.error and "learning rate" in t.error
    steps = t.steps
    assert t.train_for(1.0) == [] and t.steps == steps  # stays stopped
    assert math.isnan(t.test_log_likelihood())
    assert all(math.isfinite(v) for _, v in t.history)  # the bad loss is not on the curve
    t.set_lr(1e-3)
    t.reset()
    assert t.error is None and t.steps == 0 and t.history == []
    assert len(t.train_for(10.0, max_steps=5)) == 5 and t.error is None


def test_nan_weights_are_caught() -> None:
    t = ToyTrainer(SMALL)
    with torch.no_grad():
        next(t.model.parameters()).fill_(float("nan"))
    t.train_for(1.0, max_steps=3)
    assert t.error is not None and ("nan" in t.error.lower())


def test_learning_rate_changes_in_place_and_settings_compare() -> None:
    t = ToyTrainer(SMALL)
    t.train_for(10.0, max_steps=3)
    t.set_lr(0.02)
    assert t.optimizer.param_groups[0]["lr"] == 0.02 and t.steps == 3
    assert t.settings.same_model(ToySettings(**{**SMALL.__dict__, "lr": 0.5}))
    assert not t.settings.same_model(ToySettings(**{**SMALL.__dict__, "hidden": 8}))


def test_history_stays_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(toy_train, "HISTORY_MAX", 40)
    t = ToyTrainer(SMALL)
    for _ in range(10):
        t.train_for(10.0, max_steps=10)
    assert len(t.history) <= 40 and t.history[-1][0] == 100
    steps = [s for s, _ in t.history]
    assert steps == sorted(steps)


def test_same_seed_same_run() -> None:
    a, b = ToyTrainer(SMALL), ToyTrainer(SMALL)
    la, lb = a.train_for(10.0, max_steps=5), b.train_for(10.0, max_steps=5)
    assert la == lb
    assert np.array_equal(a.samples(10, 0.8, seed=3), b.samples(10, 0.8, seed=3))
    grid = np.zeros((4, 2), np.float32)
    assert np.array_equal(a.log_density(grid), b.log_density(grid))
