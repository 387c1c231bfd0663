"""Playground: a Real NVP on 2-D toy data that trains live on the server, with the paper's fig. 1 layer by layer."""

from __future__ import annotations

import uuid
from dataclasses import astuple, dataclass
from typing import cast

import numpy as np
import streamlit as st

from app import compute, link, state, toy_compute, toy_pictures, widgets
from nvp_core.toy_data import DATASETS, EXTENT
from nvp_core.toy_train import ToySettings, ToyTrainer

TRAINER = "_toy_trainer"  # this session's model (never shared); one per session, replaced when its settings change
RUNNING = "_toy_running"
TOKEN = "_toy_session"  # this session's name among those training (toy_compute.note_training)
TICK_NOW = "_toy_tick"  # the live updates' interval the page last registered
DRAWN = "_toy_drawn"  # (state, Drawn): the pictures of the model's last state
RATES = [1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0]
WIDTHS = [16, 32, 64, 128, 256]
SHOWN = 1000  # data points and samples in the pictures
HEAT = 120  # heatmap raster side
ROW = 5  # layer panels per row: five of 180 px fit the page's main column

ctx = state.current()
st.title("Playground")
st.caption(
    "A Real NVP for points in the plane, trained here, live: affine couplings whose s and t are small networks "
    "(each moves one coordinate given the other, eq. 7–9), batch norm between them (eq. 10–11), a standard normal "
    "prior. It learns log p(x) = log N(f(x); 0, I) + log |det ∂f/∂x| (eq. 3) exactly, as the image model does."
)


def _trainer(settings: ToySettings) -> ToyTrainer:
    """This session's trainer: kept while only the learning rate changes, a new one for other settings."""
    trainer: ToyTrainer | None = st.session_state.get(TRAINER)
    if trainer is None or not trainer.settings.same_model(settings):
        trainer = ToyTrainer(settings)
        st.session_state[TRAINER] = trainer
        _run(False)  # a new model waits for Train, and no longer counts as training
    elif trainer.settings.lr != settings.lr:
        trainer.set_lr(settings.lr)
    return trainer


def _run(on: bool) -> None:
    st.session_state[RUNNING] = on
    if not on:
        toy_compute.stop_training(_token())


def _token() -> str:
    if TOKEN not in st.session_state:
        st.session_state[TOKEN] = uuid.uuid4().hex
    return str(st.session_state[TOKEN])


def _reset() -> None:
    trainer: ToyTrainer | None = st.session_state.get(TRAINER)
    if trainer is not None:
        trainer.reset()
    _run(False)


c1, c2, c3, c4 = st.columns(4)
dataset = c1.selectbox("Data set", list(DATASETS), key=ctx.s("pg_data"), persist_state="session")
couplings = c2.slider("Couplings", 2, 12, 6, key=ctx.s("pg_couplings"), persist_state="session")
hidden = c3.select_slider("Hidden units", WIDTHS, value=64, key=ctx.s("pg_hidden"), persist_state="session")
lr = c4.select_slider(
    "Learning rate", RATES, value=3e-3, format_func=lambda v: f"{v:g}", key=ctx.s("pg_lr"), persist_state="session"
)
trainer = _trainer(ToySettings(str(dataset), int(couplings), int(hidden), float(lr)))
running = bool(st.session_state.get(RUNNING)) and trainer.error is None
b1, b2, b3, _ = st.columns([1, 1, 1, 5])
b1.button("Train", key="pg_train", type="primary", on_click=_run, args=(True,), disabled=running or bool(trainer.error))
b2.button("Pause", key="pg_pause", on_click=_run, args=(False,), disabled=not running)
b3.button("Reset", key="pg_reset", on_click=_reset, help="A new model with the settings above.")


def _status(trainer: ToyTrainer, trained: bool | None, drawn: Drawn, sessions: int) -> None:
    test = f" · test log-likelihood {drawn.test_ll:.3f} nats/point" if trainer.steps else ""
    rate = f" · {toy_compute.steps_per_second(trainer):.0f} steps/s" if trainer.steps else ""
    note = ""
    if sessions > toy_compute.slot_count():
        note = (
            f" · {sessions} sessions train on this server and take turns: this page updates every "
            f"{toy_compute.live_tick(sessions):g} s"
        )
    if trained is False:
        note += " · waiting for a free training slot"
    st.caption(f"step {trainer.steps} · {trainer.seconds:.1f} s of training{rate}{test}{note}")


@dataclass(frozen=True)
class Drawn:
    """The pictures of one state of the model, encoded: (picture, caption) for the data, the samples, the density
    and the two layer-by-layer rows."""

    top: list[tuple[compute.Png, str]]
    rows: list[tuple[compute.Png, str]]
    curve: tuple[compute.Png, str] | None  # the loss so far (None before training)
    test_ll: float  # nats per point on the held-out points


def _drawn(trainer: ToyTrainer, temp: float) -> Drawn:
    """This session's pictures of the model as it is now: drawn once per state (steps, settings, temperature), so
    that an update that did not train (no free slot, or paused) shows them again at no cost."""
    key = (id(trainer), trainer.steps, trainer.settings, temp)
    kept = st.session_state.get(DRAWN)
    if kept is not None and kept[0] == key:
        return cast(Drawn, kept[1])
    drawn = _untrained(astuple(trainer.settings), temp) if trainer.steps == 0 else _draw(trainer, temp)
    st.session_state[DRAWN] = (key, drawn)
    return drawn


