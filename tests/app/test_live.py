"""Sliders that move with the hand, and links that open a page where its sender left it.

In Debian's Chromium against a real `streamlit run app.py` (tests/support/appserver.py):
- the numbers the charts compute in the browser (app_pages/_live.py) equal evalcore's, read
  from the rendered SVG after setting each range input: the KL page's simplex, smoothing and
  Bregman charts against evalcore.metrics.kl, the MAUVE page's α chart against MauveLab.point;
- a drag of α changes the KL figures before the browser sends the server anything (every rerun
  starts with a message from the browser; the page's WebSocket.send is counted), and the
  rerun that follows once α rests only writes α into the URL: the chart stays the same node;
- a link with α, k and the model opens the MAUVE page with those values; a link with bad
  values opens it with the defaults and one warning naming what was ignored.
"""
from __future__ import annotations

import math
import re
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pytest
from tests.support.appserver import ARGS, CHROMIUM, ROOT, streamlit_server
from tests.support.appserver import settle as _settle

from evalcore.metrics import kl as K

OUT = ROOT / "test-output"
# every WebSocket message the page sends, with its time (a rerun always starts with one)
COUNT_SENDS = """
window.__sent = [];
const send = WebSocket.prototype.send;
WebSocket.prototype.send = function (data) { window.__sent.push(performance.now()); return send.call(this, data); };
"""
# from now on, the time of each animation frame at which the chart's text `label = …` differs from `before`
WATCH_TEXT = """([label, before]) => {
  window.__start = performance.now(); window.__changed = null;
  const read = () => [...document.querySelectorAll('.vega-embed svg text')].map(t => t.textContent)
                      .find(t => t.startsWith(label + ' = '));
  const poll = () => { if (read() !== before) { window.__changed = performance.now(); } else { requestAnimationFrame(poll); } };
  requestAnimationFrame(poll);
}"""
SET_RANGE = """([name, value]) => {
  const el = document.querySelector(`.vega-bindings input[name="${name}"]`);
  el.value = value; el.dispatchEvent(new Event('input', {bubbles: true}));
}"""


def chart_numbers(page) -> dict[str, str]:
    """The charts' `name = value` texts (SVG), the first of each name."""
    out: dict[str, str] = {}
    for t in page.locator(".vega-embed svg text").all_text_contents():
        if " = " in t:
            name, _, value = t.partition(" = ")
            out.setdefault(name, value)
    return out


def num(text: str) -> float:
    return math.inf if text == "∞" else float(text)


def close(shown: str, expected: float, digits: int = 4) -> bool:
    """`shown` is `expected` printed with `digits` decimals (∞ for +inf)."""
    if math.isinf(expected):
        return shown == "∞"
    return abs(num(shown) - expected) <= 0.5 * 10 ** -digits + 1e-9


def set_inputs(page, values: dict[str, float], wait_label: str, wait_text: str) -> dict[str, str]:
    for name, value in values.items():
        page.evaluate(SET_RANGE, [name, str(value)])
    page.wait_for_function("([l, t]) => [...document.querySelectorAll('.vega-embed svg text')]"
                           ".some(e => e.textContent === l + ' = ' + t)", arg=[wait_label, wait_text], timeout=10_000)
    return chart_numbers(page)


def open_page(page, url: str) -> None:
    page.goto(url)
    _settle(page)
    page.wait_for_selector(".vega-bindings input", timeout=600_000)
    assert page.locator('[data-testid="stException"]').count() == 0


def slider_value(page, label: str) -> str:
    """What a Streamlit slider's thumb shows."""
    box = page.locator('[data-testid="stSlider"]').filter(has_text=label)
    return box.locator('[data-testid="stSliderThumbValue"]').first.inner_text()


@pytest.fixture(scope="module")
def browser_page():
    if not Path(CHROMIUM).exists():
        pytest.fail("Debian's chromium is not installed; `make test` installs it (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    OUT.mkdir(exist_ok=True)
    with streamlit_server() as (url, _), sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1800})
        page.add_init_script(COUNT_SENDS)
        yield url, page
        browser.close()


