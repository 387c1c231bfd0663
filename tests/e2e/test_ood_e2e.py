"""The Out-of-distribution page in a real browser: the AUROC figures and the histogram show, choosing another set
redraws them, and the toolbar has no Deploy button (.streamlit/config.toml)."""

from __future__ import annotations

import re

import pytest

from e2e.browser import exceptions, full_screenshot, settle
from e2e.conftest import SCREENSHOTS

pytestmark = pytest.mark.e2e

AUROC = re.compile(r"AUROC [01]\.\d\d")


def test_ood_page_shows_auroc_figures(page, app_url: str) -> None:
    page.goto(f"{app_url}/ood")
    settle(page)
    main = page.locator('[data-testid="stMain"]')
    assert main.locator("h1").first.inner_text().strip() == "Out of distribution"
    assert len(AUROC.findall(main.inner_text())) >= 2
    assert page.locator('[data-testid="stPlotlyChart"]').count() >= 1
    assert page.locator('[data-testid="stDataFrame"]').count() >= 1
    assert page.get_by_text("Deploy", exact=True).count() == 0
    page.get_by_role("combobox", name=re.compile("Outsider set")).click()
    page.get_by_role("option", name="uniform noise").click()
    settle(page)
    assert re.search(r"uniform noise.*AUROC [01]\.\d\d", main.inner_text(), re.S)
    assert "ood_set=" in page.url and "uniform" in page.url
    full_screenshot(page, SCREENSHOTS / "ood.png")
    assert not exceptions(page), exceptions(page)
