"""bench.toy_speed: the learning curve is scored at the asked training times, and its yardstick is a density."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bench import toy_speed


def test_the_kde_yardstick_finds_a_gaussians_likelihood() -> None:
    rng = np.random.default_rng(0)
    # The exact mean log-density of a 2D standard normal under itself is -log(2 pi e) = -2.838 nats.
    got = toy_speed.kde_yardstick(rng.standard_normal((4000, 2)), rng.standard_normal((2000, 2)))
    assert abs(got - (-math.log(2 * math.pi * math.e))) < 0.1, got


def test_the_curve_is_scored_at_each_checkpoint_and_training_helps() -> None:
    row = toy_speed.learning_curve("two moons", [0.05, 1.5])
    assert row["steps_0.05s"] >= 1 and row["steps_1.5s"] > row["steps_0.05s"]
    assert row["after_1.5s"] > row["after_0.05s"] and row["error"] == ""


def test_an_unknown_data_set_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        toy_speed.main(["--datasets", "spirals"])
    assert "unknown data set(s) spirals" in capsys.readouterr().err
