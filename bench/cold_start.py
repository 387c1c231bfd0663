"""Cold start: a new server with empty caches (as on a new machine), from answering its health check to a first
Encode page in Chromium that shows its histogram of test images, and the server's CPU meanwhile.

    python -m bench.cold_start --repeats 3                               # this checkout
    python -m bench.cold_start --repeats 3 --app /tmp/old/app/streamlit_app.py   # A/B: another checkout, alternating

Each start gets a fresh, empty ``$XDG_CACHE_HOME`` (no measured fast path, no encoded gallery) and the shipped
models; with ``--app``, this checkout and the other one alternate start by start, so load hits them alike.
Results: ``bench/results/local/`` (``--save``: ``bench/results/cold-start-<cpu kind>.json``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from app.launch import APP, ROOT, serve
from bench.common import add_save_flag, machine_info, table, write_results
from bench.serving import process_cpu_s

HISTOGRAM_CAPTION = "bits/dim of test images"
# True once the Encode page shows its histogram picture (an st.image whose caption starts so) and no script runs.
READY_JS = f"""() => [...document.querySelectorAll('[data-testid="stImage"]')].some(b =>
    b.innerText.startsWith({HISTOGRAM_CAPTION!r}) && b.querySelector('img')?.complete)
    && !document.querySelector('[data-testid="stStatusWidget"]')"""


def one_start(app: Path, browser: Any, timeout_s: float) -> dict[str, float]:
    """Seconds from the health check to the histogram, and the server's CPU seconds until then."""
    with tempfile.TemporaryDirectory() as cache, open(os.devnull, "w") as log:
        env = {"XDG_CACHE_HOME": cache, "NVP_MODELS_DIR": str(ROOT / "models")}
        with serve(env, log, app=app) as (url, proc):
            t0, cpu0 = time.perf_counter(), process_cpu_s(proc.pid)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(url)
            page.wait_for_function(READY_JS, timeout=timeout_s * 1e3, polling=100)
            seconds = time.perf_counter() - t0
            cpu = process_cpu_s(proc.pid) - cpu0
            page.close()
    return {"seconds": seconds, "server_cpu_s": cpu}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.cold_start", description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=3, help="starts per app (default 3)")
    p.add_argument("--app", type=Path, help="another checkout's app/streamlit_app.py, started alternately")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds before a start counts as failed")
    add_save_flag(p)
    args = p.parse_args(argv)
    from playwright.sync_api import sync_playwright

    apps = {"this checkout": APP} | ({"--app": args.app.resolve()} if args.app else {})
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in apps}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
        for _ in range(args.repeats):
            for name, app in apps.items():
                runs[name].append(one_start(app, browser, args.timeout))
        browser.close()
    rows = [
        {"app": name, "starts": len(rs), "median_s": statistics.median(r["seconds"] for r in rs),
         "max_s": max(r["seconds"] for r in rs), "server_cpu_s": statistics.median(r["server_cpu_s"] for r in rs)}
        for name, rs in runs.items()
    ]  # fmt: skip
    info = machine_info()
    print(table(rows, ["app", "starts", "median_s", "max_s", "server_cpu_s"]))
    print(f"{info['cpu']} ({', '.join(info['flags_that_matter'])}), {info['logical_cpus']} logical CPUs")
    apps_text = {k: str(v) for k, v in apps.items()}
    path = write_results("cold-start", {"machine": info, "apps": apps_text, "rows": rows, "runs": runs}, args.save)
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
