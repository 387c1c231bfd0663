"""A class on one server: N sessions that speak Streamlit's own websocket protocol (the ``BackMsg`` /
``ForwardMsg`` protobufs in ``streamlit.proto``, as the browser does) against one ``streamlit run`` of the
app, each replaying the browser load test's operations (``bench/load_test.py``) at a person's pace.

No browser draws anything, so thirty sessions fit beside the server on two cores; the 8-browser load test
stays the end-to-end check. Each session opens ``/_stcore/stream``, asks for a run of the app as a browser
does, then per round: Encode page, type a new gallery index; Interpolate page, move the level-1 weight
slider one step (and, as the path panel's script does once its controls are still, send its ``settled``
trigger: a second rerun during the pause, not counted as an interaction, whose CPU counts); Sample page, type a
new seed (each preceded by a pause of ``think`` x U(0.5, 1.5) s and a
page change through the navigation, which is a rerun of its own). The widget changes are sent as the browser
sends them: a ``rerun_script`` with the widget's new state, and the fragment's id when the widget lives in an
``st.fragment``. The pictures each run shows are fetched from the server (``/media/...``) as a browser would.

An operation counts as a success only when the run finished successfully, no exception element arrived,
the page's title arrived with the page change, the picture whose caption names the new result (gallery
index, weights, seed) arrived, and every picture of the run was fetched as a valid PNG/GIF.

    python -m bench.class_load                              # 30 sessions x 6 rounds at think 3 s
    python -m bench.class_load --sessions 1 --rounds 1 --think 0
    python -m bench.class_load --sessions 10 --trainers 30  # beside 30 Playground sessions that train live

``--trainers N`` adds N sessions that open the Playground, press Train and rerun its live fragment on the timer the
server asks for (as the browser does), fetching every picture, for as long as the class runs: what a class
training at once does to the other pages' response time.

Reports successes and failures, the server's response time (rerun request sent -> "script finished"
received) p50/p95 per operation and per page change, the server process's CPU seconds per interaction
(utime + stime from /proc/<pid>/stat over the rounds, divided by the reruns asked for) and per operation
(a page change and a widget change), its memory, the load average and the CPU; writes
its report to ``bench/results/local/``
(``--save``: the committed ``bench/results/<name>-<cpu kind>.json``) and prints a table.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import random
import re
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from app.launch import APP, serve
from app.path_panel import pictures
from bench import serving
from bench.common import add_save_flag, machine_info, table, write_results
from bench.serving import OPERATIONS, percentile
from tests.panel_driver import panel_trigger  # the tests' own driver: a session sends what they send

CONTEXT = {"timezone": "UTC", "timezone_offset": 0, "locale": "en-US", "is_embedded": False, "color_scheme": "light"}
WARM_TIMEOUT = 600.0
FINISHED_OK = ("FINISHED_SUCCESSFULLY", "FINISHED_FRAGMENT_RUN_SUCCESSFULLY")


@dataclass
class Run:
    """What the server sent for one rerun request."""

    seconds: float = float("nan")  # request sent -> "script finished" received
    status: str = ""
    images: list[tuple[str, str]] = field(default_factory=list)  # (url, caption)
    headings: list[str] = field(default_factory=list)
    exceptions: list[str] = field(default_factory=list)
    widgets: dict[str, tuple[str, str, str]] = field(default_factory=dict)  # label -> (kind, id, fragment id)
    panel: tuple[str, str, dict[str, Any]] | None = None  # Interpolate's path panel: (id, fragment id, its data)
    captions: list[str] = field(default_factory=list)  # st.caption / markdown bodies (the Playground's status line)
    bytes_received: int = 0


class Client:
    """One Streamlit session over its websocket: sends rerun requests, reads the messages of each run."""

    def __init__(self, url: str, timeout: float) -> None:
        self.url = url
        self.timeout = timeout
        self.ws: Any = None
        self.pages: dict[str, str] = {}  # page name -> page script hash
        self.query_string = ""
        self.widgets: dict[str, tuple[str, str, str]] = {}  # this page's widgets: label -> (kind, id, fragment)
        self.panel: tuple[str, str, dict[str, Any]] | None = None  # this page's path panel, if it has one
        self.fetched: set[str] = set()  # media URLs already fetched (a browser caches them)
        self.current_page = ""
        self.auto_rerun: tuple[float, str] | None = None  # (interval s, fragment id): a run_every fragment's timer

    async def open(self) -> Run:
        from websockets.asyncio.client import connect

        ws_url = self.url.replace("http://", "ws://", 1) + "/_stcore/stream"
        protocols: Any = ["streamlit"]  # websockets types these as its own str subtypes
        self.ws = await connect(ws_url, subprotocols=protocols, origin=cast(Any, self.url), max_size=None)
        return await self.rerun("", [])

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()

    async def rerun(
        self, page_hash: str, widget_states: list[Any], fragment_id: str = "", query: str = "", auto: bool = False
    ) -> Run:
        from streamlit.proto.BackMsg_pb2 import BackMsg
        from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

        msg = BackMsg()
        rr = msg.rerun_script
        rr.query_string = query
        rr.widget_states.SetInParent()
        rr.widget_states.widgets.extend(widget_states)
        rr.page_script_hash = page_hash
        if fragment_id:
            rr.fragment_id = fragment_id
        rr.is_auto_rerun = auto
        for k, v in CONTEXT.items():
            setattr(rr.context_info, k, v)
        rr.context_info.url = self.url + "/"
        run = Run()
        t0 = time.perf_counter()
        await self.ws.send(msg.SerializeToString())
        while True:
            try:
                data = await asyncio.wait_for(self.ws.recv(), self.timeout)
            except TimeoutError:
                raise TimeoutError(f"no 'script finished' within {self.timeout:.0f} s") from None
            run.bytes_received += len(data)
            fm = ForwardMsg.FromString(data)
            kind = fm.WhichOneof("type")
            if kind == "delta":
                self._element(fm.delta, run)
            elif kind == "navigation":
                self.pages = {p.page_name: p.page_script_hash for p in fm.navigation.app_pages}
            elif kind == "page_info_changed":
                self.query_string = fm.page_info_changed.query_string
            elif kind == "auto_rerun":  # the browser then reruns that fragment on a timer
                self.auto_rerun = (fm.auto_rerun.interval, fm.auto_rerun.fragment_id)
            elif kind == "stop_auto_rerun":
                self.auto_rerun = None
            elif kind == "script_finished":
                run.status = ForwardMsg.ScriptFinishedStatus.Name(fm.script_finished)
                if run.status == "FINISHED_EARLY_FOR_RERUN":  # the script asked for a new run: it follows
                    continue
                run.seconds = time.perf_counter() - t0
                break
        if not fragment_id:
            self.widgets, self.panel = {}, None
        self.widgets.update(run.widgets)
        self.panel = run.panel or self.panel
        return run

    @staticmethod
    def _element(delta: Any, run: Run) -> None:
        if delta.WhichOneof("type") != "new_element":
            return
        el = delta.new_element
        kind = el.WhichOneof("type")
        if kind == "imgs":
            run.images += [(img.url, img.caption) for img in el.imgs.imgs]
        elif kind == "bidi_component":
            run.images += pictures(el.bidi_component.json)
            run.panel = (el.bidi_component.id, delta.fragment_id, json.loads(el.bidi_component.json))
        elif kind == "heading":
            run.headings.append(el.heading.body)
        elif kind == "exception":
            run.exceptions.append(f"{el.exception.type}: {el.exception.message}"[:300])
        elif kind in ("number_input", "slider", "button"):
            w = getattr(el, kind)
            run.widgets[w.label] = (kind, w.id, delta.fragment_id)
        elif kind == "markdown":
            run.captions.append(el.markdown.body)

    def widget(self, label_prefix: str) -> tuple[str, str, str]:
        found = [w for label, w in self.widgets.items() if label.startswith(label_prefix)]
        if not found:
            raise LookupError(f"no widget labelled {label_prefix!r} on the page (have {sorted(self.widgets)})")
        return found[0]

    async def set_widget(self, label_prefix: str, value: float) -> Run:
        """Sends the widget's new value as the browser does (in its fragment when it lives in one)."""
        from streamlit.proto.WidgetStates_pb2 import WidgetState

        kind, wid, fragment = self.widget(label_prefix)
        state = WidgetState(id=wid)
        if kind == "button":
            state.trigger_value = bool(value)
        elif kind == "number_input":
            state.int_value = int(value)
        else:
            state.double_array_value.data.append(float(value))
        page = self.pages.get(self.current_page, "")
        return await self.rerun(page, [state], fragment, self.query_string)

    async def set_weight(self, level: int, value: float) -> Run:
        """Moves one level's weight in Interpolate's path panel as its script in the browser does: every setting,
        numbered, as the component's trigger (app/path_panel.js), in the panel's fragment."""
        from streamlit.proto.WidgetStates_pb2 import WidgetState

        if self.panel is None:
            raise LookupError("no path panel on the page")
        element_id, fragment, data = self.panel
        settings = dict(data["settings"], seq=data["seq"] + 1)
        settings["weights"] = serving.weights_with(settings["weights"], level, value)
        wid, value_json = panel_trigger(element_id, settings)
        page = self.pages.get(self.current_page, "")
        return await self.rerun(page, [WidgetState(id=wid, json_trigger_value=value_json)], fragment, self.query_string)

    async def settle_panel(self) -> Run:
        """What the path panel's script sends when its controls have been still for ``SETTLE_MS`` after a change:
        the ``settled`` trigger, whose rerun of the panel's fragment puts the settings in the page's link."""
        from streamlit.proto.WidgetStates_pb2 import WidgetState

        if self.panel is None:
            raise LookupError("no path panel on the page")
        element_id, fragment, data = self.panel
        wid, value_json = panel_trigger(element_id, {"seq": data["seq"]}, "settled")
        page = self.pages.get(self.current_page, "")
        return await self.rerun(page, [WidgetState(id=wid, json_trigger_value=value_json)], fragment, self.query_string)

    async def goto(self, title: str) -> Run:
        """A page change through the navigation: a rerun of that page (the browser sends no query string)."""
        self.current_page = title
        return await self.rerun(self.pages[title], [])

    async def fetch_media(self, run: Run) -> None:
        """Fetches the run's pictures a browser has not seen yet, and checks each is a PNG or GIF."""
        for url, caption in run.images:
            if url in self.fetched:
                continue
            if url.startswith("data:"):  # came inside the message: nothing to fetch, but check it all the same
                data = base64.b64decode(url.split(",", 1)[1])
            else:
                full = url if "://" in url else self.url + "/" + url.lstrip("/")
                data = await asyncio.to_thread(_get, full, self.timeout)
            if not data.startswith((b"\x89PNG\r\n\x1a\n", b"GIF8")):
                raise ValueError(f"picture {caption[:60]!r} is not a PNG or GIF ({data[:8]!r})")
            self.fetched.add(url)


