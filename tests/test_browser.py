"""Real-browser end to end: `streamlit run app.py` on a free localhost port, Debian's Chromium
driven by Playwright (executable_path, never a downloaded browser), every page visited, a
slider moved, text asserted, and a screenshot of each page saved under test-output/."""
from __future__ import annotations

import time
from pathlib import Path

import pytest
from appserver import ARGS, CHROMIUM, ROOT, streamlit_server
from appserver import settle as _settle

OUT = ROOT / "test-output"
# a deep link first: on a fresh server it must still run app.py's frame and navigation
PAGES = [("mauve", "MAUVE"), ("", "How far is a language model"), ("kl", "KL divergence"),
         ("perplexity", "Perplexity"), ("hellaswag", "HellaSwag"), ("small_vs_large", "Small vs large")]
PAYLOAD = '<script>window.__pwned = 1</script><img src="x" onerror="window.__pwned = 2"> ok'


@pytest.fixture(scope="module")
def server():
    with streamlit_server() as (url, _):
        yield url


def test_every_page_in_chromium(server):
    if not Path(CHROMIUM).exists():
        pytest.fail("Debian's chromium is not installed; `make test` installs it (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    OUT.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1600})
        for path, title in PAGES:
            page.goto(f"{server}/{path}")
            _settle(page)
            assert title in page.locator("h1").first.inner_text()
            assert page.get_by_text("Small vs large").count() > 0, f"{path}: the app's navigation is missing"
            assert page.locator('[data-testid="stException"]').count() == 0, path
            assert page.locator('[data-testid="stAlertContentError"]').count() == 0, path
            page.screenshot(path=str(OUT / f"{path or 'overview'}.png"), full_page=True)
        # move the KL page's P(A) slider with the keyboard and watch KL(P||Q) change
        page.goto(f"{server}/kl")
        _settle(page)
        metric = page.locator('[data-testid="stMetricValue"]').first
        before = metric.inner_text()
        page.locator('[data-testid="stSlider"] input[type="range"]').first.focus()
        for _ in range(10):
            page.keyboard.press("ArrowRight")
        time.sleep(1)
        _settle(page)
        assert metric.inner_text() != before
        page.screenshot(path=str(OUT / "kl-after-slider.png"), full_page=True)
        # user text is shown as text, never run as HTML
        page.goto(f"{server}/perplexity")
        _settle(page)
        page.get_by_text("my own text").click()
        _settle(page)
        box = page.locator('[data-testid="stTextArea"] textarea').first
        box.fill(PAYLOAD)
        box.press("Control+Enter")
        _settle(page)
        assert page.evaluate("window.__pwned") is None
        assert page.locator('img[src="x"]').count() == 0
        assert page.get_by_text("<script>window.__pwned", exact=False).count() > 0  # visible, as text
        page.screenshot(path=str(OUT / "perplexity-script-payload.png"), full_page=True)
        browser.close()
