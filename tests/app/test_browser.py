"""Real-browser end to end: `streamlit run app.py` on a free localhost port, Debian's Chromium
driven by Playwright (executable_path, never a downloaded browser), every page visited, a
slider moved, text asserted, and a screenshot of each page saved under test-output/. The
browser never asks another host for anything (fonts, icons, images in user text)."""
from __future__ import annotations

import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from tests.support.appserver import ARGS, CHROMIUM, ROOT, streamlit_server
from tests.support.appserver import settle as _settle

OUT = ROOT / "test-output"
# a deep link first (the first visits, on the fresh server, open one too: it must still run app.py's frame and navigation)
PAGES = [("mauve", "MAUVE"), ("", "How far is a language model"), ("kl", "KL divergence"),
         ("perplexity", "Perplexity"), ("hellaswag", "HellaSwag"), ("small_vs_large", "Small vs large")]
PAYLOAD = '<script>window.__pwned = 1</script><img src="x" onerror="window.__pwned = 2"> ok'
OTHER = "other: a hub id or a local folder…"
HOSTILE_NAME = "**bold** [link](http://example.invalid) ![img](http://example.invalid/x.png)"
HOSTILE_FILE = "![x](http://example.invalid/y.png).txt"
WORD_JOINER = "\u2060"  # lab_cache.md_escape puts it before an autolink's ":", "." or "@"; it is invisible
LOCAL_HOSTS = {"127.0.0.1", "localhost"}


def record_hosts(page, hosts: set[str]) -> None:
    """Add the host of every http(s)/ws request the page makes to `hosts`."""
    def seen(request) -> None:
        url = urlsplit(request.url)
        if url.scheme in ("http", "https", "ws", "wss"):
            hosts.add(url.hostname)

    page.on("request", seen)


def check_page(page, label: str) -> None:
    assert page.get_by_text("Small vs large").count() > 0, f"{label}: the app's navigation is missing"
    assert page.locator('[data-testid="stException"]').count() == 0, label
    errors = page.locator('[data-testid="stAlertContentError"]').all_inner_texts()
    assert not errors, (label, errors)


@pytest.fixture(scope="module")
def server():
    with streamlit_server() as (url, _):
        yield url