KL_SETTINGS = [  # P(A), P(B), Q(A), Q(B), log10 ε
    (0.6, 0.3, 0.3, 0.3, -2.0),
    (0.9, 0.3, 0.2, 0.8, -4.0),  # P(B) and Q(B) capped at what A leaves
    (1.0, 0.0, 0.5, 0.5, -6.0),  # P on A alone: KL(P‖Q₀) finite
    (0.2, 0.5, 0.0, 1.0, -1.0),  # Q(C) = 0 < P(C): KL(P‖Q) = ∞
    (0.33, 0.33, 0.34, 0.33, -0.7),
]


def test_kl_charts_compute_what_evalcore_computes(browser_page):
    url, page = browser_page
    open_page(page, f"{url}/kl")
    for pa, pb, qa, qb, le in KL_SETTINGS:
        p, q = _three(pa, pb), _three(qa, qb)
        shown = set_inputs(page, {"pq_pa": pa, "pq_pb": pb, "pq_qa": qa, "pq_qb": qb, "pq_log_eps": le},
                           "P", "(" + ", ".join(f"{x:.2f}" for x in p) + ")")
        eps = 10 ** le
        q0 = np.array([0.5, 0.5, 0.0])
        expected = {"KL(P‖Q)": K.kl(p, q), "KL(Q‖P)": K.kl(q, p), "JS(P,Q)": K.js(p, q), "H(P)": K.entropy(p),
                    "H(P,Q)": K.cross_entropy(p, q), "KL(P‖Q₀)": K.kl(p, q0),
                    "KL(P‖smoothed Q₀)": K.kl(p, K.smooth(q0, amount=eps))}
        for name, value in expected.items():
            assert close(shown[name], float(value)), (pa, pb, qa, qb, le, name, shown[name], float(value))
        assert shown["Q"] == "(" + ", ".join(f"{x:.2f}" for x in q) + ")"
    for bp, bq in [(0.8, 0.4), (0.01, 0.99), (0.5, 0.5), (0.37, 0.62)]:
        for name, value in {"breg_p": bp, "breg_q": bq}.items():
            page.evaluate(SET_RANGE, [name, str(value)])
        page.wait_for_timeout(500)  # Vega redraws on the next animation frame
        gap, kl = re.findall(r"[\d.]+", chart_numbers(page)["gap at P"])
        p2, q2 = [bp, 1 - bp], [bq, 1 - bq]
        assert close(gap, float(K.bregman(p2, q2))) and close(kl, float(K.kl(p2, q2))), (bp, bq, gap, kl)
    page.screenshot(path=str(OUT / "live-kl.png"), full_page=True)


def _three(a: float, b: float) -> np.ndarray:
    b = min(b, 1 - a)
    return np.array([a, b, max(0.0, 1 - a - b)])


@pytest.fixture(scope="module")
def lab():
    """The MAUVE page's lab for smollm2-135m on 80 contexts, from the same store as the server's."""
    from evalcore import runs
    from evalcore.data import HellaSwag
    from evalcore.models import load_embedder, load_model
    from evalcore.scoring import Decoding
    from evalcore.store import Store

    return runs.run_mauve(load_model("smollm2-135m", device="auto", dtype="float32"), load_embedder(device="auto"),
                          list(range(80)), Decoding(temperature=1.0, top_p=0.95, seed=0), dataset=HellaSwag(),
                          store=Store(None))


def test_mauve_alpha_chart_computes_what_mauvelab_computes(browser_page, lab):
    url, page = browser_page
    open_page(page, f"{url}/mauve?model=smollm2-135m&n=80&k=6")
    for alpha in (0.01, 0.3, 0.5, 0.77, 0.99):
        shown = set_inputs(page, {"mix_alpha": alpha}, "α", f"{alpha:.2f}")
        pt = lab.point(alpha, 6)
        assert close(shown["KL(P‖R_α)"], pt["kl_p_r"]) and close(shown["KL(Q‖R_α)"], pt["kl_q_r"]), (alpha, shown, pt)
        x, y = map(float, re.findall(r"[\d.]+", shown["point"]))
        assert abs(x - pt["x"]) <= 5e-5 and abs(y - pt["y"]) <= 5e-5, (alpha, shown["point"], pt)
    page.screenshot(path=str(OUT / "live-mauve.png"), full_page=True)


