"""Slider latency of the running app, release → new image, in Debian chromium (a measurement, not a test).

    python -m bench.browser_latency [MODELS_DIR] [--moves 10]

Starts ``streamlit run`` on a free port, opens Interpolate and presses arrow keys on two sliders: "Frame"
(the path panel's frame browser, which swaps decoded frames in the browser: app/path_panel.py) and "level 1
(finest)" (the panel's weight: a fragment rerun that re-decodes every frame in one inverse call).
Prints the median and 90th percentile, and the server-side compute of one weight change, as JSON. With
``--baseline`` it also times a trivial Streamlit app (one slider and one image in a fragment): the floor that
Streamlit and the browser set on this machine at its current load. ``--fresh`` moves every slider one way, so
that each weight is new to the app (no cached frames); by default moves alternate between two values.

Where the time goes (``phases_ms``, medians, page clock from the key press): the first websocket message of
the rerun (the server answered), the last one (the rerun's deltas and "finished"), and the ``load`` event of
the new picture (fetched and decoded). ``all_s`` is what a person waits for: until the script sees the new
picture, polled once per animation frame. ``browser``: the browser's main-thread work per move (Chromium's
own counters over moves that nothing of ours polls) and the websocket messages per move.

``--js-profile`` adds where the quiet moves' JavaScript goes (V8's profiler: self time per move by script and by
function), for Interpolate and, with ``--baseline``, the trivial app.

``--page-cost ROUNDS`` measures instead what a page's size costs a fragment rerun: the trivial app alone, with
12 rows of widgets (in columns or in a horizontal container) or of text outside its fragment, or with 10 more
elements inside it. ``--fragment-cost ROUNDS``: what the Interpolate fragment's own contents (the path panel, and
the panel with Streamlit sliders or downloads beside it) cost in the trivial app, without the rest of the page.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import cast

from playwright.sync_api import sync_playwright

from app.launch import ROOT
from bench.common import add_save_flag, machine_info, write_results
from bench.load_test import CHROMIUM, CHROMIUM_ARGS

# The browser tests' own page helpers and server: the benchmark waits for a picture exactly as they do.
from tests.e2e.browser import PICTURE_CHANGED_JS, image_with_caption, settle
from tests.e2e.server import streamlit_server

# Page-clock timestamps of key presses, websocket messages and image loads: where a move's time goes.
PHASES_INIT_JS = """(() => {
  const log = window.__nvpLatency = {keys: [], msgs: [], loads: []};
  addEventListener('keydown', () => log.keys.push(performance.now()), true);
  const Native = window.WebSocket;
  window.WebSocket = class extends Native {
    constructor(...args) { super(...args); this.addEventListener('message', () => log.msgs.push(performance.now())); }
  };
  // On document, not window: a load event never reaches the window from an element.
  document.addEventListener('load', e => { if (e.target instanceof HTMLImageElement)
    log.loads.push([performance.now(), e.target.getAttribute('src')]); }, true);
})()"""

# The rerun's messages are those before the picture loaded: the path panel's later settle rerun is not this move's.
PHASES_JS = """(src) => { const log = window.__nvpLatency, k = log.keys[log.keys.length - 1];
  const load = log.loads.find(([t, s]) => t >= k && s === src);
  const msgs = log.msgs.filter(t => t >= k && (!load || t <= load[0]));
  return [msgs.length ? msgs[0] - k : null, msgs.length ? msgs[msgs.length - 1] - k : null,
          load ? load[0] - k : null]; }"""

PHASES = ("first_message", "last_message", "picture_loaded")

PLAYER_CHANGED_JS = "([, src]) => document.querySelector('.nvp-player .nvp-frame').getAttribute('src') !== src"


def moves(
    page: object, slider: str, caption: str, n: int, player: bool = False, fresh: bool = False
) -> tuple[list[float], dict[str, float | None]]:
    """Seconds from each key press on ``slider`` to a new picture (the one captioned ``caption``: an ``st.image``
    or the path panel's strip; with ``player`` the panel's frame browser), and the median of each of
    ``PHASES`` in ms. ``fresh``: every press goes left (a value the app has not seen); otherwise they alternate."""
    out, phases = [], []
    for k in range(n):
        if player:
            img = page.locator(".nvp-player .nvp-frame")  # type: ignore[attr-defined]
            thumb = page.locator(f'.nvp-player input[type="range"][aria-label="{slider}"]')  # type: ignore[attr-defined]
        else:
            img = image_with_caption(page, caption)  # type: ignore[arg-type]
            thumb = page.locator(f'input[type="range"][aria-label="{slider}"]')  # type: ignore[attr-defined]
        before = img.get_attribute("src")
        thumb.focus()
        t0 = time.perf_counter()
        thumb.press("ArrowLeft" if fresh or k % 2 == 0 else "ArrowRight")
        changed = PLAYER_CHANGED_JS if player else PICTURE_CHANGED_JS
        page.wait_for_function(changed, arg=[caption, before], timeout=60_000)  # type: ignore[attr-defined]
        out.append(time.perf_counter() - t0)
        settle(page)  # type: ignore[arg-type]
        phases.append(page.evaluate(PHASES_JS, img.get_attribute("src")))  # type: ignore[attr-defined]
    medians = {
        name: round(statistics.median(got), 1) if (got := [p[i] for p in phases if p[i] is not None]) else None
        for i, name in enumerate(PHASES)
    }
    return out, medians


def quiet_moves(page: object, slider: str, n: int, fresh: bool = False) -> dict[str, float]:
    """The browser's main-thread work per move, measured apart from the timed moves (whose polling for the
    new picture is itself page work): ``n`` presses, each followed by 500 ms without any page script of ours,
    with Chromium's own counters (``Performance.getMetrics``: all tasks; of them JavaScript, style recalculation
    and layout; the rest is painting, image decoding and the browser's own work) and the
    websocket messages that arrived. Medians per move, in ms and messages."""
    cdp = page.context.new_cdp_session(page)  # type: ignore[attr-defined]
    cdp.send("Performance.enable")

    def counters() -> dict[str, float]:
        got = {m["name"]: m["value"] for m in cdp.send("Performance.getMetrics")["metrics"]}
        count = page.evaluate("() => window.__nvpLatency.msgs.length")  # type: ignore[attr-defined]
        return {
            "task": got["TaskDuration"],
            "script": got["ScriptDuration"],
            "style": got["RecalcStyleDuration"],
            "layout": got["LayoutDuration"],
            "messages": count,
        }

    per: list[dict[str, float]] = []
    for k in range(n):
        thumb = page.locator(f'input[type="range"][aria-label="{slider}"]').first  # type: ignore[attr-defined]
        thumb.focus()
        before = counters()
        thumb.press("ArrowLeft" if fresh or k % 2 == 0 else "ArrowRight")
        page.wait_for_timeout(500)  # type: ignore[attr-defined]
        after = counters()
        per.append({key: after[key] - before[key] for key in before})
    cdp.detach()
    return {
        "main_thread_ms": round(1000 * statistics.median(p["task"] for p in per), 1),
        "javascript_ms": round(1000 * statistics.median(p["script"] for p in per), 1),
        "style_ms": round(1000 * statistics.median(p["style"] for p in per), 1),
        "layout_ms": round(1000 * statistics.median(p["layout"] for p in per), 1),
        "messages": statistics.median(p["messages"] for p in per),
    }


def js_profile(page: object, slider: str, n: int, top: int = 15) -> dict[str, object]:
    """Where the page's JavaScript spends a move: V8's sampling profiler (100 µs) over ``n`` quiet moves as in
    :func:`quiet_moves`, self time per move in ms, by script file and by function (``(program)``: the browser's own
    work on the main thread — rendering, image decoding; ``(idle)`` left out)."""
    import collections

    cdp = page.context.new_cdp_session(page)  # type: ignore[attr-defined]
    cdp.send("Profiler.enable")
    cdp.send("Profiler.setSamplingInterval", {"interval": 100})
    cdp.send("Profiler.start")
    for k in range(n):
        thumb = page.locator(f'input[type="range"][aria-label="{slider}"]').first  # type: ignore[attr-defined]
        thumb.focus()
        thumb.press("ArrowLeft" if k % 2 == 0 else "ArrowRight")
        page.wait_for_timeout(500)  # type: ignore[attr-defined]
    profile = cdp.send("Profiler.stop")["profile"]
    cdp.detach()
    frames = {node["id"]: node["callFrame"] for node in profile["nodes"]}
    by_file: collections.Counter[str] = collections.Counter()
    by_function: collections.Counter[str] = collections.Counter()
    for sample, dt in zip(profile["samples"], profile["timeDeltas"], strict=True):
        frame = frames[sample]
        script = frame["url"].rsplit("/", 1)[-1] or frame["functionName"]
        by_file[script] += dt
        by_function[f"{frame['functionName'] or '(anonymous)'} [{script}:{frame['lineNumber']}]"] += dt
    per_move = lambda c: [(k, round(v / 1000 / n, 2)) for k, v in c.most_common() if k != "(idle)"][:top]  # noqa: E731
    return {"by_file_ms": per_move(by_file), "by_function_ms": per_move(by_function)}


def server_compute(models_dir: Path) -> dict[str, object]:
    """Median seconds of the work behind one level-weight change (interpolate + one batched decode)."""
    import torch

    from app import compute
    from app.models import gallery_path, list_checkpoints, load_gallery
    from nvp_core import load_model
    from nvp_core.latent import interpolate

    torch.set_num_threads(1)
    ckpt = list_checkpoints(models_dir)[0]
    model, _ = load_model(ckpt)
    gallery = gallery_path(ckpt)
    assert gallery is not None, f"{ckpt} has no gallery beside it"
    g = load_gallery(gallery, model.config.in_channels, model.config.image_size)
    za, zb = compute.encode(model, g.images[:1]), compute.encode(model, g.images[1:2])
    times = []
    for _ in range(8):
        t0 = time.perf_counter()
        compute.decode(model, interpolate(za, zb, 9, level_weights=[0.5] + [1.0] * (model.num_levels - 1)))
        times.append(time.perf_counter() - t0)
    return {"model": ckpt.name, "decode_9_frames_s": statistics.median(times[1:])}


BASELINE_APP = """
import numpy as np, streamlit as st
from PIL import Image
st.title("baseline")
@st.fragment
def f():
    k = st.slider("Frame", 0, 100, 50)
    img = Image.fromarray(np.full((28, 28), k * 2, np.uint8)).resize((200, 200))
    st.image(img, caption=f"frame {k}", output_format="PNG")
