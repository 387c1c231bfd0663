"""Where one rerun of each page spends its time: the app run in this process (Streamlit's ``AppTest``) under
cProfile, for the reruns the class load test asks for — a page change to Encode, Interpolate and Sample, and on
each the widget change (new gallery index, level-1 weight, new seed). Prints the top costs of each rerun.

    python -m bench.profile_pages                    # the shipped model (else a fixture), top 25 per rerun
    python -m bench.profile_pages --top 40 --sort tottime

AppTest runs the app's script as the server does, minus the websocket: the figures are the script's own CPU
(model calls, pictures, widgets, building the messages), not the sending of them. Each rerun is repeated
``--repeats`` times with a new value each time (a result another session computed is never reused): the CPU
of the repeats after the first is measured without the profiler (its median is the table's ``cpu_ms``), and the
profile is of the last one (caches warm, as in a class that has been running a while). cProfile's own cost
inflates ``cpu_ms_profiled`` and the profile's figures; the ranking is what it is for. AppTest compiles the page
scripts on every run (``ast``/``magic`` in the profile); the server compiles each once.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench.common import add_save_flag, machine_info, table, write_results
from bench.serving import GALLERY_LABEL, SEED_LABEL, models_under_test, weights_with
from tests.panel_driver import panel_change  # the tests' own driver: the profile reruns what they rerun

APP = Path(__file__).resolve().parent.parent / "app" / "streamlit_app.py"


def _widget(widgets: Any, prefix: str) -> Any:
    for w in widgets:
        if (getattr(w, "label", "") or "").startswith(prefix):
            return w
    raise LookupError(prefix)


def _profiled(fn: Any) -> tuple[float, float, pstats.Stats]:
    """Runs ``fn`` under cProfile in every thread it starts, timing each function by its thread's CPU time (not
    the wall clock, which on a loaded machine counts waiting); returns (wall s, this process's CPU s, stats)."""
    profiles: list[cProfile.Profile] = []

    def per_thread(*_: Any) -> None:  # the first event of a new thread: profile it from there on
        sys.setprofile(None)
        p = cProfile.Profile(time.thread_time)
        profiles.append(p)
        p.enable()

    main = cProfile.Profile(time.thread_time)
    threading.setprofile(per_thread)
    t0, c0 = time.perf_counter(), time.process_time()
    main.enable()
    try:
        fn()
    finally:
        main.disable()
        threading.setprofile(None)  # type: ignore[arg-type]
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    for p in profiles:
        p.disable()
    stats = pstats.Stats(main)
    for p in profiles:
        stats.add(p)
    return wall, cpu, stats


def _level1(at: Any, w: float) -> list[float]:
    """The path panel's weights with level 1's set to ``w`` (what moving its slider sends)."""
    weights = json.loads(at.get("bidi_component")[0].proto.json)["settings"]["weights"]
    return weights_with(weights, 1, round(w, 2))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.profile_pages", description=__doc__.split("\n\n")[0])
    p.add_argument("--models-dir", type=Path, help="checkpoint folder (default: models/, else a fixture model)")
    p.add_argument("--top", type=int, default=25, help="functions shown per rerun (default 25)")
    p.add_argument("--sort", default="cumulative", choices=["cumulative", "tottime"], help="pstats sort order")
    p.add_argument("--app", type=Path, default=APP, help="the app's script (e.g. an older version, to compare)")
    p.add_argument("--name", default="profile-pages", help="results file name (default profile-pages)")
    add_save_flag(p)
    p.add_argument("--repeats", type=int, default=5, help="reruns of each kind; the last is profiled (default 5)")
    args = p.parse_args(argv)
    from streamlit.testing.v1 import AppTest

    tmp = tempfile.mkdtemp()
    models_dir, first, gallery_n = models_under_test(args.models_dir, Path(tmp))
    os.environ["NVP_MODELS_DIR"] = str(models_dir)
    at = AppTest.from_file(str(args.app.resolve()), default_timeout=300).run()
    steps: list[tuple[str, Any]] = [
        ("page change: Encode", lambda k: at.switch_page("views/encode.py").run()),
        ("encode: gallery index", lambda k: _widget(at.number_input, GALLERY_LABEL).set_value(5 + k).run()),
        ("page change: Interpolate", lambda k: at.switch_page("views/interpolate.py").run()),
        ("interpolate: level-1 weight", lambda k: panel_change(at, weights=_level1(at, 0.9 - 0.05 * k))),
        ("page change: Sample", lambda k: at.switch_page("views/sample.py").run()),
        ("sample: seed", lambda k: _widget(at.number_input, SEED_LABEL).set_value(100 + k).run()),
    ]
    rows = []
    plain: dict[str, list[float]] = {name: [] for name, _ in steps}  # CPU s of the reruns run without profiling
    for k in range(args.repeats):
        for name, step in steps:
            last = k == args.repeats - 1
            if not last:
                c0 = time.process_time()
                step(k)
                if k > 0:  # the first round warms the caches (model, gallery, compiled pages)
                    plain[name].append(time.process_time() - c0)
                continue
            wall, cpu, stats = _profiled(lambda step=step, k=k: step(k))
            problems = [e.message for e in at.exception]
            out = io.StringIO()
            stats.stream = out  # type: ignore[attr-defined]
            stats.strip_dirs().sort_stats(args.sort).print_stats(args.top)
            print(f"\n=== {name}: {1e3 * wall:.0f} ms wall, {1e3 * cpu:.0f} ms CPU (this process, profiled)")
            if problems:
                print("    exception on the page:", problems[0][:300])
            print("\n".join(line for line in out.getvalue().splitlines()[4:] if line.strip()))
            unprofiled = statistics.median(plain[name]) if plain[name] else float("nan")
            rows.append({"rerun": name, "cpu_ms_profiled": round(1e3 * cpu, 1), "cpu_ms": round(1e3 * unprofiled, 1)})
    print("\nCPU per rerun (this process, without the profiler; median of the repeats after the first):")
    print(table(rows, ["rerun", "cpu_ms", "cpu_ms_profiled"]))
    print(f"load average {os.getloadavg()}")
    report = {"model": str(first), "app": str(args.app), "reruns": rows, "machine": machine_info()}
    path = write_results(args.name, report, args.save)
    print(f"\nwritten: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