def test_two_first_visits_at_once(server):
    """A new server process whose first two sessions start together (the Overview and MAUVE,
    two tabs): both render without an error. Their first calls import the model libraries;
    imported from two threads at once, they failed with "cannot import name 'AutoModel'".
    The module's server is new here: this is the first test of the module to use it."""
    if not Path(CHROMIUM).exists():
        pytest.fail("Debian's chromium is not installed; `make test` installs it (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    OUT.mkdir(exist_ok=True)
    hosts: set[str] = set()
    url = server
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        context = browser.new_context(viewport={"width": 1400, "height": 1600})
        tabs = {"overview": context.new_page(), "mauve": context.new_page()}
        for path, tab in tabs.items():
            record_hosts(tab, hosts)
            tab.goto(f"{url}/{'' if path == 'overview' else path}", wait_until="commit")  # don't wait: start both
        for path, tab in tabs.items():
            _settle(tab)
            check_page(tab, path)
            tab.screenshot(path=str(OUT / f"first-visits-{path}.png"), full_page=True)
        assert "How far" in tabs["overview"].locator("h1").first.inner_text()
        assert tabs["mauve"].locator('[data-testid="stMetricValue"]').count() >= 4  # MAUVE, its CI and the KLs
        browser.close()
    assert hosts <= LOCAL_HOSTS, hosts


def test_every_page_in_chromium(server):
    if not Path(CHROMIUM).exists():
        pytest.fail("Debian's chromium is not installed; `make test` installs it (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    OUT.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1600})
        hosts: set[str] = set()
        record_hosts(page, hosts)
        for path, title in PAGES:
            page.goto(f"{server}/{path}")
            _settle(page)
            assert title in page.locator("h1").first.inner_text()
            check_page(page, path)
            page.screenshot(path=str(OUT / f"{path or 'overview'}.png"), full_page=True)
        # move the KL page's P(A) slider (a range input of its chart) with the keyboard and watch KL(P||Q) change
        page.goto(f"{server}/kl")
        _settle(page)
        kl = page.locator(".vega-embed svg text").filter(has_text="KL(P‖Q) = ").first
        before = kl.text_content()
        page.locator('.vega-bindings input[name="pq_pa"]').focus()
        for _ in range(10):
            page.keyboard.press("ArrowRight")
        time.sleep(1)
        _settle(page)
        assert kl.text_content() != before
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
        # Markdown in a typed model name and in an uploaded file's name is shown as its characters
        page.locator('[data-testid="stSelectbox"]').first.click()
        page.get_by_role("option", name=OTHER).click()
        _settle(page)
        name_box = page.get_by_label("hub id (owner/name) or local folder")
        name_box.fill(HOSTILE_NAME)
        name_box.press("Enter")
        _settle(page)
        page.locator('[data-testid="stFileUploader"] input[type="file"]').set_input_files(
            files=[{"name": HOSTILE_FILE, "mimeType": "text/plain", "buffer": b" \n"}])
        _settle(page)
        alerts = page.locator('[data-testid="stAlertContentError"]').all_inner_texts()
        shown = [t.replace(WORD_JOINER, "") for t in alerts]
        assert any(HOSTILE_NAME in t for t in shown), shown
        assert any(HOSTILE_FILE in t and "empty" in t for t in shown), shown
        assert page.locator('img[src*="example.invalid"]').count() == 0
        assert page.locator('a[href*="example.invalid"]').count() == 0
        assert page.locator('[data-testid="stAlertContentError"] strong').count() == 0
        page.screenshot(path=str(OUT / "perplexity-markdown-names.png"), full_page=True)
        browser.close()
    assert hosts <= LOCAL_HOSTS, hosts  # no CDN font for the page icon, no image from a user's Markdown


def test_an_lm_eval_run_joins_the_hellaswag_page(server, tmp_path):
    """An lm-eval samples file (tests/fixtures/lm_eval, written by lm-eval itself on the bundled
    SmolLM2) uploaded on the HellaSwag page joins the comparison: the models are scored on its 8
    doc_ids and SmolLM2 picks what lm-eval's run of SmolLM2 picked on every item. A file with a
    broken line gets one error that names the line."""
    from playwright.sync_api import sync_playwright

    fixture = ROOT / "tests" / "fixtures" / "lm_eval" / "samples_hellaswag_smollm2.jsonl"
    lines = fixture.read_text().splitlines(keepends=True)
    bad = tmp_path / "samples_hellaswag_bad.jsonl"
    bad.write_text("".join(lines[:2]) + "{not json\n" + "".join(lines[3:]))
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1600})
        page.goto(f"{server}/hellaswag?models=smollm2-135m")
        _settle(page)
        page.get_by_text("Bring your own lm-eval run").click()
        page.locator('input[type="file"]').set_input_files(str(fixture))
        time.sleep(1)
        _settle(page)
        check_page(page, "hellaswag with an lm-eval file")
        assert page.get_by_text("Items: the 8 doc_ids of samples_hellaswag_smollm2.jsonl").count() == 1
        heading = page.get_by_text("Where lm-eval: samples_hellaswag_smollm2.jsonl and smollm2-135m disagree")
        assert "(0 of 8 items)" in heading.inner_text()
        page.screenshot(path=str(OUT / "hellaswag-lm-eval.png"), full_page=True)
        page.locator('input[type="file"]').set_input_files(str(bad))
        time.sleep(1)
        _settle(page)
        errors = page.locator('[data-testid="stAlertContentError"]').all_inner_texts()
        assert len(errors) == 1 and "line 3" in errors[0] and "samples_hellaswag_bad.jsonl" in errors[0], errors
        browser.close()
