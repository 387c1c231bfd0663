"""The address bar: every page's settings and the model, as ``st.query_params`` JSON values.

A setting is a widget whose key comes from :func:`setting`: seeded from the link the session opened with (and from
the browser's history on Back or Forward), and written back when the run ends (:func:`flush`), in one update, so
the browser's history gets one entry per change of view. A run that a newer one replaces writes nothing.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import streamlit as st

from app.streamlit_adapter import Rerun, is_history_navigation

PENDING = "_url_pending"  # settings from the link the session opened with, not yet given to a widget
SEEDED = "_url_seeded"  # widget keys this run took from the link (cleared if the link does not fit)
READ = "_url_read"
OVERRIDE = "_url_override"  # this run follows the browser's Back/Forward: the link's values win
OUT = "_link_out"  # setting name → key of what this run showed, written to the link when the run ends
MODEL = "_link_model"  # the model's name for the link, written with the settings
WHOLE_RUN = "_whole_run"  # set while the whole script runs (a fragment's own rerun writes the link itself)


def history_navigation() -> bool:
    """Whether this run follows the browser's Back or Forward button."""
    return is_history_navigation()


def setting(key: str, name: str) -> str:
    """``key``, the widget key of the setting ``name``: given the link's value if the link has one this widget has
    not taken yet (or after Back/Forward), and read back into the link when the run ends (a widget created after
    this call has its value by then, so a page's first run already puts its whole view in the link)."""
    pending = st.session_state.get(PENDING)
    if pending and name in pending and (key not in st.session_state or st.session_state.get(OVERRIDE)):
        st.session_state[key] = pending.pop(name)
        st.session_state.setdefault(SEEDED, []).append(key)
    st.session_state.setdefault(OUT, {})[name] = key
    return key


def read(checkpoints: list[Path]) -> None:
    """On a session's first run, and on every run the browser's Back or Forward button asks for: the link's
    ``model`` (a checkpoint's name in the models folder) becomes the sidebar's choice, and its other parameters
    (JSON values) wait for the widgets of the same setting names; after Back or Forward they replace the
    session's values, so the page shows the view that history entry recorded. Values that are not JSON are
    ignored."""
    back = history_navigation()
    if st.session_state.get(READ) and not back:
        return
    st.session_state[READ] = True
    st.session_state[OVERRIDE] = back
    params = st.query_params.to_dict()
    stem = params.pop("model", None)
    chosen = next((p for p in checkpoints if p.name == f"{stem}.safetensors"), None) if stem else None
    if chosen is not None:
        st.session_state["model_choice"] = str(chosen)
    pending = {}
    for name, text in params.items():
        try:
            pending[name] = json.loads(text)
        except ValueError:
            continue
    st.session_state[PENDING] = pending


def write_model(stem: str | None) -> None:
    """Puts the model's name in the link (``model``), or takes it out (``None``: another browser cannot open it)."""
    if stem:
        st.session_state[MODEL] = stem
    elif "model" in st.query_params:
        del st.query_params["model"]


def flush() -> None:
    """Writes what this run's settings put in the link in one update: a page that opens or a preset that sets
    three weights is one step for the Back button, not one per setting."""
    out: dict[str, str] = st.session_state.pop(OUT, None) or {}
    model = st.session_state.pop(MODEL, None)
    st.session_state.pop(OVERRIDE, None)
    link = {"model": model} if model else {}
    for name, key in out.items():
        if key in st.session_state:
            try:
                link[name] = json.dumps(st.session_state[key], separators=(",", ":"), ensure_ascii=False)
            except TypeError:  # not a plain value: it stays out of the link
                continue
    changed = {name: text for name, text in link.items() if st.query_params.get(name) != text}
    if changed:
        st.query_params.update(changed)


def drop_writes() -> None:
    """Forgets what this run was about to write to the link (a newer run, or a link that did not fit, replaces it)."""
    st.session_state.pop(OUT, None)
    st.session_state.pop(MODEL, None)


def drop_seeded() -> list[str]:
    """Takes this run's settings from the link back out of the session and the link (they did not fit the model);
    returns their names."""
    seeded = st.session_state.pop(SEEDED, None) or []
    if not seeded:
        return []
    drop_writes()
    names = [key.split("|", 1)[1] for key in seeded]
    for key, name in zip(seeded, names, strict=True):
        st.session_state.pop(key, None)
        st.query_params.pop(name, None)
    return names


def whole_run(run: Callable[[], None]) -> None:
    """Runs the script's body; when it ends (also by ``st.stop``), writes the link, unless a newer run replaced it."""
    st.session_state.pop(SEEDED, None)
    st.session_state[WHOLE_RUN] = True
    try:
        run()
    except Rerun:
        drop_writes()
        raise
    finally:
        st.session_state.pop(WHOLE_RUN, None)
        flush()


def fragment(func: Callable[..., None] | None = None, *, run_every: float | None = None) -> Any:
    """``st.fragment`` for a part of a page whose settings are in the link: when the part reruns alone, its run
    ends by writing them (:func:`flush`); in a whole run the script's end writes them with the page's."""

    def wrap(f: Callable[..., None]) -> Any:
        @functools.wraps(f)
        def run(*args: Any, **kwargs: Any) -> None:
            try:
                f(*args, **kwargs)
            except Rerun:
                drop_writes()
                raise
            finally:
                if not st.session_state.get(WHOLE_RUN):
                    flush()

        return st.fragment(run, run_every=run_every)

    return wrap if func is None else wrap(func)