def test_alpha_drag_redraws_before_any_rerun(browser_page):
    url, page = browser_page
    open_page(page, f"{url}/mauve?model=smollm2-135m&n=80&k=8&alpha=0.2")
    before = chart_numbers(page)
    assert before["α"] == "0.20"
    page.evaluate("document.querySelector('.vega-embed svg').__mark = 'the first drawing'")
    page.evaluate(WATCH_TEXT, ["KL(P‖R_α)", f"KL(P‖R_α) = {before['KL(P‖R_α)']}"])
    box = page.locator('.vega-bindings input[name="mix_alpha"]').bounding_box()
    y = box["y"] + box["height"] / 2
    page.mouse.move(box["x"] + box["width"] * 0.2, y)
    page.mouse.down()
    for i in range(1, 11):
        page.mouse.move(box["x"] + box["width"] * (0.2 + 0.05 * i), y)
    page.mouse.up()
    changed, start, sent = page.evaluate("[window.__changed, window.__start, window.__sent]")
    during = [t for t in sent if t > start]
    assert changed is not None, "the KL figures did not follow the drag"
    assert not during or changed < min(during), (changed, during)  # redrawn before the browser said anything
    after = chart_numbers(page)
    assert after["KL(P‖R_α)"] != before["KL(P‖R_α)"] and after["KL(Q‖R_α)"] != before["KL(Q‖R_α)"]
    # once α rests, it goes to the server for the URL, and the chart is not drawn again
    page.wait_for_function(f"location.search.includes('alpha={after['α'].rstrip('0').rstrip('.')}')", timeout=30_000)
    assert page.evaluate("document.querySelector('.vega-embed svg').__mark") == "the first drawing"
    assert chart_numbers(page) == after
    page.screenshot(path=str(OUT / "live-mauve-dragged.png"), full_page=True)


def test_a_link_opens_the_page_as_sent(browser_page):
    url, page = browser_page
    open_page(page, f"{url}/mauve?alpha=0.3&k=12&model=gemma3-270m&n=40")  # 40 contexts: the fewest
    assert page.locator('[data-testid="stAlertContentWarning"]').count() == 0
    assert slider_value(page, "clusters k") == "12"
    assert "gemma3-270m" in slider_value(page, "model size")
    assert chart_numbers(page)["α"] == "0.30"
    assert page.locator('.vega-bindings input[name="mix_alpha"]').input_value() == "0.3"
    query = parse_qs(urlsplit(page.url).query)
    assert query["alpha"] == ["0.3"] and query["k"] == ["12"] and query["model"] == ["gemma3-270m"]
    assert query["n"] == ["40"]
    page.screenshot(path=str(OUT / "live-link.png"), full_page=True)

    open_page(page, f"{url}/mauve?alpha=1.5&k=zz&model=no-such-model")
    warnings = page.locator('[data-testid="stAlertContentWarning"]').all_inner_texts()
    assert len(warnings) == 1, warnings
    assert all(w in warnings[0] for w in ("alpha", "k=", "model", "no-such-model")), warnings
    assert slider_value(page, "clusters k") == "8" and "smollm2-135m" in slider_value(page, "model size")
    assert chart_numbers(page)["α"] == "0.50"
    query = parse_qs(urlsplit(page.url).query)  # the URL now says what the page shows
    assert query["alpha"] == ["0.5"] and query["k"] == ["8"] and query["model"] == ["smollm2-135m"]
    page.screenshot(path=str(OUT / "live-bad-link.png"), full_page=True)
