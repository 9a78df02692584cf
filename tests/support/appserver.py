"""A real `streamlit run app.py` on a free loopback port, and Debian's Chromium to drive it.

Shared by the browser, live and load tests and by bench/ (not a test module itself).
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]
BUSY = ('[data-testid="stStatusWidget"], [data-testid="stSkeleton"], [data-testid="stSpinner"], '
        '[data-testid="stProgress"]')


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def streamlit_server(cwd: Path = ROOT, **env: str):
    """Yield (url, process) of `streamlit run app.py` in `cwd` (this checkout by default), bound to
    127.0.0.1 only, with this process's environment plus `env`."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port),
                             "--server.address", "127.0.0.1", "--server.headless", "true"],
                            cwd=cwd, env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(240):
            try:
                urllib.request.urlopen(f"{url}/_stcore/health", timeout=2)
                break
            except OSError:
                if proc.poll() is not None:
                    raise RuntimeError(f"streamlit in {cwd} exited at start-up") from None
                time.sleep(0.5)
        yield url, proc
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def settle(page, timeout_s: int = 600, quiet_s: float = 1.0) -> None:
    """Wait until the page has a title and no script run, spinner or progress bar has shown for
    `quiet_s` on end (a rerun marks the page busy within a few tenths of a second of the input
    that started it), polling every 0.1 s."""
    page.wait_for_selector("h1", timeout=timeout_s * 1000)
    end = time.monotonic() + timeout_s
    quiet_since = time.monotonic()
    while time.monotonic() < end:
        if page.locator(BUSY).count():
            quiet_since = time.monotonic()
        elif time.monotonic() - quiet_since >= quiet_s:
            return
        time.sleep(0.1)


def rss_mb(pid: int) -> float:
    """Resident memory of a process (Linux /proc), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")