f()
"""


# What a page's size costs a fragment rerun (``--page-cost``): the trivial app with 12 rows of widgets, layout
# blocks or text outside its fragment, or 10 more elements inside it.
PAGE_COST_ROWS = {
    "trivial": "",
    "12 rows: columns(2) of selectbox + number_input": """for i in range(12):
    c1, c2 = st.columns(2)
    c1.selectbox(f"sel {i}", ["a", "b"], key=f"s{i}")
    c2.number_input(f"num {i}", 0, 10, 1, key=f"n{i}")""",
    "12 rows: horizontal container of selectbox + number_input": """for i in range(12):
    with st.container(horizontal=True):
        st.selectbox(f"sel {i}", ["a", "b"], key=f"s{i}")
        st.number_input(f"num {i}", 0, 10, 1, key=f"n{i}")""",
    "12 rows: two markdown texts": """for i in range(12):
    st.markdown(f"text {i}")
    st.markdown(f"more text {i}")""",
    "10 captions inside the fragment": "EXTRA = 10",
}


# What Interpolate's fragment contents cost on an otherwise trivial page (``--fragment-cost``): the path panel
# (app/path_panel.py, one components-v2 element: settings, strip, frame browser, loop; 9 synthetic frames), driven
# by its level-1 weight; + 3 Streamlit sliders in the fragment; + 3 download buttons in it. Each entry: the app's
# source, the slider the moves press and the caption of the picture that must change.
_PANEL_APP = """
import numpy as np, streamlit as st
from app import compute, path_panel
st.title("baseline")
class Model:
    num_levels = 3
