"""``nvp-app``: runs ``streamlit run`` on the bundled app (extra arguments go to Streamlit), and
:func:`serve`, the same server on a free local port for the browser tests and the benchmarks."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

APP = Path(__file__).resolve().parent / "streamlit_app.py"
ROOT = APP.parent.parent
# No full garbage collection after each run: with torch loaded it holds the GIL that every session's rerun
# waits on (Python's automatic collection still runs). The toolbar option is here as well as in
# .streamlit/config.toml, which Streamlit reads only from the directory it is started in.
SERVER_OPTIONS = [
    "--browser.gatherUsageStats",
    "false",
    "--runner.postScriptGC",
    "false",
    "--client.toolbarMode",
    "viewer",
]


def command(args: list[str], app: Path = APP) -> list[str]:
    """The ``streamlit run`` command line for ``args`` (e.g. ``["--server.port", "8600"]``)."""
    return [sys.executable, "-m", "streamlit", "run", str(app), *SERVER_OPTIONS, *args]


def environment(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment plus ``extra``, with the repository first on ``PYTHONPATH`` and glibc's
    malloc arenas capped at 2 unless ``MALLOC_ARENA_MAX`` is set."""
    env = {**os.environ, **(extra or {})}
    # Each session's reruns run in a thread of its own, and glibc's per-thread arenas keep freed memory.
    env.setdefault("MALLOC_ARENA_MAX", "2")
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def serve(
    env: dict[str, str] | None = None, log: IO[str] | None = None, timeout: float = 180.0, app: Path = APP
) -> Iterator[tuple[str, subprocess.Popen]]:
    """Runs ``app`` headless on a free local port until the block ends; yields ``(url, process)`` once the
    server answers its health check. ``env``: extra environment variables; ``log``: where its output goes."""
    port = free_port()
    args = ["--server.headless", "true", "--server.port", str(port), "--server.address", "127.0.0.1",
            "--server.fileWatcherType", "none"]  # fmt: skip
    proc = subprocess.Popen(
        command(args, app), cwd=ROOT, env=environment(env), stdout=log or subprocess.DEVNULL, stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"streamlit exited with code {proc.returncode}")
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"streamlit did not become healthy within {timeout:.0f} s")
            time.sleep(0.5)
        yield url, proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main(argv: list[str] | None = None) -> int:
    """Launches the app. On POSIX this process becomes the Streamlit server (``exec``), so a SIGTERM or SIGINT
    sent to ``nvp-app`` (a service manager, ``kill``, Ctrl-C) reaches the server itself: a wrapper process
    that died alone would leave the server running and answering. Elsewhere, returns Streamlit's exit code."""
    args = sys.argv[1:] if argv is None else argv
    cmd = command(args)
    if os.name == "posix":
        sys.stdout.flush()
        sys.stderr.flush()
        os.execve(cmd[0], cmd, environment())
    try:
        return subprocess.call(cmd, env=environment())
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