def _get(url: str, timeout: float) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return bytes(r.read())


def check(run: Run, what: str, caption: tuple[str, str] | None = None, title: str = "") -> None:
    """Raises unless ``run`` is a real success: finished, no exception, the title or the expected picture."""
    if run.status not in FINISHED_OK:
        raise RuntimeError(f"{what}: script ended {run.status or 'without finishing'}")
    if run.exceptions:
        raise RuntimeError(f"{what}: exception on the page: {run.exceptions[0]}")
    if title and title not in run.headings:
        raise RuntimeError(f"{what}: the page's title {title!r} did not arrive (headings {run.headings[:3]})")
    if caption is not None:
        prefix, text = caption
        if not any(c.startswith(prefix) and text in c for _, c in run.images):
            raise RuntimeError(f"{what}: no picture captioned {prefix!r}...{text!r} arrived")


# ------------------------------------------------------------------------------------------- sessions


@dataclass
class SessionResult:
    ok: int = 0
    failed: int = 0
    reruns: int = 0
    rounds: int = 0
    server: dict[str, list[float]] = field(default_factory=lambda: {op: [] for op in OPERATIONS})
    page_change: list[float] = field(default_factory=list)
    by_round: list[tuple[int, float]] = field(default_factory=list)  # (round, widget change's response)
    errors: list[str] = field(default_factory=list)


