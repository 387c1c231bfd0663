"""Load test: N concurrent browser sessions (Playwright contexts in Debian's chromium) against one
``streamlit run`` of the app, each doing encode, interpolate and sample R times.

Reports the success count, response-time percentiles per operation — from the input event to the page
being done (no script running, nothing stale: the headline figure), to the new result first being on
screen, and the server's own response (rerun request sent to "script finished" received, from the page's
websocket frames) — the server's resident memory after round 1 and at the end, and where the CPU went.

    python -m bench.load_test                      # 8 sessions x 25 rounds, shipped models if present
    python -m bench.load_test --sessions 2 --rounds 2 --out artifacts/load_small.json

Operations (each in the same browser session, moving between pages with the sidebar navigation):
  encode       Encode page: type a new gallery index -> the image, its latents and bits/dim are redrawn
  interpolate  Interpolate page: move the level-1 weight slider one step -> the A -> B strip is redrawn
  sample       Sample page: type a new seed -> the grid of samples is redrawn
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from app.launch import ROOT, serve
from app.path_panel import CAPTION_SELECTOR
from bench.serving import (
    GALLERY_LABEL,
    SEED_LABEL,
    WEIGHT_LABEL,
    encode_index,
    expected_caption,
    machine_busy_s,
    models_under_test,
    percentile,
    process_cpu_s,
    rss_mb,
    sample_seed,
    weight_down,
)

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]  # fmt: skip
IDLE_JS = """() => !document.querySelector('[data-testid="stStatusWidget"]')
    && !document.querySelector('[data-stale="true"]')"""
# Conditions are checked every POLL_MS, not on every animation frame (Playwright's default), which would make
# each headless page draw 60 frames a second on the cores the server needs. Times are rounded up by up to POLL_MS.
POLL_MS = 20
CAPTION_JS = (
    f"([prefix, text]) => [...document.querySelectorAll({CAPTION_SELECTOR!r})]"
    ".some(c => c.innerText.startsWith(prefix) && c.innerText.includes(text))"
)


# ------------------------------------------------------------------------------------------- browser


@dataclass
class SessionResult:
    ok: int = 0
    failed: int = 0
    rounds: int = 0
    # Seconds from the input to the page being done (idle), and to the new result first being on screen.
    times: dict[str, list[float]] = field(default_factory=lambda: {"encode": [], "interpolate": [], "sample": []})
    first: dict[str, list[float]] = field(default_factory=lambda: {"encode": [], "interpolate": [], "sample": []})
    # Seconds from the rerun request leaving the browser to the server's "script finished" message arriving.
    server: dict[str, list[float]] = field(default_factory=lambda: {"encode": [], "interpolate": [], "sample": []})
    errors: list[str] = field(default_factory=list)


class Wire:
    """When a page sent rerun requests and received "script finished" messages (its websocket frames, decoded
    with Streamlit's protobuf classes): the server's own response time, without the browser's drawing."""

    def __init__(self) -> None:
        self.sent: list[float] = []
        self.finished: list[float] = []

    def attach(self, page: object) -> None:
        def on_socket(ws: object) -> None:
            ws.on("framesent", self._sent)  # type: ignore[attr-defined]
            ws.on("framereceived", self._received)  # type: ignore[attr-defined]

        page.on("websocket", on_socket)  # type: ignore[attr-defined]

    @staticmethod
    def _kind(payload: object, cls: type) -> str | None:
        if not isinstance(payload, bytes | bytearray):
            return None
        try:
            return cls.FromString(bytes(payload)).WhichOneof("type")  # type: ignore[attr-defined]
        except Exception:  # not a message of this kind
            return None

    def _sent(self, payload: object) -> None:
        from streamlit.proto.BackMsg_pb2 import BackMsg

        if self._kind(payload, BackMsg) == "rerun_script":
            self.sent.append(time.perf_counter())

    def _received(self, payload: object) -> None:
        from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

        if self._kind(payload, ForwardMsg) == "script_finished":
            self.finished.append(time.perf_counter())

    def response(self, since: float) -> float | None:
        """From the first rerun request sent after ``since`` to the next "script finished"; None if none."""
        req = next((t for t in self.sent if t >= since), None)
        fin = next((t for t in self.finished if req is not None and t >= req), None)
        return None if fin is None or req is None else fin - req


async def settle(page: object, timeout: float) -> None:
    await page.wait_for_selector('[data-testid="stApp"]', timeout=timeout)  # type: ignore[attr-defined]
    for _ in range(2):
        await page.wait_for_timeout(150)  # type: ignore[attr-defined]
        await page.wait_for_function(IDLE_JS, timeout=timeout, polling=POLL_MS)  # type: ignore[attr-defined]


async def goto_page(page: object, title: str, timeout: float) -> None:
    """Moves to a page through the sidebar navigation (the same Streamlit session)."""
    nav = page.locator('[data-testid="stSidebarNav"] a').filter(has_text=title)  # type: ignore[attr-defined]
    await nav.first.click()
    await page.wait_for_function(  # type: ignore[attr-defined]
        "t => [...document.querySelectorAll('[data-testid=\"stMain\"] h1')].some(h => h.innerText.trim() === t)",
        arg=title,
        timeout=timeout,
        polling=POLL_MS,
    )
    await settle(page, timeout)


async def exceptions(page: object) -> list[str]:
    return await page.locator('[data-testid="stException"]').all_inner_texts()  # type: ignore[attr-defined]


async def set_number(page: object, label: str, value: int) -> None:
    box = page.locator('[data-testid="stNumberInput"]').filter(has_text=label).first  # type: ignore[attr-defined]
    field_ = box.locator("input")
    await field_.fill(str(value))
    await field_.press("Enter")


async def wait_caption(page: object, prefix: str, text: str, timeout: float, t0: float) -> tuple[float, float]:
    """Seconds from ``t0`` until the new result is on screen, and until the whole page is done (idle)."""
    await page.wait_for_function(CAPTION_JS, arg=[prefix, text], timeout=timeout, polling=POLL_MS)  # type: ignore[attr-defined]
    first = time.perf_counter() - t0
    await page.wait_for_function(IDLE_JS, timeout=timeout, polling=POLL_MS)  # type: ignore[attr-defined]
    return first, time.perf_counter() - t0


async def op_encode(page: object, r: int, session: int, gallery_n: int, timeout: float) -> tuple[float, float]:
    t0 = time.perf_counter()
    await set_number(page, GALLERY_LABEL, encode_index(r, session, gallery_n))
    return await wait_caption(page, *expected_caption("encode", r, session, gallery_n), timeout, t0)


async def op_interpolate(page: object, r: int, timeout: float) -> tuple[float, float]:
    # The level-1 weight goes 1 -> 0.95 -> 1 -> ...; the strip's caption names the weights.
    thumb = page.locator(f'.nvp-panel input[type="range"][aria-label="{WEIGHT_LABEL}"]').first  # type: ignore[attr-defined]
    await thumb.focus()
    t0 = time.perf_counter()
    await thumb.press("ArrowLeft" if weight_down(r) else "ArrowRight")
    return await wait_caption(page, *expected_caption("interpolate", r, 0, 1), timeout, t0)


async def op_sample(page: object, r: int, session: int, timeout: float) -> tuple[float, float]:
    t0 = time.perf_counter()
    await set_number(page, SEED_LABEL, sample_seed(r, session))
    return await wait_caption(page, *expected_caption("sample", r, session, 1), timeout, t0)


async def run_session(
    browser: object, url: str, session: int, rounds: int, gallery_n: int, timeout: float, round1: asyncio.Event,
    round1_done: list[int], n_sessions: int, on_round1: object, deadline: float = float("inf"), think: float = 0.0,
) -> SessionResult:  # fmt: skip
    res = SessionResult()
    pauses = random.Random(session)  # think times differ between sessions but not between runs
    ctx = await browser.new_context(viewport={"width": 1400, "height": 1000})  # type: ignore[attr-defined]
    page = await ctx.new_page()
    page.set_default_timeout(timeout)
    wire = Wire()
    wire.attach(page)
    try:
        await page.goto(url)
        await settle(page, timeout)
        ops = [
            ("encode", "Encode", lambda r: op_encode(page, r, session, gallery_n, timeout)),
            ("interpolate", "Interpolate", lambda r: op_interpolate(page, r, timeout)),
            ("sample", "Sample", lambda r: op_sample(page, r, session, timeout)),
        ]
        for r in range(rounds):
            if r > 0 and time.monotonic() > deadline:
                break  # out of time: report the rounds done (the report says how many)
            res.rounds = r + 1
            for name, title, op in ops:
                if think:  # a person looks at the result before the next action
                    await asyncio.sleep(think * pauses.uniform(0.5, 1.5))
                try:
                    await goto_page(page, title, timeout)
                    mark = time.perf_counter()
                    first, done = await op(r)
                    problems = await exceptions(page)
                    if problems:
                        raise RuntimeError(problems[0][:300])
                    res.times[name].append(done)
                    res.first[name].append(first)
                    server = wire.response(mark)
                    if server is not None:
                        res.server[name].append(server)
                    res.ok += 1
                except Exception as e:  # a failed operation is counted and the session goes on
                    res.failed += 1
                    res.errors.append(f"session {session} round {r} {name}: {type(e).__name__}: {str(e)[:300]}")
            if r == 0:
                round1_done.append(session)
                if len(round1_done) == n_sessions:
                    on_round1()  # type: ignore[operator]
                    round1.set()
    finally:
        await ctx.close()
    return res


async def drive(
    url: str, pid: int, sessions: int, rounds: int, gallery_n: int, timeout: float, max_minutes: float = 0.0,
    think: float = 0.0,
) -> dict:  # fmt: skip
    from playwright.async_api import async_playwright

    mem: dict[str, float] = {}
    peak = {"rss": rss_mb(pid)}
    round1 = asyncio.Event()
    done: list[int] = []

    def on_round1() -> None:
        mem["after_round1_mb"] = rss_mb(pid)

    async def watch() -> None:
        while True:
            peak["rss"] = max(peak["rss"], rss_mb(pid))
            await asyncio.sleep(0.5)

    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        watcher = asyncio.create_task(watch())
        t0 = time.perf_counter()
        deadline = time.monotonic() + 60 * max_minutes if max_minutes else float("inf")
        load_start = os.getloadavg()
        cpu0 = (process_cpu_s(pid), machine_busy_s())
        results = await asyncio.gather(*[
            run_session(browser, url, s, rounds, gallery_n, timeout, round1, done, sessions, on_round1, deadline, think)
            for s in range(sessions)
        ])  # fmt: skip
        wall = time.perf_counter() - t0
        cpu1 = (process_cpu_s(pid), machine_busy_s())
        watcher.cancel()
        await browser.close()
    mem["end_mb"] = rss_mb(pid)
    mem["peak_mb"] = peak["rss"]
    all_times = [t for r in results for ts in r.times.values() for t in ts]
    per_op = {
        op: {
            "n": len(ts),
            "p50_s": percentile(ts, 0.5),
            "p95_s": percentile(ts, 0.95),
            "max_s": max(ts) if ts else float("nan"),
            "first_result_p50_s": percentile(fs, 0.5),
            "first_result_p95_s": percentile(fs, 0.95),
            "server_n": len(ss),
            "server_p50_s": percentile(ss, 0.5),
            "server_p95_s": percentile(ss, 0.95),
        }
        for op in ("encode", "interpolate", "sample")
        for ts, fs, ss in [
            (
                [t for r in results for t in r.times[op]],
                [t for r in results for t in r.first[op]],
                [t for r in results for t in r.server[op]],
            )
        ]
    }
    all_first = [t for r in results for fs in r.first.values() for t in fs]
    all_server = [t for r in results for ss in r.server.values() for t in ss]
    return {
        "sessions": sessions,
        "rounds": rounds,
        "think_s": think,
        "poll_ms": POLL_MS,
        "operations_expected": sessions * rounds * 3,
        "rounds_completed": [r.rounds for r in results],
        "load_average_at_start": load_start,
        "succeeded": sum(r.ok for r in results),
        "failed": sum(r.failed for r in results),
        "errors": [e for r in results for e in r.errors][:20],
        "p50_s": percentile(all_times, 0.5),
        "p95_s": percentile(all_times, 0.95),
        "mean_s": statistics.fmean(all_times) if all_times else float("nan"),
        "first_result_p50_s": percentile(all_first, 0.5),
        "first_result_p95_s": percentile(all_first, 0.95),
        # The server's part alone: rerun request sent -> "script finished" received (websocket frames).
        "server_response_p50_s": percentile(all_server, 0.5),
        "server_response_p95_s": percentile(all_server, 0.95),
        "server_responses_timed": len(all_server),
        "per_operation": per_op,
        "server_rss": mem,
        "wall_s": wall,
        # Where the CPU went while the sessions ran: the Streamlit server, and everything else on the
        # machine (mostly chromium rendering the pages; also this driver and any other load).
        "cpu_s": {
            "server": cpu1[0] - cpu0[0],
            "rest_of_machine": (cpu1[1] - cpu0[1]) - (cpu1[0] - cpu0[0]),
            "per_operation_server": (cpu1[0] - cpu0[0]) / max(1, sum(r.ok + r.failed for r in results)),
        },
    }


def run(
    sessions: int, rounds: int, models_dir: Path | None, timeout_s: float, log: Path, max_minutes: float = 0.0,
    think: float = 0.0,
) -> dict:  # fmt: skip
    """Starts the server, drives the sessions, stops the server; returns the report."""
    with tempfile.TemporaryDirectory() as tmp:
        models_dir, first, gallery_n = models_under_test(models_dir, Path(tmp))
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "w") as out, serve({"NVP_MODELS_DIR": str(models_dir)}, out) as (url, proc):
            report = asyncio.run(
                drive(url, proc.pid, sessions, rounds, gallery_n, timeout_s * 1000, max_minutes, think)
            )
    report["model"] = str(first)
    report["server_rss"]["growth_after_round1_mb"] = report["server_rss"]["end_mb"] - report["server_rss"].get(
        "after_round1_mb", float("nan")
    )
    report["load_average_at_end"] = os.getloadavg()
    report["cpu_count"] = os.cpu_count()
    return report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.load_test", description=__doc__.split("\n\n")[0])
    p.add_argument("--sessions", type=int, default=8, help="concurrent browser contexts (default 8)")
    p.add_argument("--rounds", type=int, default=25, help="rounds of encode+interpolate+sample each (default 25)")
    p.add_argument("--models-dir", type=Path, help="checkpoint folder (default: models/, else a fixture model)")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds before one operation counts as failed")
    p.add_argument("--out", type=Path, default=ROOT / "artifacts" / "load_test.json")
    p.add_argument("--max-minutes", type=float, default=0.0, help="start no new round after this (0 = no limit)")
    p.add_argument(
        "--think",
        type=float,
        default=0.0,
        help="mean seconds each session pauses before an action (uniform 0.5-1.5x; default 0: back to back)",
    )
    args = p.parse_args(argv)
    if not CHROMIUM.is_file():
        print(f"error: {CHROMIUM} is missing (apt-get install chromium)", file=sys.stderr)
        return 2
    log = args.out.with_suffix(".server.log")
    report = run(args.sessions, args.rounds, args.models_dir, args.timeout, log, args.max_minutes, args.think)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))
    complete = report["succeeded"] == report["operations_expected"]
    return 0 if report["failed"] == 0 and complete else 1


if __name__ == "__main__":
    sys.exit(main())