@st.cache_resource(max_entries=16, show_spinner=False)
def _untrained(settings: tuple[object, ...], temp: float) -> Drawn:
    """An untrained model's pictures: the same for every session with these settings (the start is seeded), so a
    class that opens the page together draws them once."""
    return _draw(ToyTrainer(ToySettings(*settings)), temp)  # type: ignore[arg-type]


def _draw(trainer: ToyTrainer, temp: float) -> Drawn:
    data = trainer.test_points.numpy()[:SHOWN]
    samples = trainer.samples(SHOWN, temp, seed=0)
    heat, top = toy_pictures.density(trainer.log_density(toy_pictures.mesh(EXTENT, HEAT)).reshape(HEAT, HEAT))
    forward = toy_compute.trace(trainer, trainer.test_points.numpy()[:600], toy_pictures.grid_lines(EXTENT), False)
    z = np.random.default_rng(0).standard_normal((600, 2)).astype(np.float32)
    backward = toy_compute.trace(trainer, z, toy_pictures.grid_lines(3.0), True)
    return Drawn(
        top=[
            (
                compute.png(toy_pictures.scatter(data, EXTENT)),
                f"data: {trainer.settings.dataset} ({len(data)} test points)",
            ),
            (
                compute.png(toy_pictures.scatter(samples, EXTENT, rgb=toy_pictures.MODEL_RGB)),
                f"model samples at T = {temp:g} (x = f⁻¹(T·z))",
            ),
            (compute.png(heat), f"log p(x): brightest {top:.2f}, dark ≤ {top - 10:.2f} nats"),
        ],
        rows=[_row("Inference x → z (data to latent)", forward), _row("Generation z → x (latent to data)", backward)],
        curve=_curve(trainer),
        test_ll=trainer.test_log_likelihood() if trainer.steps else float("nan"),
    )


def _curve(trainer: ToyTrainer) -> tuple[compute.Png, str] | None:
    if not trainer.history:
        return None
    steps, losses = (np.array(v) for v in zip(*trainer.history, strict=True))
    last = f"{losses[-1]:.3f}"
    return compute.png(toy_pictures.loss_curve(steps, losses)), f"training loss: {last} nats/point at step {steps[-1]}"


def _pictures(drawn: Drawn) -> None:
    cols = st.columns(4)
    for col, shown in zip(cols, [*drawn.top, drawn.curve], strict=True):
        if shown is None:
            col.caption("The loss curve appears once training starts.")
        else:
            widgets.picture(shown[0], 240, shown[1], col)


def _label(name: str) -> str:
    """Layer names for the plane: which coordinate a coupling keeps. Plain ASCII: the pictures' font may have no
    subscripts."""
    inverse = name.endswith(" inverse")
    base = name.removesuffix(" inverse")
    if base.startswith("channel coupling"):
        base = "coupling, x1 fixed" if "first" in base else "coupling, x2 fixed"
    return base + (", inverse" if inverse else "")


def _layers(drawn: Drawn) -> None:
    """The paper's fig. 1, layer by layer: inference x → z and generation z → x, each step with its log-det."""
    st.subheader("Layer by layer")
    st.caption(
        "Each panel is the plane after one more layer, with a grid carried along; points keep the colour of where "
        "they started. Log-det: the step's log |det J| averaged over the points (a batch norm's is the same for all)."
    )
    for pic, caption in drawn.rows:
        widgets.picture(pic, pic.width, caption)


def _row(title: str, tr: toy_compute.Trace) -> tuple[compute.Png, str]:
    colours = toy_pictures.point_colours(tr.points[0])
    panels = [
        toy_pictures.panel(p, colours, lines, _label(name), "start" if k == 0 else f"log-det {ld:+.3f}")
        for k, (name, p, lines, ld) in enumerate(zip(tr.names, tr.points, tr.lines, tr.logdets, strict=True))
    ]
    total = sum(tr.logdets)
    return (
        compute.png(toy_pictures.panels_row(panels, ncol=min(ROW, len(panels)))),
        f"{title}: {len(panels) - 1} layers, total log-det {total:+.3f} nats (mean over the points)",
    )


tick = float(st.session_state.get(TICK_NOW, toy_compute.TICK))


@link.fragment(run_every=tick if running else None)
def live() -> None:
    trainer: ToyTrainer = st.session_state[TRAINER]
    if trainer.error:
        st.error(trainer.error)
        return
    temp_key = ctx.s("pg_t")
    shown = float(st.session_state.get(temp_key, 1.0))  # the slider below holds this value in this run
    trained, sessions = None, 0
    if st.session_state.get(RUNNING):
        sessions = toy_compute.note_training(_token())
        # The new model's pictures are drawn in the training slot, so that a class training at once stays bounded.
        trained = toy_compute.train_chunk(trainer, then=lambda: _drawn(trainer, shown))
        if trainer.error:  # stops the timer: the whole page reruns and shows the message with Reset
            _run(False)
            st.rerun(scope="app")
        if (wanted := toy_compute.live_tick(sessions)) != tick:  # more or fewer sessions share the slots: a new timer
            st.session_state[TICK_NOW] = wanted
            st.rerun(scope="app")
    _status(trainer, trained, _drawn(trainer, shown), sessions)
    temp = st.slider("Temperature of the samples", 0.0, 1.5, 1.0, 0.05, key=temp_key, persist_state="session")
    drawn = _drawn(trainer, float(temp))
    _pictures(drawn)
    _layers(drawn)


live()
