"""Fixtures for the browser tests: Debian's chromium via Playwright, and the app under `streamlit run`."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from app.models import list_checkpoints
from e2e.server import ROOT, streamlit_server

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
SCREENSHOTS = ROOT / "artifacts" / "screenshots"


def _unavailable(reason: str) -> None:
    """Skips, or fails when NVP_REQUIRE_BROWSER=1 (CI, where the browser must be there)."""
    if os.environ.get("NVP_REQUIRE_BROWSER") == "1":
        pytest.fail(f"{reason} (NVP_REQUIRE_BROWSER=1 requires the browser tests to run)")
    pytest.skip(f"{reason}; install Debian's chromium (apt-get install chromium) to run the browser tests")


@pytest.fixture(scope="session")
def browser() -> Iterator[object]:
    if not CHROMIUM.is_file():
        _unavailable(f"{CHROMIUM} is missing")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("the playwright Python package is not installed")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture(scope="session")
def e2e_models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``$NVP_E2E_MODELS_DIR``, else the shipped models when they are there, else a small fixture model (so the
    browser tests always run)."""
    if os.environ.get("NVP_E2E_MODELS_DIR"):
        return Path(os.environ["NVP_E2E_MODELS_DIR"])
    shipped = ROOT / "models"
    if list_checkpoints(shipped):
        return shipped
    from app_helpers import make_fixture_model

    folder = tmp_path_factory.mktemp("e2e_models")
    make_fixture_model(folder, "fixture_grey", 1, 16, 3)
    return folder


@pytest.fixture(scope="session")
def app_url(browser: object, e2e_models_dir: Path) -> Iterator[str]:
    # The Runs page looks in the models folder (no run folders there), never at a run that may be training.
    env = {"NVP_MODELS_DIR": str(e2e_models_dir), "NVP_APP_GALLERY_MAX": "400", "NVP_RUNS_DIR": str(e2e_models_dir),
           "NVP_APP_OOD_MAX": "100"}  # fmt: skip
    with streamlit_server(env) as url:
        yield url


@dataclass
class Network:
    """What a browser context asked for: requests that would have left this machine (blocked), and the
    content type of every image response."""

    offsite: list[str] = field(default_factory=list)
    images: list[tuple[str, str]] = field(default_factory=list)  # (url, content type)

    def not_lossless(self) -> list[tuple[str, str]]:
        """Image responses that are neither PNG nor GIF (both lossless)."""
        return [(u, t) for u, t in self.images if t.split(";")[0].strip() not in LOSSLESS]


LOSSLESS = {"image/png", "image/gif"}


def _local(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme in {"data", "blob", "about"} or parts.hostname in {"127.0.0.1", "localhost"}


@pytest.fixture()
def network() -> Network:
    return Network()


@pytest.fixture()
def page(browser: object, network: Network) -> Iterator[object]:
    """A fresh browser page. Every request that would leave 127.0.0.1 is blocked and recorded, and every image
    response's content type is recorded; the test fails if the app needed the network or served a lossy image."""
    ctx = browser.new_context(viewport={"width": 1400, "height": 1000})  # type: ignore[attr-defined]

    def block(route: Any) -> None:
        network.offsite.append(route.request.url)
        route.abort()

    ctx.route(lambda url: not _local(url), block)

    def record(response: Any) -> None:
        ctype = response.headers.get("content-type", "")
        if ctype.startswith("image/") or response.request.resource_type == "image":
            network.images.append((response.url, ctype))

    ctx.on("response", record)
    pg = ctx.new_page()
    pg.set_default_timeout(60_000)
    yield pg
    ctx.close()
    assert not network.offsite, f"the app asked for resources off this machine: {network.offsite}"
    assert not network.not_lossless(), f"images served lossy: {network.not_lossless()}"