class Ctx:  # what path_panel needs of app.state.Ctx
    model = Model()
    def k(self, name): return "h|" + name
    def s(self, name): return self.k(name)
ctx = Ctx()
path_panel.read(ctx)
@st.fragment
def f():
    settings = path_panel.read(ctx, link=False)
    k = int(round(100 * settings.weights[0]))
    frames = np.stack([np.full((1, 28, 28), (2 * k + 20 * j) % 256, np.uint8) for j in range(settings.steps)])
    strip = (compute.grid(frames, settings.steps), f"A → B, weight {k}", 600)
    names = ["level 1 (finest)", "level 2", "level 3 (coarsest)"]
    path_panel.show(ctx, path_panel.payload(ctx, settings, frames, strip, {"all levels": [1.0] * 3}, names))
EXTRA
f()
"""
_SLIDERS = """    with st.container(horizontal=True):
        for j in range(3):
            st.slider(f"other {j}", 0.0, 1.0, 1.0, key=f"lv{j}")
"""
_DOWNLOADS = """    with st.container(horizontal=True):
        for j in range(3):
            st.download_button(f"file {j}", data=compute.png_bytes(frames[0]) + bytes([k]), file_name=f"f{j}.png")
"""
FRAGMENT_COST: dict[str, tuple[str, str, str]] = {
    "trivial (st.image)": (BASELINE_APP, "Frame", "frame "),
    "path panel": (_PANEL_APP.replace("EXTRA\n", ""), "level 1 (finest)", "A → B"),
    "path panel + 3 sliders": (_PANEL_APP.replace("EXTRA\n", _SLIDERS), "level 1 (finest)", "A → B"),
    "path panel + 3 downloads": (_PANEL_APP.replace("EXTRA\n", _DOWNLOADS), "level 1 (finest)", "A → B"),
}


def page_cost_app(rows: str) -> str:
    """The baseline app with ``rows`` before its fragment (or ``EXTRA = n`` captions inside it)."""
    extra = int(rows.split("=")[1]) if rows.startswith("EXTRA") else 0
    head = "" if extra else rows
    inner = f"    for j in range({extra}):\n        st.caption(f'extra {{j}} {{k}}')\n" if extra else ""
    return BASELINE_APP.replace("@st.fragment", head + "\n@st.fragment").replace(
        "    img = Image", inner + "    img = Image"
    )


def summary(ts: list[float], phases: dict[str, float | None]) -> dict[str, object]:
    return {
        "median_s": statistics.median(ts),
        "p90_s": sorted(ts)[int(0.9 * (len(ts) - 1))],
        "all_s": [round(t, 3) for t in ts],
        "phases_ms": phases,
    }


def baseline(
    browser: object,
    n: int,
    fresh: bool,
    source: str = BASELINE_APP,
    slider: str = "Frame",
    caption: str = "frame ",
    profile: bool = False,
) -> dict[str, object]:
    """The trivial app's (or ``source``'s) ``slider``: timed moves until the picture captioned ``caption`` changes,
    then the main thread's work per move (and with ``profile`` its JavaScript profile, :func:`js_profile`)."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        app = Path(tmp) / "baseline.py"
        app.write_text(source)
        with streamlit_server(app=app) as url:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})  # type: ignore[attr-defined]
            page.add_init_script(PHASES_INIT_JS)
            page.goto(url)
            settle(page)
            moves(page, slider, caption, 2)
            result = summary(*moves(page, slider, caption, n, fresh=fresh))
            result["browser"] = quiet_moves(page, slider, n, fresh)
            if profile:
                result["js_profile"] = js_profile(page, slider, n)
            page.close()
    return result


