"""AppTest tests of the Playground page (a 2-D Real NVP that trains live) on a small fixture model's app."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
from app_helpers import APP, TIMEOUT, by_label, image_urls, make_fixture_model, problems
from streamlit.testing.v1 import AppTest

from app import toy_compute, toy_pictures
from nvp_core.toy_train import ToySettings, ToyTrainer

PAGE = "views/playground.py"


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("pg_models")
    make_fixture_model(folder, "grey8", 1, 8, 2)
    return folder


def _open(monkeypatch: pytest.MonkeyPatch, models: Path) -> AppTest:
    monkeypatch.setenv("NVP_MODELS_DIR", str(models))
    monkeypatch.setenv("NVP_RUNS_DIR", str(models))
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT).run()
    at.switch_page(PAGE).run()
    assert not problems(at), problems(at)
    return at


def _click(at: AppTest, key: str) -> AppTest:
    at.button(key=key).click().run()
    assert not at.exception, [e.message for e in at.exception]
    return at


def _pictures(at: AppTest) -> dict[str, list[str]]:
    return {cap.split(":")[0]: urls for cap, urls in image_urls(at).items()}


def test_playground_trains_and_its_pictures_change(monkeypatch: pytest.MonkeyPatch, models: Path) -> None:
    at = _open(monkeypatch, models)
    assert at.title[0].value == "Playground"
    before = _pictures(at)
    for name in ("data", "model samples at T = 1 (x = f⁻¹(T·z))", "log p(x)", "Inference x → z (data to latent)"):
        assert any(k.startswith(name.split(" (")[0]) for k in before), (name, list(before))
    assert any("step 0" in c.value for c in at.caption)
    _click(at, "pg_train")  # the whole run trains one chunk
    assert at.button(key="pg_train").disabled and not at.button(key="pg_pause").disabled
    first = next(c.value for c in at.caption if c.value.startswith("step "))
    steps = int(first.split()[1])
    assert steps > 0 and "test log-likelihood" in first
    after = _pictures(at)
    changed = [k for k in before if k in after and before[k] != after[k]]
    assert any(k.startswith("model samples") for k in changed), changed
    assert any(k.startswith("log p(x)") for k in changed) and any(k.startswith("Generation") for k in changed)
    assert any(k.startswith("data") for k in after) and any(k.startswith("training loss") for k in after)
    at.run()  # the next update trains on
    later = next(c.value for c in at.caption if c.value.startswith("step "))
    assert int(later.split()[1]) > steps
    _click(at, "pg_pause")
    paused = next(c.value for c in at.caption if c.value.startswith("step "))
    at.run()
    assert next(c.value for c in at.caption if c.value.startswith("step ")).split()[1] == paused.split()[1]
    _click(at, "pg_reset")
    assert any(c.value.startswith("step 0") for c in at.caption)


def test_settings_make_a_new_model_and_temperature_changes_samples(
    monkeypatch: pytest.MonkeyPatch, models: Path
) -> None:
    at = _open(monkeypatch, models)
    _click(at, "pg_train")
    by_label(at.select_slider, "Learning rate").set_value(1e-3).run()  # the rate changes in place: it trains on
    assert not problems(at) and not any(c.value.startswith("step 0 ") for c in at.caption)
    by_label(at.selectbox, "Data set").set_value("rings").run()
    assert any(c.value.startswith("step 0") for c in at.caption)  # a new model, paused
    assert any(k.startswith("data: rings") for k in image_urls(at))
    samples = [u for k, u in image_urls(at).items() if k.startswith("model samples")]
    by_label(at.slider, "Temperature").set_value(0.5).run()
    cooler = [u for k, u in image_urls(at).items() if k.startswith("model samples at T = 0.5")]
    assert samples and cooler and cooler != samples
    assert "rings" in str(at.query_params.get("pg_data")) and "0.5" in str(at.query_params.get("pg_t"))


def test_a_diverging_learning_rate_ends_in_a_message_and_reset(monkeypatch: pytest.MonkeyPatch, models: Path) -> None:
    at = _open(monkeypatch, models)
    by_label(at.select_slider, "Learning rate").set_value(1.0).run()
    _click(at, "pg_train")
    for _ in range(10):
        if at.error:
            break
        at.run()
    assert at.error and "Lower the learning rate" in at.error[0].value and not at.exception
    assert at.button(key="pg_train").disabled and at.button(key="pg_pause").disabled
    by_label(at.select_slider, "Learning rate").set_value(1e-3).run()
    _click(at, "pg_reset")
    assert not at.error and any(c.value.startswith("step 0") for c in at.caption)
    _click(at, "pg_train")
    assert not at.error and not at.exception


def test_training_chunks_of_all_sessions_are_bounded() -> None:
    slots = toy_compute.slot_count()
    trainers = [ToyTrainer(ToySettings(num_couplings=2, hidden=8)) for _ in range(slots + 3)]
    busy, peak, lock = [0], [0], threading.Lock()
    original = ToyTrainer.train_for

    def counted(self: ToyTrainer, seconds: float = 0.5, max_steps: int = 100_000) -> list[float]:
        with lock:
            busy[0] += 1
            peak[0] = max(peak[0], busy[0])
        try:
            time.sleep(0.1)
            return original(self, 0.01, 2)
        finally:
            with lock:
                busy[0] -= 1

    results: list[bool] = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ToyTrainer, "train_for", counted)
        threads = [
            threading.Thread(target=lambda t=t: results.append(toy_compute.train_chunk(t, wait=5.0))) for t in trainers
        ]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
    assert peak[0] == slots and all(results) and len(results) == len(trainers)
    # A session that finds every slot busy skips its update instead of piling up.
    held = [toy_compute._SLOTS.acquire(timeout=1) for _ in range(slots)]
    try:
        assert all(held) and toy_compute.train_chunk(trainers[0], wait=0.05) is False
    finally:
        for _ in held:
            toy_compute._SLOTS.release()


def test_slot_count_follows_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(toy_compute.SLOTS_ENV, "3")
    assert toy_compute.slot_count() == 3
    monkeypatch.setenv(toy_compute.SLOTS_ENV, "lots")
    assert toy_compute.slot_count() >= 1


def test_the_pictures_of_a_chunk_are_drawn_in_its_slot() -> None:
    trainer = ToyTrainer(ToySettings(num_couplings=2, hidden=8))
    held = [toy_compute._SLOTS.acquire(timeout=1) for _ in range(toy_compute.slot_count() - 1)]
    free_while_drawing: list[bool] = []

    def draw() -> None:  # the chunk holds the last slot: none is free
        got = toy_compute._SLOTS.acquire(blocking=False)
        free_while_drawing.append(got)
        if got:
            toy_compute._SLOTS.release()

    try:
        assert all(held) and toy_compute.train_chunk(trainer, seconds=0.01, then=draw)
    finally:
        for _ in held:
            toy_compute._SLOTS.release()
    assert free_while_drawing == [False] and trainer.steps > 0


def test_an_update_that_waits_for_a_slot_shows_the_same_pictures_without_drawing(
    monkeypatch: pytest.MonkeyPatch, models: Path
) -> None:
    at = _open(monkeypatch, models)
    _click(at, "pg_train")
    before = _pictures(at)
    drawn = [0]
    original = toy_pictures.panel

    def counted(*args: object, **kwargs: object) -> object:
        drawn[0] += 1
        return original(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(toy_pictures, "panel", counted)
    held = [toy_compute._SLOTS.acquire(timeout=1) for _ in range(toy_compute.slot_count())]
    try:
        at.run()
    finally:
        for _ in held:
            toy_compute._SLOTS.release()
    assert any("waiting for a free training slot" in c.value for c in at.caption)
    assert drawn[0] == 0 and _pictures(at) == before
    at.run()  # a slot is free again: it trains and draws the new model
    assert drawn[0] > 0 and _pictures(at) != before


def test_the_loss_curve_picture_draws_any_history() -> None:
    from app.toy_pictures import loss_curve

    steps = np.arange(1, 501)
    img = loss_curve(steps, 3.0 - np.log(steps) / 5)
    assert img.shape == (3, 240, 240) and img.dtype == np.uint8
    blue = (img[2] > 150) & (img[0] < 100)
    assert blue.sum() > 100  # the line is drawn
    for odd in ([np.nan, 1.0], [np.inf, np.inf]):  # one odd loss, or none usable: still a picture
        assert loss_curve(np.array([1, 2]), np.array(odd)).shape == (3, 240, 240)
    assert loss_curve(np.array([]), np.array([])).shape == (3, 240, 240)


def test_live_updates_slow_down_as_more_sessions_share_the_slots() -> None:
    tick = toy_compute.live_tick
    assert tick(1, 1) == toy_compute.TICK and tick(2, 2) == toy_compute.TICK
    assert tick(2, 1) == 2 * toy_compute.TICK and tick(3, 1) == tick(4, 1) == 4 * toy_compute.TICK
    assert tick(30, 1) == tick(1000, 1) == toy_compute.MAX_TICK  # however many train, a page still updates
    assert all(tick(n, 1) <= tick(n + 1, 1) for n in range(1, 40))


def test_training_sessions_are_counted_while_they_update(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(toy_compute, "_seen", {})
    assert toy_compute.note_training("a", now=100.0) == 1
    assert toy_compute.note_training("b", now=101.0) == 2 and toy_compute.note_training("a", now=102.0) == 2
    toy_compute.stop_training("b")  # paused
    assert toy_compute.note_training("a", now=103.0) == 1
    toy_compute.note_training("c", now=104.0)
    assert toy_compute.note_training("d", now=104.0 + toy_compute.SEEN_SECONDS + 1) == 1  # gone quiet: not counted


def test_a_class_training_at_once_is_told_and_updated_less_often(monkeypatch: pytest.MonkeyPatch, models: Path) -> None:
    monkeypatch.setattr(toy_compute, "_seen", {f"other{k}": time.monotonic() for k in range(7)})
    at = _open(monkeypatch, models)
    _click(at, "pg_train")
    status = next(c.value for c in at.caption if c.value.startswith("step "))
    slots = toy_compute.slot_count()
    if slots < 8:
        assert (
            f"8 sessions train on this server and take turns: this page updates every {toy_compute.live_tick(8):g} s"
            in status
        )
    assert at.session_state["_toy_tick"] == toy_compute.live_tick(8)
    _click(at, "pg_pause")
    assert len(toy_compute._seen) == 7  # a paused session no longer counts
