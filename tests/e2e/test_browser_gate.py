"""The browser tests skip without chromium, unless NVP_REQUIRE_BROWSER=1 makes that a failure (no browser needed)."""

from __future__ import annotations

import pytest
from _pytest.outcomes import Failed, Skipped

from e2e.conftest import _unavailable


def test_missing_browser_skips_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NVP_REQUIRE_BROWSER", raising=False)
    with pytest.raises(Skipped, match="chromium"):
        _unavailable("/usr/bin/chromium is missing")


def test_missing_browser_fails_when_required(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NVP_REQUIRE_BROWSER", "1")
    with pytest.raises(Failed, match="NVP_REQUIRE_BROWSER=1"):
        _unavailable("/usr/bin/chromium is missing")
