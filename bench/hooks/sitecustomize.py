"""Where a rerun's time goes, inside the server ``python -m bench.class_load --rerun-timing`` starts (this folder is
first on its ``PYTHONPATH``, so Python imports this module at start-up; nothing else imports it).

Each rerun's script thread is timed from the start to the end of the script: its wall time, the CPU time it used,
the time it waited for a core (``/proc/self/task/<tid>/schedstat``) and the rest, when it could have run but held no
GIL or waited on a lock: under a class, mostly waiting to win the GIL back after a call that released it (a torch
op, a system call, a PNG encode). Totals per kind of rerun (a page's whole run or a fragment's) go as JSON to
``$NVP_RERUN_TIMING``, at most once a second. Reading the schedstat file costs each rerun four system calls.
"""

from __future__ import annotations

import atexit
import json
import os
import threading
import time

_OUT = os.environ.get("NVP_RERUN_TIMING")


def _sched_ms() -> tuple[float, float]:
    """This thread's CPU time and time waiting for a core, ms."""
    with open(f"/proc/self/task/{threading.get_native_id()}/schedstat", encoding="ascii") as f:
        cpu, wait, _ = f.read().split()
    return int(cpu) / 1e6, int(wait) / 1e6


def _install(out: str) -> None:
    from streamlit.runtime.scriptrunner import script_runner

    totals: dict[str, dict[str, float]] = {}
    lock = threading.Lock()
    last = [0.0]
    run_script = script_runner.ScriptRunner._run_script

    def timed(self: object, rerun_data: object) -> object:
        kind = "fragment" if getattr(rerun_data, "fragment_id_queue", None) else "page"
        t0, (c0, w0) = time.perf_counter(), _sched_ms()
        try:
            return run_script(self, rerun_data)  # type: ignore[arg-type]
        finally:
            c1, w1 = _sched_ms()
            wall, cpu, waited = 1e3 * (time.perf_counter() - t0), c1 - c0, w1 - w0
            with lock:
                t = totals.setdefault(kind, {"runs": 0, "wall_ms": 0.0, "cpu_ms": 0.0, "core_wait_ms": 0.0})
                t["runs"] += 1
                t["wall_ms"] += wall
                t["cpu_ms"] += cpu
                t["core_wait_ms"] += waited
                if time.monotonic() - last[0] > 1.0:
                    last[0] = time.monotonic()
                    write()

    def write() -> None:
        with open(out + ".tmp", "w", encoding="utf-8") as f:
            json.dump(totals, f)
        os.replace(out + ".tmp", out)

    script_runner.ScriptRunner._run_script = timed  # type: ignore[method-assign,assignment]
    atexit.register(write)


if _OUT:
    _install(_OUT)
