"""The two things the link needs that Streamlit's public API does not offer, in one place.

``tests/test_streamlit_adapter.py`` fails when a Streamlit upgrade moves or changes them; everything else in the
app uses the public API only.
"""

from __future__ import annotations

from streamlit.runtime.scriptrunner import RerunException, get_script_run_ctx

#: Raised through a run that a newer one replaces (``st.rerun``, a click, the browser's Back): that run ends
#: without finishing, and must not write its settings to the link.
Rerun = RerunException


def is_history_navigation() -> bool:
    """Whether this run was asked for by the browser's Back or Forward button (the browser then sends the query
    string of the history entry the reader went to)."""
    run = get_script_run_ctx()
    return bool(run is not None and getattr(run, "is_history_navigation", False))
