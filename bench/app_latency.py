"""The MAUVE page's latency in Chromium: from the input event to the changed numbers on screen.

    python -m bench.app_latency [--repeats 5] [--before /tmp/before] [--only after]

Three moves, each by the keyboard on the focused control, timed in the page (performance.now()
at the keydown, then every animation frame until the watched text differs):
- α: one step of the α slider (before: Streamlit's slider, a server rerun; after: the chart's
  range input, computed in the browser).
- k: one step of the k slider to a k not fitted yet in this server (the server is warm).
- model: smollm2-135m <-> gemma3-270m on the size slider, both labs already cached in the server.
Watched: before, the metrics (its KL(P‖R_α) figures are metrics, its charts canvases); after,
the α chart's SVG texts (KL(P‖R_α), KL(Q‖R_α): they change once the chart is redrawn).
Each idle, then under load (two processes spinning on the CPU for the duration, one per core).
"before" is the code at HEAD (`git archive HEAD | tar -x -C DIR`, made here when DIR is absent),
served with the same virtual environment and the same results store; "after" the work tree.
Both need the MAUVE labs of both models on 80 contexts in the store (the bench visits both first).
Prints one table, median and max in milliseconds.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

try:  # the app-server helpers the tests share: the package tests.support, found from the repository root
    from tests.support.appserver import ARGS, BUSY, CHROMIUM, ROOT, streamlit_server
except ModuleNotFoundError as e:
    if e.name not in ("tests", "tests.support"):
        raise
    sys.exit("run it as a module from the repository root: python -m bench.app_latency")

# The time of the first keydown from now on, and of the first animation frame after it at which
# the text of the elements matching `selector` (joined) differs from what it is now.
WATCH = """(selector) => {
  const read = () => [...document.querySelectorAll(selector)].map(e => e.textContent).join('|');
  const before = read();
  window.__lat = undefined; let t0 = null; const start = performance.now();
  document.addEventListener('keydown', () => { if (t0 === null) t0 = performance.now(); }, {capture: true, once: true});
  const poll = () => {
    if (t0 !== null && read() !== before) { window.__lat = performance.now() - t0; return; }
    if (performance.now() - start > 60000) { window.__lat = null; return; }
    requestAnimationFrame(poll);
  };
  requestAnimationFrame(poll);
}"""
METRICS = '[data-testid="stMetricValue"]'
CHART_TEXT = ".vega-embed svg text"


@contextmanager
def cpu_load(on: bool):
    """Two processes spinning on the CPU while the block runs (none when `on` is false)."""
    procs = [subprocess.Popen([sys.executable, "-c", "import time\nend = time.time() + 1800\nwhile time.time() < end: pass"])
             for _ in range(2 if on else 0)]
    try:
        yield
    finally:
        for p in procs:
            p.terminate()
            p.wait(timeout=10)


def settle(page, timeout_s: float = 600) -> None:
    """Until no script run, spinner or progress bar shows, twice 0.3 s apart."""
    end = time.time() + timeout_s
    quiet = 0
    while time.time() < end and quiet < 2:
        quiet = quiet + 1 if page.locator(BUSY).count() == 0 else 0
        page.wait_for_timeout(300)


def slider(page, label: str):
    return page.locator('[data-testid="stSlider"]').filter(has_text=label).locator('input[type="range"]').first


def measure(page, control, key: str, watch: str) -> float | None:
    """Milliseconds from pressing `key` on `control` to the changed text of `watch`."""
    control.focus()
    page.evaluate(WATCH, watch)
    page.keyboard.press(key)
    page.wait_for_function("window.__lat !== undefined", timeout=90_000)
    lat = page.evaluate("window.__lat")
    settle(page)
    page.wait_for_timeout(400)
    return lat


def run_version(name: str, cwd: Path, repeats: int, browser, loads: list[bool], moves: set[str]) -> dict:
    after = name == "after"
    out: dict = {}
    with streamlit_server(cwd=cwd) as (url, _):
        page = browser.new_page(viewport={"width": 1400, "height": 1600})
        page.goto(f"{url}/mauve")
        page.wait_for_selector(METRICS, timeout=900_000)
        settle(page)
        if "model" in moves:
            slider(page, "model size").focus()  # both labs into the server's memory: later switches are cached ones
            page.keyboard.press("ArrowRight")
            settle(page, 1800)
            page.keyboard.press("ArrowLeft")
            settle(page)
        for load in loads:
            with cpu_load(load):
                tag = "load" if load else "idle"
                alpha = (page.locator('.vega-bindings input[name="mix_alpha"]') if after
                         else slider(page, "α (mixture weight on P)"))
                watch = CHART_TEXT if after else METRICS  # before: the chart is a canvas, the figures metrics
                if "alpha" in moves:
                    out[("α drag", tag)] = [measure(page, alpha, "ArrowRight" if i % 2 == 0 else "ArrowLeft", watch)
                                            for i in range(repeats)]
                if "k" in moves:
                    out[("k change (new k, warm)", tag)] = [
                        measure(page, slider(page, "clusters k"), "ArrowRight", watch) for _ in range(repeats)]
                    for _ in range(repeats):  # back to k = 8, where both models' results are cached
                        slider(page, "clusters k").focus()
                        page.keyboard.press("ArrowLeft")
                        settle(page)
                if "model" in moves:
                    out[("model switch (cached)", tag)] = [
                        measure(page, slider(page, "model size"), "ArrowRight" if i % 2 == 0 else "ArrowLeft", watch)
                        for i in range(repeats if repeats % 2 == 0 else repeats + 1)]
                settle(page)
        page.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--before", type=Path, default=Path("/tmp/before"), help="HEAD's code, extracted here if absent")
    ap.add_argument("--after", type=Path, default=ROOT, help="the code to time as 'after' (default: this work tree)")
    ap.add_argument("--only", choices=["before", "after"], default=None)
    ap.add_argument("--no-load", action="store_true", help="idle only")
    ap.add_argument("--moves", default="alpha,k,model", help="which of alpha,k,model to time (model: both labs needed)")
    args = ap.parse_args()
    if args.only != "after" and not (args.before / "app.py").exists():
        args.before.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(["git", "archive", "HEAD"], cwd=ROOT, check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(args.before)], input=archive, check=True)
    from playwright.sync_api import sync_playwright

    versions = [(v, args.before if v == "before" else args.after) for v in ("before", "after") if args.only in (None, v)]
    loads = [False] if args.no_load else [False, True]
    results = {}
    print(f"load average at start: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; {args.repeats} repeats", flush=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        for name, cwd in versions:
            t = time.time()
            results[name] = run_version(name, cwd, args.repeats, browser, loads, set(args.moves.split(",")))
            print(f"{name}: measured in {time.time() - t:.0f} s", flush=True)
        browser.close()
    print("| move | condition | " + " | ".join(f"{v} median / max (ms)" for v, _ in versions) + " |")
    print("|---|---|" + "---|" * len(versions))
    for key in results[versions[0][0]]:
        cells = []
        for v, _ in versions:
            xs = [x for x in results[v][key] if x is not None]
            missed = len(results[v][key]) - len(xs)
            cells.append((f"{statistics.median(xs):.0f} / {max(xs):.0f}" if xs else "-")
                         + (f" ({missed} no change)" if missed else ""))
        print(f"| {key[0]} | {key[1]} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