def page_cost(
    browser: object, n: int, rounds: int, apps: dict[str, tuple[str, str, str]]
) -> dict[str, list[dict[str, object]]]:
    """Each of ``apps`` (name: source, slider, caption) in turn, ``rounds`` times (so that load drifts hit them
    alike)."""
    out: dict[str, list[dict[str, object]]] = {name: [] for name in apps}
    for r in range(rounds):
        for name, (source, slider, caption) in apps.items():
            res = baseline(browser, n, False, source, slider, caption)
            out[name].append(res)
            b, t = cast(dict[str, float], res["browser"]), cast(float, res["median_s"])
            print(f"round {r + 1}: {name:58s} {1000 * t:6.1f} ms, main thread {b['main_thread_ms']} "
                  f"ms, JS {b['javascript_ms']} ms, {b['messages']} messages", file=sys.stderr, flush=True)  # fmt: skip
    return out


def _report(name: str, result: dict[str, object], save: bool) -> None:
    print(json.dumps(result, indent=1))
    print(f"wrote {write_results(name, result, save)}", file=sys.stderr)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models_dir", nargs="?", default=str(ROOT / "models"))
    ap.add_argument("--moves", type=int, default=10)
    ap.add_argument("--baseline", action="store_true", help="also time a trivial Streamlit app")
    ap.add_argument("--fresh", action="store_true", help="move each slider one way: every value is new")
    ap.add_argument("--page-cost", type=int, default=0, metavar="ROUNDS", help="instead: what page size costs")
    ap.add_argument("--fragment-cost", type=int, default=0, metavar="ROUNDS",
                    help="instead: what the Interpolate fragment's contents cost on a trivial page")  # fmt: skip
    ap.add_argument("--js-profile", action="store_true", help="also profile the quiet moves' JavaScript")
    add_save_flag(ap)
    args = ap.parse_args()
    models_dir = Path(args.models_dir)
    result: dict[str, object] = {"machine": machine_info(), "load_average": os.getloadavg(), "fresh": args.fresh}
    if args.page_cost or args.fragment_cost:
        apps = (
            {name: (page_cost_app(rows), "Frame", "frame ") for name, rows in PAGE_COST_ROWS.items()}
            if args.page_cost
            else FRAGMENT_COST
        )
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
            key = "page_cost" if args.page_cost else "fragment_cost"
            result[key] = page_cost(browser, args.moves, args.page_cost or args.fragment_cost, apps)
            browser.close()
        result["load_average_end"] = os.getloadavg()
        _report("browser-page-cost" if args.page_cost else "browser-fragment-cost", result, args.save)
        return
    result["server"] = server_compute(models_dir)
    env = {"NVP_MODELS_DIR": str(models_dir), "NVP_APP_GALLERY_MAX": "200"}
    with streamlit_server(env) as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.add_init_script(PHASES_INIT_JS)
        page.goto(f"{url}/interpolate")
        settle(page)
        moves(page, "Frame", "frame ", 2, player=True)  # warm-up
        for name, slider, caption in (("frame", "Frame", "frame "), ("level_weight", "level 1 (finest)", "A → B")):
            result[name] = summary(
                *moves(page, slider, caption, args.moves, player=name == "frame", fresh=args.fresh and name != "frame")
            )
        # The panel's loop stops (reduced motion), so that its animation is not counted as move work.
        page.emulate_media(reduced_motion="reduce")
        result["level_weight"]["browser"] = quiet_moves(page, "level 1 (finest)", args.moves, args.fresh)  # type: ignore[index]
        if args.js_profile:
            result["level_weight"]["js_profile"] = js_profile(page, "level 1 (finest)", args.moves)  # type: ignore[index]
        if args.baseline:
            result["baseline_trivial_app"] = baseline(browser, args.moves, args.fresh, profile=args.js_profile)
        browser.close()
    result["load_average_end"] = os.getloadavg()
    _report("browser-latency", result, args.save)


if __name__ == "__main__":
    main()
