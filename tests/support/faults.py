"""Fault injection for the CLI: kill, corrupt, fill the disk, lock the folder (bad input:
bad_inputs.py; the CLI runners: clirun.py).

Shared by `tests/cli/test_faults.py` and `bench/reliability_report.py` (not a test file itself).
Every fault runs the real CLI in a subprocess:

    SIGKILL          start a run, poll its store until N rows are committed, kill -9, rerun
    corrupt store    garbage bytes in the middle of the SQLite file, or the file cut to half
    disk full        RLIMIT_FSIZE in the child (SIGXFSZ ignored): writes past the limit fail (EFBIG)
    read-only        the store's folder and file made read-only; as root, which ignores file
                     modes, the child runs with CAP_DAC_OVERRIDE and CAP_FOWNER dropped
"""
from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# the CLI in a child or in this process (clirun); the tests and bench/ also use these as F.*
from tests.support.clirun import (  # noqa: F401
    MODEL, NO_MODEL_GUARD, ROOT, TRACEBACKS, Run, cli, cli_in_process, cli_shared_models, env, non_finite_stored,
    one_line_error, popen, read_json,
)
from tests.support.damage import (  # noqa: F401 (read_only_runner: also F.* in the tests)
    file_size_limit, garble_digits, garble_middle, make_read_only, make_writable, read_only_runner, truncate_half,
    value_prefix,
)

PPL_LIMIT = 8  # Wikipedia passages in each perplexity run
PPL_BATCH_TOKENS = 300  # about 2 passages per forward batch: 5 store writes per run
MAUVE_LIMIT = 16  # HellaSwag contexts, generated in 2 batches of 8 (`--batch-size`)


# ----------------------------------------------------------------------------- the runs under test

def ppl_args(db: Path, out: Path, *extra: str) -> list[str]:
    return ["perplexity", "--model", MODEL, "--corpus", "wikipedia", "--limit", str(PPL_LIMIT),
            "--batch-tokens", str(PPL_BATCH_TOKENS), "--per-token", "--store", str(db), "--out", str(out), *extra]


def with_limit(args: list[str], n: int) -> list[str]:
    i = args.index("--limit")
    return [*args[: i + 1], str(n), *args[i + 2 :]]