async def operation(client: Client, op: str, r: int, session: int, gallery_n: int) -> tuple[float, float]:
    """Replays one operation; returns the server's response time of its widget change, and the seconds of the
    person's next pause that the operation already spent (the path panel's settle step)."""
    if op == "encode":
        run = await client.set_widget(serving.GALLERY_LABEL, serving.encode_index(r, session, gallery_n))
    elif op == "interpolate":
        run = await client.set_weight(1, 0.95 if serving.weight_down(r) else 1.0)
    else:
        run = await client.set_widget(serving.SEED_LABEL, serving.sample_seed(r, session))
    check(run, op, serving.expected_caption(op, r, session, gallery_n))
    await client.fetch_media(run)
    if op != "interpolate":
        return run.seconds, 0.0
    # The browser's panel then waits until its controls are still and asks for the link: a second, cheap rerun
    # during the person's pause, whose CPU counts in the class's figure (it is not a rerun the person asked for).
    t0 = time.monotonic()
    assert client.panel is not None  # set_weight found it
    await asyncio.sleep(client.panel[2]["settle_ms"] / 1000)  # the data tells the browser's script how long
    check(await client.settle_panel(), "settle", serving.expected_caption(op, r, session, gallery_n))
    return run.seconds, time.monotonic() - t0


