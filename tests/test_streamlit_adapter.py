"""app.streamlit_adapter: the Streamlit internals the link relies on still exist and still behave so.

These fail on a Streamlit upgrade that moves or changes them (the link's Back/Forward and its rule that a run
replaced by a newer one writes nothing depend on them); the rest of the app uses the public API only."""

from __future__ import annotations

import dataclasses

from streamlit.proto.ClientState_pb2 import ClientState
from streamlit.runtime.scriptrunner_utils.script_run_context import ScriptRunContext
from streamlit.testing.v1 import AppTest

from app import streamlit_adapter

RERUN_SCRIPT = """
import streamlit as st
from app.streamlit_adapter import Rerun, is_history_navigation

st.session_state.setdefault("runs", []).append(is_history_navigation())
if len(st.session_state.runs) == 1:
    try:
        st.rerun()
    except Rerun:
        st.session_state.caught = True
        raise
"""


def test_st_rerun_raises_the_adapters_rerun_and_a_run_is_not_history_navigation():
    at = AppTest.from_string(RERUN_SCRIPT).run(timeout=30)
    assert not at.exception
    assert at.session_state["caught"] is True
    assert at.session_state["runs"] == [False, False]  # the replaced run and the one that replaced it


def test_the_browser_still_reports_history_navigation_to_the_run():
    # The browser's Back/Forward sets ClientState.is_history_navigation; the session copies it onto the run's
    # context, which is where is_history_navigation() reads it.
    assert "is_history_navigation" in ClientState.DESCRIPTOR.fields_by_name
    fields = {f.name: f for f in dataclasses.fields(ScriptRunContext)}
    assert "is_history_navigation" in fields and fields["is_history_navigation"].default is False
    assert streamlit_adapter.Rerun.__name__ == "RerunException"
