"""Runs: the training runs under a folder, each with its learning curve, sample grids and config; open a run's
checkpoint in the other pages."""

from __future__ import annotations

import json

import numpy as np
import plotly.graph_objects as go
import streamlit as st

from app import link, runs, state, widgets
from app.models import read_metrics
from nvp_core import CheckpointError, read_header
from nvp_core.images import ImageError, load_image


def _parse(text: str) -> object:
    """A header value: JSON when it is (the config), else the text."""
    try:
        return json.loads(text)
    except ValueError:
        return text


st.title("Runs")
folder = runs.runs_dir()
found = runs.find_runs(folder)
st.caption(
    f"Training runs in {folder} (set `NVP_RUNS_DIR` for another folder), most recent first. A run that is still "
    "training refreshes every 15 s."
)
if not found:
    st.info(f"No runs found in {folder}. Start one with `python -m train --out {folder}/my_run`.")
    st.stop()
names = [r.name for r in found]
choice = st.selectbox(
    "Run",
    names,
    key="runs_choice",
    format_func=lambda n: n + (" (training)" if found[names.index(n)].live else ""),
)
assert choice is not None  # names is not empty here
run = found[names.index(choice)]


@link.fragment(run_every=15 if run.live else None)
def run_view(run: runs.Run) -> None:
    run = next((r for r in runs.find_runs(run.path.parent) if r.path == run.path), run)  # re-read while it trains
    counters = run.state()
    if counters:
        best = counters.get("best_bpd")
        st.caption(
            f"step {counters.get('step', '?')} · epoch {counters.get('epoch', '?')}"
            + (f" · best test bits/dim {best:.3f}" if isinstance(best, float) else "")
        )
    rows = read_metrics(run.metrics) if run.metrics else []
    keys = sorted({k for r in rows for k in r if "bpd" in k})
    if keys:
        curve = go.Figure()
        for k in keys:
            pts = [(r.get("step", i), r[k]) for i, r in enumerate(rows) if k in r]
            curve.add_trace(go.Scatter(x=[p[0] for p in pts], y=[p[1] for p in pts], mode="lines+markers", name=k))
        curve.update_layout(
            height=300, margin={"l": 10, "r": 10, "t": 10, "b": 10}, xaxis_title="step", yaxis_title="bits/dim"
        )
        st.markdown("**Learning curve** (bits/dim; test values use the fixed-noise convention of the model card)")
        st.plotly_chart(curve, key="runs_curve")
    else:
        st.caption("No bits/dim recorded yet (metrics.jsonl).")
    if run.samples:
        steps = [s for s, _ in run.samples]
        step = steps[-1]
        if len(steps) > 1:
            step = st.select_slider("Samples after step", steps, value=steps[-1], key=f"runs_step:{run.name}")
        path = dict(run.samples)[step]
        try:
            arr = np.asarray(load_image(path.read_bytes()))
        except (OSError, ImageError) as e:
            st.caption(f"({path.name} cannot be shown: {e})")
        else:
            arr = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
            widgets.picture(np.ascontiguousarray(arr), 2 * arr.shape[2], f"samples after step {step} ({path.name})")


run_view(run)

st.subheader("Checkpoints")
if not run.checkpoints:
    st.caption("No checkpoint yet.")
for ckpt in run.checkpoints:
    c1, c2 = st.columns([1, 3])
    c1.button(
        f"Explore {ckpt.name}",
        key=f"runs_open:{ckpt}",
        on_click=state.open_run_checkpoint,  # a callback: the sidebar's model picker is already drawn in this run
        args=(ckpt,),
        help="Makes it the current model of the other pages (the sidebar lists it).",
    )
    with c2.expander(f"{ckpt.name}: config and metadata"):
        try:
            header = read_header(ckpt)
        except CheckpointError as e:
            st.caption(str(e))
        else:
            st.json({k: _parse(v) for k, v in header.items()}, expanded=1)