async def run_session(
    url: str, session: int, rounds: int, gallery_n: int, think: float, start_delay: float, timeout: float,
    opened: asyncio.Event, started: list[int], n_sessions: int, deadline: float = float("inf"),
) -> SessionResult:  # fmt: skip
    res = SessionResult()
    pauses = random.Random(session)  # think times differ between sessions but not between runs
    client = Client(url, timeout)
    await asyncio.sleep(start_delay)
    try:
        try:
            first = await client.open()
            res.reruns += 1
            check(first, "open", title="Encode")
            await client.fetch_media(first)
        except Exception as e:
            res.errors.append(f"session {session} open: {type(e).__name__}: {str(e)[:300]}")
            res.failed += 1
            return res
        finally:
            started.append(session)
            if len(started) == n_sessions:
                opened.set()
        await opened.wait()  # the rounds start when the whole class is in
        for r in range(rounds):
            if r > 0 and time.monotonic() > deadline:
                break  # out of time: report the rounds done (the report says how many)
            res.rounds = r + 1
            spent = 0.0
            for op in OPERATIONS:
                if think:  # a person looks at the result before the next action
                    await asyncio.sleep(max(0.0, think * pauses.uniform(0.5, 1.5) - spent))
                spent = 0.0
                try:
                    res.reruns += 1
                    nav = await client.goto(serving.PAGE_TITLES[op])
                    check(nav, f"page {serving.PAGE_TITLES[op]}", title=serving.PAGE_TITLES[op])
                    await client.fetch_media(nav)
                    res.page_change.append(nav.seconds)
                    res.reruns += 1
                    seconds, spent = await operation(client, op, r, session, gallery_n)
                    res.server[op].append(seconds)
                    res.by_round.append((r, seconds))
                    res.ok += 1
                except Exception as e:  # a failed operation is counted and the session goes on
                    res.failed += 1
                    res.errors.append(f"session {session} round {r} {op}: {type(e).__name__}: {str(e)[:300]}")
    finally:
        await client.close()
    return res


@dataclass
class TrainerResult:
    """One Playground session that pressed Train and kept its live updates going."""

    updates: list[float] = field(default_factory=list)  # server response of each live update (a fragment rerun)
    trained: int = 0  # updates that ran a training chunk
    waited: int = 0  # updates that found no free training slot
    steps: int = 0  # training steps the model reached
    failed: int = 0
    errors: list[str] = field(default_factory=list)


STEP = re.compile(r"step (\d+) ·")


async def run_trainer(url: str, k: int, timeout: float, start_delay: float, stop: asyncio.Event) -> TrainerResult:
    """Opens the Playground, presses Train, then reruns its live fragment on the timer the server asked for (as the
    browser does) until ``stop``; every picture of every update is fetched."""
    res = TrainerResult()
    client = Client(url, timeout)
    await asyncio.sleep(start_delay)
    try:
        await client.open()
        check(await client.goto("Playground"), "page Playground", title="Playground")
        check(await client.set_widget("Train", 1), "Train")
        page = client.pages.get(client.current_page, "")
        while not stop.is_set():
            if client.auto_rerun is None:
                raise RuntimeError("the Playground stopped its live updates")
            interval, fragment = client.auto_rerun
            t0 = time.monotonic()
            run = await client.rerun(page, [], fragment, client.query_string, auto=True)
            check(run, "live update")
            await client.fetch_media(run)
            res.updates.append(run.seconds)
            status = next((c for c in run.captions if STEP.match(c)), "")
            if "waiting for a free training slot" in status:
                res.waited += 1
            else:
                res.trained += 1
            if m := STEP.match(status):
                res.steps = int(m.group(1))
            await asyncio.sleep(max(0.0, interval - (time.monotonic() - t0)))
    except Exception as e:
        res.failed += 1
        res.errors.append(f"trainer {k}: {type(e).__name__}: {str(e)[:300]}")
    finally:
        await client.close()
    return res


