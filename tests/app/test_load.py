"""Load: several real browser sessions on one `streamlit run` (loopback only), the KL page's
sliders (computed in the browser) moved while other sessions run inference; their latency,
memory bounded (one copy of each model per process), two sessions on the same work agree.
"""
from __future__ import annotations

import sqlite3
import statistics
import time
from pathlib import Path

import pytest
from tests.support.appserver import ARGS, CHROMIUM, rss_mb, settle, streamlit_server

SLIDER_SESSIONS = 4
MOVES = 3


KL_TEXT = "[...document.querySelectorAll('.vega-embed svg text')].map(t => t.textContent).find(t => t.startsWith('KL(P‖Q) = '))"


def _move_and_time(page) -> float:
    """Press → on the KL page's first in-chart slider; seconds until the chart's KL(P‖Q) changes
    (computed in the browser: it must not wait for the busy server)."""
    before = page.evaluate(KL_TEXT)
    page.locator(".vega-bindings input[type=range]").first.focus()
    t0 = time.perf_counter()
    page.keyboard.press("ArrowRight")
    while page.evaluate(KL_TEXT) == before:
        if time.perf_counter() - t0 > 60:
            raise AssertionError("the slider did not change the number within 60 s")
        time.sleep(0.02)
    return time.perf_counter() - t0


def test_sessions_under_load(tmp_path: Path, record_property):
    if not Path(CHROMIUM).exists():
        pytest.fail("Debian's chromium is not installed; `make test` installs it (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    store = tmp_path / "load.sqlite"  # fresh: the HellaSwag sessions must run inference
    with streamlit_server(EVALCORE_STORE=str(store)) as (url, proc), sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        new_page = lambda: browser.new_context(viewport={"width": 1200, "height": 900}).new_page()
        # two sessions start the same HellaSwag work at once (two models x 20 items, not stored yet)
        workers = [new_page(), new_page()]
        for w in workers:
            w.goto(f"{url}/hellaswag")
        # while they score, four sessions move the KL page's sliders (computed in the chart)
        sliders = [new_page() for _ in range(SLIDER_SESSIONS)]
        for s in sliders:
            s.goto(f"{url}/kl")
            s.wait_for_selector(".vega-bindings input[type=range]", timeout=120_000)
        busy = workers[0].locator('[data-testid="stProgress"]').count() + workers[1].locator('[data-testid="stProgress"]').count()
        lat = [_move_and_time(s) for _ in range(MOVES) for s in sliders]
        for w in workers:
            settle(w)
        rss = rss_mb(proc.pid)
        tables = [w.get_by_text("McNemar p").first.inner_text() for w in workers]
        errors = sum(w.locator('[data-testid="stAlertContentError"], [data-testid="stException"]').count()
                     for w in [*workers, *sliders])
        browser.close()

    rows = sqlite3.connect(store).execute("SELECT op, COUNT(*), COUNT(DISTINCT key) FROM records GROUP BY op").fetchall()
    report = {"sessions": SLIDER_SESSIONS + len(workers), "slider_moves": len(lat),
              "slider_latency_median_s": round(statistics.median(lat), 3), "slider_latency_max_s": round(max(lat), 3),
              "inference_running_during_moves": busy > 0, "server_rss_mb": round(rss), "store_rows": rows}
    print("load:", report)
    for k, v in report.items():
        record_property(k, v)
    assert errors == 0
    assert tables[0] == tables[1] and "acc(smollm2-135m)" in tables[0]  # both sessions see the same numbers
    ops = {op: (n, d) for op, n, d in rows}
    # 2 models x 20 items, each once: no duplicates, none lost (the KL page's choice-level KL scores the same 20)
    assert ops["hellaswag"] == (40, 40) and "hellaswag_uncond" not in ops  # acc_mutual_info's pass: off by default
    assert statistics.median(lat) < 3.0, lat  # responsive under load (2 CPU cores, inference running)
    # both bundled models (SmolLM2 float32, Gemma bfloat16: about 1.1 GB of weights), the embedder and
    # the runtime, each loaded once per process
    assert rss < 3500, rss
