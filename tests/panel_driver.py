"""How a browser drives Interpolate's path panel (app/path_panel.py), for AppTest and for the protocol-level
class load test: the trigger it sends, and an AppTest run after a change in the panel."""

from __future__ import annotations

import json
from typing import Any

PANEL_TRIGGER = "settings"


def panel_trigger(element_id: str, settings: dict[str, object], event: str = PANEL_TRIGGER) -> tuple[str, str]:
    """The widget id and JSON value with which a browser sends the path panel's ``settings`` (or, with
    ``event="settled"``, says that its controls are still): a components-v2 trigger, one per component, that
    carries a list of ``{event, value}``."""
    from streamlit.runtime.state.session_state import STREAMLIT_INTERNAL_KEY_PREFIX

    wid = f"{STREAMLIT_INTERNAL_KEY_PREFIX}_{element_id}__events"
    return wid, json.dumps([{"event": event, "value": settings}])


def panel_change(at: Any, settle: bool = True, **changes: object) -> Any:
    """Runs the app as after a change in the path panel in the browser: the panel sends every setting (with
    ``changes``), numbered, as its trigger, and with ``settle`` (the controls then stay still, as after most
    changes) its ``settled`` trigger in a second run, which puts the settings in the link. AppTest has no element
    for a components-v2 component, so the trigger joins the other widgets' states here (AppTest's own
    ``_tree``/``_run``, what ``at.run()`` does)."""
    el = at.get("bidi_component")[0]
    data = json.loads(el.proto.json)
    at = _trigger(at, *panel_trigger(el.proto.id, {**data["settings"], "seq": data["seq"] + 1, **changes}))
    if settle:
        el = at.get("bidi_component")[0]
        at = _trigger(at, *panel_trigger(el.proto.id, {"seq": json.loads(el.proto.json)["seq"]}, "settled"))
    return at


def _trigger(at: Any, wid: str, value: str) -> Any:
    states = at._tree.get_widget_states()
    w = states.widgets.add()
    w.id, w.json_trigger_value = wid, value
    return at._run(states)