def _trainers_report(results: list[TrainerResult]) -> dict[str, Any]:
    updates = [t for r in results for t in r.updates]
    steps = sorted(r.steps for r in results)
    return {
        "sessions": len(results),
        "live_updates": len(updates),
        "update_p50_s": percentile(updates, 0.5),
        "update_p95_s": percentile(updates, 0.95),
        "updates_that_trained": sum(r.trained for r in results),
        "updates_waiting_for_a_slot": sum(r.waited for r in results),
        "steps_min_median_max": [steps[0], steps[len(steps) // 2], steps[-1]] if steps else [],
        "failed": sum(r.failed for r in results),
        "errors": [e for r in results for e in r.errors][:10],
    }


def _times(ts: list[float]) -> dict[str, Any]:
    return {"n": len(ts), "server_p50_s": percentile(ts, 0.5), "server_p95_s": percentile(ts, 0.95),
            "server_max_s": max(ts, default=float("nan"))}  # fmt: skip


async def drive(
    url: str, pid: int, sessions: int, rounds: int, gallery_n: int, think: float, ramp: float, timeout: float,
    max_minutes: float = 0.0, trainers: int = 0,
) -> dict[str, Any]:  # fmt: skip
    opened = asyncio.Event()
    started: list[int] = []
    peak = {"rss": serving.rss_mb(pid)}
    marks: dict[str, Any] = {}

    async def watch() -> None:
        while True:
            peak["rss"] = max(peak["rss"], serving.rss_mb(pid))
            await asyncio.sleep(0.5)

    async def on_open() -> None:
        await opened.wait()
        marks["open"] = (time.perf_counter(), serving.process_cpu_s(pid), serving.machine_busy_s(), serving.rss_mb(pid))

    # The server starts cold (loading the model, measuring its fast path, encoding the gallery): a first visit
    # warms it, as the teacher's would, before the class arrives.
    warm = Client(url, max(timeout, WARM_TIMEOUT))
    try:
        check(await warm.open(), "warm-up", title="Encode")
    finally:
        await warm.close()
    watcher = asyncio.create_task(watch())
    marker = asyncio.create_task(on_open())
    t0, cpu0, busy0 = time.perf_counter(), serving.process_cpu_s(pid), serving.machine_busy_s()
    deadline = time.monotonic() + 60 * max_minutes if max_minutes else float("inf")
    load_start = [round(v, 2) for v in os.getloadavg()]
    stop = asyncio.Event()  # the Playground sessions train, each arriving within the ramp, until the class is done
    training = [asyncio.create_task(run_trainer(url, k, timeout, ramp * k / max(1, trainers), stop))
                for k in range(trainers)]  # fmt: skip
    results = await asyncio.gather(*[
        run_session(url, s, rounds, gallery_n, think, ramp * s / max(1, sessions), timeout, opened, started, sessions,
                    deadline)
        for s in range(sessions)
    ])  # fmt: skip
    t1, cpu1, busy1 = time.perf_counter(), serving.process_cpu_s(pid), serving.machine_busy_s()
    stop.set()
    trained = await asyncio.gather(*training)
    watcher.cancel()
    await marker
    ta, cpua, busya, rss_open = marks["open"]
    reruns_rounds = sum(r.reruns for r in results) - sessions  # the first run of each session is the opening
    ops = sum(r.ok + r.failed for r in results) - sum(1 for r in results if r.rounds == 0)
    done = [r.rounds for r in results]
    server = {op: [t for r in results for t in r.server[op]] for op in OPERATIONS}
    every = [t for ts in server.values() for t in ts]
    pages = [t for r in results for t in r.page_change]
    per_op = {op: _times(ts) for op, ts in server.items()}
    per_op["page change"] = _times(pages)
    rounds_cpu = cpu1 - cpua
    return {
        "sessions": sessions,
        "rounds": rounds,
        "think_s": think,
        "ramp_s": ramp,
        "operations_expected": sessions * rounds * len(OPERATIONS),
        "rounds_completed": {"min": min(done), "max": max(done)},
        "succeeded": sum(r.ok for r in results),
        "failed": sum(r.failed for r in results),
        "errors": [e for r in results for e in r.errors][:20],
        "server_response_p50_s": percentile(every, 0.5),
        "server_response_p95_s": percentile(every, 0.95),
        "server_response_max_s": max(every, default=float("nan")),
        "page_change_p95_s": percentile(pages, 0.95),
        # The first round starts when the whole class is in: its burst shows apart from the paced rounds after it.
        "server_response_p95_s_by_round": [
            percentile([t for r in results for k, t in r.by_round if k == i], 0.95) for i in range(max(done, default=0))
        ],
        "per_operation": per_op,
        "wall_s": {"opening": ta - t0, "rounds": t1 - ta},
        "reruns_in_rounds": reruns_rounds,
        "cpu_s": {
            "server_opening": cpua - cpu0,
            "server_rounds": rounds_cpu,
            # An interaction is one rerun request: a page change or a widget change.
            "server_per_interaction": rounds_cpu / max(1, reruns_rounds),
            # An operation is what the browser load test counts: a page change and then the widget change.
            "server_per_operation": rounds_cpu / max(1, ops),
            "server_share_of_one_core_in_rounds": rounds_cpu / max(1e-9, t1 - ta),
            "rest_of_machine_rounds": (busy1 - busya) - rounds_cpu,
            "rest_of_machine_opening": (busya - busy0) - (cpua - cpu0),
        },
        "server_rss_mb": {"after_opening": rss_open, "end": serving.rss_mb(pid), "peak": peak["rss"]},
        "load_average_at_start": load_start,
        "trainers": _trainers_report(trained) if trainers else None,
    }


HOOKS = Path(__file__).resolve().parent / "hooks"  # the server-side rerun timing (bench/hooks/sitecustomize.py)


def run(
    sessions: int, rounds: int, think: float, ramp: float, models_dir: Path | None, timeout: float, log: Path,
    max_minutes: float = 0.0, app: Path = APP, trainers: int = 0, rerun_timing: bool = False,
) -> dict[str, Any]:  # fmt: skip
    """Starts the server, drives the sessions, stops the server; returns the report."""
    with tempfile.TemporaryDirectory() as tmp:
        models_dir, first, gallery_n = serving.models_under_test(models_dir, Path(tmp))
        log.parent.mkdir(parents=True, exist_ok=True)
        env = {"NVP_MODELS_DIR": str(models_dir)}
        timing = Path(tmp) / "rerun-timing.json"
        if rerun_timing:
            env |= {"NVP_RERUN_TIMING": str(timing), "PYTHONPATH": str(HOOKS)}
        with open(log, "w") as out, serve(env, out, app=app) as (url, proc):
            report = asyncio.run(
                drive(url, proc.pid, sessions, rounds, gallery_n, think, ramp, timeout, max_minutes, trainers)
            )
        if rerun_timing:
            report["rerun_timing_ms"] = _rerun_timing(timing)
    report["model"] = str(first)
    report["app"] = str(app)
    report["load_average_at_end"] = [round(v, 2) for v in os.getloadavg()]
    report["machine"] = machine_info()
    return report


def _rerun_timing(path: Path) -> dict[str, dict[str, float]]:
    """Per kind of rerun (``page``, ``fragment``), the mean ms per rerun of its script thread, over the whole run
    (opening included): wall, CPU, waiting for a core, and the rest (``blocked``: mostly waiting for the GIL)."""
    try:
        totals = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    out = {}
    for kind, t in totals.items():
        n = max(1, int(t["runs"]))
        wall, cpu, wait = t["wall_ms"] / n, t["cpu_ms"] / n, t["core_wait_ms"] / n
        out[kind] = {"runs": n, "wall": wall, "cpu": cpu, "core_wait": wait, "blocked": wall - cpu - wait}
    return out


def summary(report: dict[str, Any]) -> str:
    rows = [
        {"operation": op, "n": v["n"], "p50 ms": 1e3 * v["server_p50_s"], "p95 ms": 1e3 * v["server_p95_s"],
         "max ms": 1e3 * v["server_max_s"]}
        for op, v in report["per_operation"].items()
    ]  # fmt: skip
    cpu, m = report["cpu_s"], report["machine"]
    tr = report.get("trainers")
    training = [] if not tr else [
        f"Playground: {tr['sessions']} sessions training, {tr['live_updates']} live updates (p50 "
        f"{1e3 * tr['update_p50_s']:.0f} ms, p95 {1e3 * tr['update_p95_s']:.0f} ms), {tr['updates_that_trained']} "
        f"trained and {tr['updates_waiting_for_a_slot']} waited for a slot; steps reached (min, median, max) "
        f"{tr['steps_min_median_max']}; {tr['failed']} failed; server CPU per interaction includes the training"
    ]  # fmt: skip
    return "\n".join([
        table(rows, ["operation", "n", "p50 ms", "p95 ms", "max ms"]),
        f"{report['succeeded']} operations succeeded, {report['failed']} failed, of "
        f"{report['operations_expected']} planned (rounds done per session: {report['rounds_completed']}); "
        f"server response p95 {1e3 * report['server_response_p95_s']:.0f} ms (widget changes), "
        f"page changes p95 {1e3 * report['page_change_p95_s']:.0f} ms; widget changes p95 by round: "
        + ", ".join(f"{1e3 * v:.0f}" for v in report.get("server_response_p95_s_by_round", [])) + " ms",
        f"server CPU {1e3 * cpu['server_per_interaction']:.0f} ms per interaction (rerun), "
        f"{1e3 * cpu['server_per_operation']:.0f} ms per operation (page change + widget change); "
        f"{cpu['server_share_of_one_core_in_rounds']:.2f} cores busy on average; RSS {report['server_rss_mb']}",
        f"{m['cpu']} ({', '.join(m['flags_that_matter']) or 'no avx2/avx512/amx'}), {m['logical_cpus']} logical CPUs; "
        f"load average {report['load_average_at_start']} at start, {report['load_average_at_end']} at end",
        *training,
        *[
            f"{kind} reruns (script thread, mean of {t['runs']}): wall {t['wall']:.0f} ms = CPU {t['cpu']:.0f} + "
            f"waiting for a core {t['core_wait']:.0f} + blocked (mostly the GIL) {t['blocked']:.0f}"
            for kind, t in report.get("rerun_timing_ms", {}).items()
        ],
    ])  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.class_load", description=__doc__.split("\n\n")[0])
    p.add_argument("--sessions", type=int, default=30, help="concurrent protocol-level sessions (default 30)")
    p.add_argument("--rounds", type=int, default=6, help="rounds of encode+interpolate+sample each (default 6)")
    p.add_argument("--think", type=float, default=3.0, help="mean pause before each action, s (x U(0.5, 1.5))")
    p.add_argument("--ramp", type=float, default=10.0, help="seconds over which the sessions arrive (default 10)")
    p.add_argument("--models-dir", type=Path, help="checkpoint folder (default: models/, else a fixture model)")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds before one request counts as failed")
    p.add_argument("--max-minutes", type=float, default=0.0, help="start no new round after this (0 = no limit)")
    p.add_argument(
        "--trainers",
        type=int,
        default=0,
        help="more sessions that press Train on the Playground and keep training meanwhile (default 0)",
    )
    p.add_argument("--app", type=Path, default=APP, help="the app's script (e.g. an older version, to compare)")
    p.add_argument(
        "--rerun-timing",
        action="store_true",
        help="time each rerun's script thread in the server: CPU, waiting for a core, blocked (bench/hooks)",
    )
    p.add_argument("--name", default="class-load", help="results file name (default class-load)")
    add_save_flag(p)
    args = p.parse_args(argv)
    log = Path(tempfile.gettempdir()) / f"{args.name}.server.log"
    a = args
    report = run(
        a.sessions, a.rounds, a.think, a.ramp, a.models_dir, a.timeout, log, a.max_minutes, a.app, a.trainers,
        a.rerun_timing,
    )  # fmt: skip
    report["command"] = "python -m bench.class_load " + " ".join(argv if argv is not None else sys.argv[1:])
    path = write_results(args.name, report, args.save)
    print(summary(report))
    print(f"written: {path}")
    complete = report["succeeded"] == report["operations_expected"]
    trainers_ok = not report["trainers"] or report["trainers"]["failed"] == 0
    return 0 if report["failed"] == 0 and complete and trainers_ok else 1


if __name__ == "__main__":
    sys.exit(main())
