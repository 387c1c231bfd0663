"""The app's server for the e2e tests and the latency script: :func:`app.launch.serve` with its output in
``artifacts/streamlit_<port>.log``."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from app.launch import APP, ROOT, serve


@contextmanager
def streamlit_server(env: dict[str, str] | None = None, timeout: float = 120.0, app: Path = APP) -> Iterator[str]:
    """Runs ``app`` (default: the explorer) headless on a free port; yields its URL; stops it afterwards."""
    (ROOT / "artifacts").mkdir(exist_ok=True)
    with open(ROOT / "artifacts" / f"streamlit_{app.stem}.log", "w") as log, serve(env, log, timeout, app) as (url, _):
        yield url