def mauve_args(db: Path, out: Path) -> list[str]:
    return ["mauve", "--model", MODEL, "--limit", str(MAUVE_LIMIT), "--batch-size", str(MAUVE_LIMIT // 2), "--store",
            str(db), "--out", str(out)]


def nlls(result: dict[str, Any]) -> list[list[float]]:
    """Per-text NLLs of a `perplexity --per-token` JSON."""
    return [t["nll"] for t in result["texts"]]


def max_nll_diff(a: dict[str, Any], b: dict[str, Any]) -> float:
    x, y = nlls(a), nlls(b)
    if [len(t) for t in x] != [len(t) for t in y]:
        return float("inf")
    return max((abs(u - v) for s, t in zip(x, y) for u, v in zip(s, t)), default=0.0)


def rows(db: Path, op: str | None = None) -> int:
    """Committed rows in a store, read without the Store class (0 while it does not exist yet)."""
    if not Path(db).exists():
        return 0
    try:
        c = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            q = "SELECT count(*) FROM records" + (" WHERE op = ?" if op else "")
            return c.execute(q, (op,) if op else ()).fetchone()[0]
        finally:
            c.close()
    except sqlite3.Error:
        return 0


def records(db: Path, op: str) -> dict[str, Any]:
    """key -> value of every record of one operation (e.g. the generated texts)."""
    c = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return {k: json.loads(v) for k, v in c.execute("SELECT key, value FROM records WHERE op = ?", (op,))}
    finally:
        c.close()


def integrity(db: Path) -> str:
    c = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return c.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        c.close()


def kill_after_rows(args: list[str], db: Path, *, op: str, at_least: int, total: int,
                    timeout: float = 240) -> tuple[int, str]:
    """Start a run, SIGKILL it once `at_least` rows of `op` are committed (and before all
    `total` are); returns (rows kept, what happened)."""
    p = popen(args)
    deadline = time.time() + timeout
    n = 0
    while time.time() < deadline and p.poll() is None:
        n = rows(db, op)
        if n >= at_least:
            break
        time.sleep(0.05)
    if p.poll() is not None:
        _, err = p.communicate()
        return rows(db, op), f"finished before the kill (exit {p.returncode}, {n} rows): {err.strip()[-300:]}"
    os.kill(p.pid, signal.SIGKILL)
    p.communicate()
    kept = rows(db, op)
    return kept, f"killed with {kept}/{total} rows committed"


def seeded_rows(seed: int, low: int, high: int) -> int:
    """A kill point drawn from a seeded generator: reproducible, yet not always the same batch."""
    return random.Random(seed).randint(low, high)


# ----------------------------------------------------------------------------- scenarios
# Each injects one fault into real CLI runs and returns an Outcome: named checks, rows
# committed when the fault struck, rows lost. The tests assert on them; the report prints them.
# `runner` runs the CLI where no process boundary is under test (a clean reference run, a run on
# a damaged or locked store): `cli`, a child process, by default (the report); the tests pass
# `cli_shared_models`, in their own process with the session's loaded model. Kills, resource
# limits, dropped capabilities and two processes at once always run children.

Runner = Callable[..., Run]

@dataclass
class Outcome:
    fault: str
    checks: dict[str, bool]  # what must hold -> whether it held
    rows_before: int | None = None  # rows committed when the fault struck
    rows_lost: int = 0  # committed rows a later run could not read back
    detail: str = ""
    skipped: str = ""  # why the fault could not be injected here

    @property
    def survived(self) -> bool:
        return not self.skipped and all(self.checks.values()) and self.rows_lost == 0

    def explain(self) -> str:
        bad = [k for k, v in self.checks.items() if not v]
        return f"{self.fault}: failed {bad}, rows lost {self.rows_lost}; {self.detail}"


@dataclass(frozen=True)
class Reference:
    """A clean perplexity run: its JSON and its store."""

    result: dict[str, Any]
    db: Path


def reference_perplexity(folder: Path, *, runner: Runner = cli) -> Reference:
    folder.mkdir(parents=True, exist_ok=True)
    run = runner(ppl_args(folder / "s.sqlite", folder / "o.json"))
    if run.rc != 0:
        raise RuntimeError(f"the clean perplexity run failed: {run.err.strip()[-500:]}")
    return Reference(run.json(folder / "o.json"), folder / "s.sqlite")


def _copy_store(src: Path, folder: Path) -> Path:
    import shutil

    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(src, folder / "s.sqlite")
    return folder / "s.sqlite"


def stderr_lines(err: str) -> list[str]:
    return [x for x in err.splitlines() if x.strip()]


def _last(err: str) -> str:
    lines = stderr_lines(err)
    return lines[-1][:150] if lines else "(none)"


def perplexity_sigkill(folder: Path, ref: Reference, *, seed: int) -> Outcome:
    """Kill -9 once a seeded number (1..4) of texts is committed; the rerun must read every
    committed row back and end with the clean run's NLLs."""
    folder.mkdir(parents=True, exist_ok=True)
    db = folder / "s.sqlite"
    at = seeded_rows(seed, 1, 4)
    kept, what = kill_after_rows(ppl_args(db, folder / "killed.json"), db, op="perplexity", at_least=at,
                                 total=PPL_LIMIT)
    run = cli(ppl_args(db, folder / "o.json"))
    out = run.json(folder / "o.json") if run.rc == 0 else {}
    cached = out.get("timing", {}).get("cached_texts", -1)
    return Outcome(f"perplexity SIGKILL (seed {seed}, after >= {at} rows)", {
        "killed mid-run": 1 <= kept < PPL_LIMIT,
        "rerun exits 0": run.rc == 0,
        "rerun resumes (cached = kept)": cached == kept,
        "NLLs = clean run (1e-5)": bool(out) and max_nll_diff(out, ref.result) <= 1e-5,
        "store complete, integrity ok": rows(db, "perplexity") == PPL_LIMIT and integrity(db) == "ok",
    }, kept, max(0, kept - cached) if cached >= 0 else kept, f"{what}; rerun read {cached} from the store")


def mauve_sigkill(folder: Path, *, runner: Runner = cli) -> Outcome:
    """Kill -9 after the first generation batch is committed; the rerun must generate only the
    rest, the same texts as a clean run (`runner`'s), and the same MAUVE."""
    import re

    folder.mkdir(parents=True, exist_ok=True)
    ref_db, db = folder / "ref.sqlite", folder / "s.sqlite"
    ref_run = runner(mauve_args(ref_db, folder / "ref.json"))
    kept, what = kill_after_rows(mauve_args(db, folder / "killed.json"), db, op="generate", at_least=1,
                                 total=MAUVE_LIMIT)
    run = cli(["-v", *mauve_args(db, folder / "o.json")])
    m = re.search(r"(\d+) of (\d+) continuations read from the store", run.err)
    read = int(m.group(1)) if m else -1
    ok = ref_run.rc == 0 and run.rc == 0
    out, ref = (run.json(folder / "o.json"), ref_run.json(folder / "ref.json")) if ok else ({}, {})
    return Outcome("MAUVE generation SIGKILL (after the first batch)", {
        "killed mid-generation": 1 <= kept < MAUVE_LIMIT,
        "clean run and rerun exit 0": ok,
        "rerun resumes (read = kept)": read == kept,
        "texts = clean run's": ok and records(db, "generate") == records(ref_db, "generate"),
        "MAUVE = clean run's": ok and out["mauve"] == ref["mauve"] and out["mauve_over_seeds"] == ref["mauve_over_seeds"],
    }, kept, max(0, kept - read) if read >= 0 else kept, f"{what}; rerun read {read} from the store")


DAMAGES = ("garble_middle", "truncate_half", "garble_digits")


def corrupt_store(folder: Path, ref: Reference, damage: str, *, runner: Runner = cli) -> Outcome:
    """Damage a copy of the clean store; the run must say so in one line, recompute, and end
    with the clean numbers and a healthy store whose rows all equal the clean ones."""
    import logging

    from evalcore.store import Store

    db = _copy_store(ref.db, folder)
    if damage == "garble_digits":  # bit rot that leaves valid JSON: only the record's CRC-32 sees it
        garble_digits(db, value_prefix(ref.result["texts"][0]))
    else:
        {"garble_middle": garble_middle, "truncate_half": truncate_half}[damage](db)
    run = runner(ppl_args(db, folder / "o.json"))
    lines = stderr_lines(run.err)
    out = run.json(folder / "o.json") if run.rc == 0 else {}
    warned: list[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = warned.append  # type: ignore[method-assign]
    logging.getLogger("evalcore.store").addHandler(handler)
    try:
        s = Store(db)
        back = s.get_many(records(db, "perplexity"))
        s.close()
    finally:
        logging.getLogger("evalcore.store").removeHandler(handler)
    clean = records(ref.db, "perplexity")
    return Outcome(f"store {damage.replace('_', ' ')}", {
        "run exits 0": run.rc == 0,
        "reported in one line": len(lines) == 1 and ("corrupt" in lines[0] or "checksum" in lines[0]),
        "damaged rows not served": bool(out) and out["timing"]["cached_texts"] < PPL_LIMIT,
        "NLLs and ids = clean run": bool(out) and max_nll_diff(out, ref.result) <= 1e-5
                                    and out["texts"][0]["ids"] == ref.result["texts"][0]["ids"],
        "store healthy after (no warning, rows = clean)": integrity(db) == "ok" and not warned and back == clean,
    }, PPL_LIMIT, PPL_LIMIT - len(back), f"{PPL_LIMIT - out.get('timing', {}).get('cached_texts', 0)} of {PPL_LIMIT} "
       f"recomputed; stderr: {lines[0][:150] if lines else '(none)'}")


def disk_full(folder: Path, ref: Reference, *, limit_bytes: int = 40_000) -> Outcome:
    """Files may not grow past `limit_bytes`: the WAL index (-shm, 32 KiB) fits, the WAL fills
    after a few rows. One line that says what to do; the committed rows stay readable."""
    from evalcore.store import Store

    folder.mkdir(parents=True, exist_ok=True)
    db = folder / "s.sqlite"
    run = cli(ppl_args(db, folder / "o.json"), preexec_fn=file_size_limit(limit_bytes))
    problem = one_line_error(run)
    kept = rows(db, "perplexity")
    s = Store(db)
    back = s.get_many(records(db, "perplexity"))
    s.close()
    clean = records(ref.db, "perplexity")
    return Outcome(f"disk full (RLIMIT_FSIZE {limit_bytes:,} B)", {
        "one line, exit 2": problem is None,
        "says disk full and what to do": "disk full" in run.err and "free disk space" in run.err and "--store" in run.err,
        "fault struck mid-run": 1 <= kept < PPL_LIMIT,
        "says how many rows are kept": f"{kept} result" in run.err,
        "kept rows readable, = clean run's": integrity(db) == "ok" and all(back[k] == clean[k] for k in back),
    }, kept, kept - len(back), f"stderr: {_last(run.err)}")


def read_only(folder: Path, ref: Reference) -> Outcome:
    """The store's folder and file read-only: a fully stored run still succeeds from it; a run
    that must add a row fails in one line that says what to do; no row changes."""
    ro = folder / "ro"
    db = _copy_store(ref.db, ro)
    make_read_only(ro)
    try:
        ok, pre, how = read_only_runner(ro)
        if not ok:
            return Outcome("read-only store folder", {}, skipped=how)
        full = cli(ppl_args(db, folder / "o.json"), preexec_fn=pre)
        out = full.json(folder / "o.json") if full.rc == 0 else {}
        more = cli(with_limit(ppl_args(db, folder / "o9.json"), PPL_LIMIT + 1), preexec_fn=pre)
    finally:
        make_writable(ro)
    return Outcome(f"read-only store folder ({how})", {
        "stored run succeeds from it": bool(out) and out["timing"]["cached_texts"] == PPL_LIMIT
                                       and max_nll_diff(out, ref.result) == 0,
        "a new row: one line, exit 2": one_line_error(more) is None,
        "says read-only and what to do": "read-only" in more.err and "--store" in more.err and "EVALCORE_CACHE" in more.err,
        "rows unchanged, integrity ok": rows(db, "perplexity") == PPL_LIMIT and integrity(db) == "ok",
    }, PPL_LIMIT, PPL_LIMIT - rows(db, "perplexity"), f"stderr: {_last(more.err)}")


def two_processes(folder: Path, ref: Reference) -> Outcome:
    """The same perplexity work in two processes on one store at once."""
    folder.mkdir(parents=True, exist_ok=True)
    db = folder / "shared.sqlite"
    ps = [popen(ppl_args(db, folder / f"o{k}.json")) for k in range(2)]
    errs = [p.communicate(timeout=300)[1] for p in ps]
    ok = all(p.returncode == 0 for p in ps)
    a, b = (read_json(folder / f"o{k}.json") for k in range(2)) if ok else ({}, {})
    return Outcome("two processes, one store, same work", {
        "both exit 0": ok,
        "outputs identical": ok and max_nll_diff(a, b) == 0 and a["perplexity"] == b["perplexity"],
        "= clean run (1e-5)": ok and max_nll_diff(a, ref.result) <= 1e-5,
        "no duplicate rows, integrity ok": rows(db, "perplexity") == PPL_LIMIT and integrity(db) == "ok",
    }, None, 0, "" if ok else " | ".join(e.strip()[-200:] for e in errs))


def corrupt_converted_weights(folder: Path) -> Outcome:
    """Random bytes in the middle of the converted SmolLM2 weights (size unchanged, mtime set
    back), in a cache of its own: the next run must see it, convert again, store no non-finite
    value, and end with the clean run's NLLs."""
    import shutil

    from evalcore import models

    cache = folder / "cache"
    (cache / "models").mkdir(parents=True, exist_ok=True)
    src = models.converted_dir(models.resolve_spec(MODEL))
    conv = cache / "models" / src.name
    shutil.copytree(src, conv)  # a warm start: no first conversion here
    extra = {"EVALCORE_CACHE": str(cache)}
    args = lambda db, out: ["perplexity", "--model", MODEL, "--corpus", "wikipedia", "--limit", "2", "--per-token",
                            "--store", str(db), "--out", str(out)]
    clean = cli(args(folder / "clean.sqlite", folder / "clean.json"), extra_env=extra)
    weights = conv / "model.safetensors"
    st = weights.stat()
    with open(weights, "r+b") as f:
        f.seek(st.st_size // 2)
        f.write(random.Random(0).randbytes(4096))
    os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns))
    run = cli(["-v", *args(folder / "s.sqlite", folder / "o.json")], extra_env=extra)
    ok = clean.rc == 0 and run.rc == 0
    a, b = (read_json(folder / "clean.json"), read_json(folder / "o.json")) if ok else ({}, {})
    values = records(folder / "s.sqlite", "perplexity") if ok else {}
    finite = all(all(x == x and abs(x) != float("inf") for x in v["nll"]) for v in values.values())
    return Outcome("converted weights changed in place (size and mtime kept)", {
        "clean run and rerun exit 0": ok,
        "the change is reported": "changed since conversion" in run.err,
        "converted again": "converted " in run.err,
        "NLLs = clean run's": ok and max_nll_diff(a, b) == 0,
        "no non-finite value stored": ok and len(values) == 2 and finite,
    }, None, 0, f"stderr: {_last(run.err)}")



def non_finite_record(folder: Path, ref: Reference, *, runner: Runner = cli) -> Outcome:
    """A record holding a bare NaN (as an older evalcore could store, with a valid checksum): it
    is treated as missing and recomputed, never served."""
    import re
    import zlib

    db = _copy_store(ref.db, folder)
    c = sqlite3.connect(db)
    key, value = c.execute("SELECT key, value FROM records WHERE op = 'perplexity' LIMIT 1").fetchone()
    bad = re.sub(r'"nll":\[[^,\]]+', '"nll":[NaN', value, count=1)
    c.execute("UPDATE records SET value = ?, crc = ? WHERE key = ?", (bad, zlib.crc32(bad.encode()), key))
    c.commit()
    c.close()
    run = runner(ppl_args(db, folder / "o.json"))
    out = run.json(folder / "o.json") if run.rc == 0 else {}
    back = records(db, "perplexity")
    return Outcome("a stored record holding NaN", {
        "run exits 0": run.rc == 0,
        "the NaN record is recomputed, the others read": bool(out) and out["timing"]["cached_texts"] == PPL_LIMIT - 1,
        "NLLs = clean run (1e-5)": bool(out) and max_nll_diff(out, ref.result) <= 1e-5,
        "store holds finite values only": len(back) == PPL_LIMIT and "NaN" not in json.dumps(back),
    }, PPL_LIMIT, 0, f"stderr: {_last(run.err)}")


_HOLD_LOCK = """
import sqlite3, sys, time
c = sqlite3.connect(sys.argv[1], isolation_level=None)
c.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
"""


def locked_store(folder: Path, ref: Reference, *, runner: Runner = cli) -> Outcome:
    """Another process holds the store's write lock for the whole run: the run says so at open,
    retries, puts what it cannot store into a side journal, and exits 0 with the clean numbers;
    the next run, after the lock is gone, merges the journal and reads every row back."""
    from evalcore.store import Store

    folder.mkdir(parents=True, exist_ok=True)
    db = folder / "s.sqlite"
    Store(db).close()
    holder = subprocess.Popen([sys.executable, "-c", _HOLD_LOCK, str(db), "120"], stdout=subprocess.PIPE, text=True)
    try:
        holder.stdout.readline()
        run = runner(ppl_args(db, folder / "o.json"), extra_env={"EVALCORE_STORE_WAIT": "1"})
        journals = sorted(folder.glob("s.sqlite.journal-*"))
    finally:
        holder.kill()
        holder.wait()
    out = run.json(folder / "o.json") if run.rc == 0 else {}
    again = runner(ppl_args(db, folder / "o2.json"))
    out2 = again.json(folder / "o2.json") if again.rc == 0 else {}
    cached = out2.get("timing", {}).get("cached_texts", 0)
    return Outcome("store locked by another process for the whole run", {
        "run exits 0 with the clean numbers": bool(out) and max_nll_diff(out, ref.result) <= 1e-5,
        "says at open that it is locked, and by whom": "locked" in run.err and f"pid {holder.pid}" in run.err,
        "results kept in a side journal": len(journals) == 1,
        "next run merges it: every row read back": cached == PPL_LIMIT and not list(folder.glob("s.sqlite.journal-*")),
    }, None, PPL_LIMIT - cached, f"stderr: {_last(run.err)}")
