"""The real CLI run for a test: `cli`, a child process of `python -m evalcore` (optionally with
model loading replaced by an error, the no-model guard), and `cli_in_process`, `evalcore.cli.main`
in this process with what a child would show (exit status, stdout, stderr, log lines, warnings).
`one_line_error` says whether a run failed the way a user error should.

Shared by the fault scenarios (faults.py), the bad-input catalogue (bad_inputs.py), the tests
and bench/reliability_report.py.
"""
from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
MODEL = "smollm2-135m"
NO_MODEL_GUARD = "evalcore-faults: a model load was attempted"

# the CLI, with model loading replaced by an error: proves a bad input fails before any load
_GUARDED_MAIN = f"""
import sys
import evalcore.models.loading as m
def _refuse(*a, **k):
    print({NO_MODEL_GUARD!r}, file=sys.stderr)
    raise SystemExit(3)
m._load = _refuse
from evalcore.cli import main
raise SystemExit(main(sys.argv[1:]))
"""


def env() -> dict[str, str]:
    """The parent's environment, offline, with quiet tokenizers."""
    e = os.environ.copy()
    e.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false", PYTHONUNBUFFERED="1")
    return e


def popen(args: list[str], *, preexec_fn: Callable[[], None] | None = None, guard: bool = False,
          extra_env: dict[str, str] | None = None, stdin: Any = None) -> subprocess.Popen:
    cmd = [sys.executable, "-c", _GUARDED_MAIN, *args] if guard else [sys.executable, "-m", "evalcore", *args]
    return subprocess.Popen(cmd, cwd=ROOT, env={**env(), **(extra_env or {})}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, stdin=stdin if stdin is not None else subprocess.DEVNULL, text=True,
                            preexec_fn=preexec_fn)  # noqa: PLW1509 (the caller is single-threaded)


@dataclass
class Run:
    rc: int
    out: str
    err: str
    seconds: float

    def json(self, path: Path) -> dict[str, Any]:
        return read_json(path)


def read_json(path: Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text())


TRACEBACKS: list[str] = []  # every CLI run of this process that printed a traceback (the report counts them)


def cli(args: list[str], *, timeout: float = 300, **kw: Any) -> Run:
    t = time.perf_counter()
    p = popen(args, **kw)
    out, err = p.communicate(timeout=timeout)
    if "Traceback" in err:
        TRACEBACKS.append(" ".join(args))
    return Run(p.returncode, out, err, time.perf_counter() - t)


# ----------------------------------------------------------------------------- the CLI in this process

class _ModelsOfThisProcess:
    """Swap `evalcore.models.loading`'s per-process model memo for an empty one (a child starts
    with none), and with `guard` its loader for the no-model guard; restored on exit."""

    def __init__(self, *, fresh: bool, guard: bool) -> None:
        self.fresh, self.guard = fresh, guard

    def __enter__(self) -> None:
        from evalcore.models import loading

        self.loading, self.saved = loading, (loading._load, loading._LOADED)
        if self.fresh or self.guard:
            loading._LOADED = {}
        if self.guard:
            def refuse(*a: Any, **k: Any) -> None:
                print(NO_MODEL_GUARD, file=sys.stderr)
                raise SystemExit(3)
            loading._load = refuse

    def __exit__(self, *exc: object) -> None:
        self.loading._load, self.loading._LOADED = self.saved


def cli_shared_models(args: list[str], **kw: Any) -> Run:
    """`cli_in_process` with this process's loaded models: a model the session holds is not loaded again."""
    return cli_in_process(args, fresh_models=False, **kw)


def _show_warnings_as_a_child_would() -> None:
    """A fresh interpreter's warning filters, every occurrence shown (no once-per-process registry)."""
    import warnings

    warnings.resetwarnings()
    warnings.simplefilter("always")
    for cat in (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning):
        warnings.filterwarnings("ignore", category=cat)


def cli_in_process(args: list[str], *, guard: bool = False, fresh_models: bool = True,
                   extra_env: dict[str, str] | None = None, stdin: str | None = None) -> Run:
    """`evalcore.cli.main(args)` in this process, with what `cli` would see of a child: its exit
    status (SystemExit included; an uncaught exception prints its traceback and gives 1, as the
    interpreter does), its stdout and stderr at the file-descriptor level, every log record the
    child's `logging.basicConfig` handler would print (WARNING and up; INFO with -v) and every
    warning a fresh interpreter would show, in its environment (env() + extra_env) and folder
    (ROOT), with `stdin` (a file name) as descriptor 0. `fresh_models` starts from an empty model
    memo, as a child does (False shares this process's loaded models: no load, no conversion);
    `guard` refuses any model load with exit 3, as `popen(guard=True)` does.

    For tests whose subject is what the CLI decides and prints, not the process: a child's
    start-up (interpreter, imports, a model load) costs seconds each. Kills, resource limits,
    dropped capabilities and concurrency need `cli`.
    """
    import io
    import logging
    import tempfile
    import traceback
    import warnings

    from evalcore.cli import main

    fmt = logging.Formatter("%(levelname)s %(name)s: %(message)s")
    threshold = logging.INFO if {"-v", "--verbose"} & set(args) else logging.WARNING
    real_call = logging.Logger.callHandlers

    def call_handlers(self: logging.Logger, record: logging.LogRecord) -> None:
        if record.levelno >= threshold:
            sys.stderr.write(fmt.format(record) + "\n")
        real_call(self, record)

    root = logging.getLogger()
    saved_root = root.level, root.handlers[:]
    saved_env, saved_cwd = os.environ.copy(), os.getcwd()
    saved_streams = sys.stdin, sys.stdout, sys.stderr
    for s in saved_streams[1:]:
        s.flush()
    files = [tempfile.TemporaryFile() for _ in range(2)]  # noqa: SIM115 - closed once read, below
    saved_fds = [os.dup(fd) for fd in (0, 1, 2)]
    t = time.perf_counter()
    try:
        with open(stdin or os.devnull, "rb") as fin:
            os.dup2(fin.fileno(), 0)
        os.dup2(files[0].fileno(), 1)
        os.dup2(files[1].fileno(), 2)
        sys.stdin = io.TextIOWrapper(io.FileIO(0, "r", closefd=False), encoding="utf-8")
        sys.stdout, sys.stderr = (io.TextIOWrapper(io.FileIO(fd, "w", closefd=False), encoding="utf-8",
                                                   errors="backslashreplace", write_through=True) for fd in (1, 2))
        os.environ.update(env())
        os.environ.update(extra_env or {})
        os.chdir(ROOT)
        root.setLevel(threshold)  # what the child's basicConfig sets (here pytest's handlers make it a no-op)
        logging.Logger.callHandlers = call_handlers  # type: ignore[method-assign]
        with _ModelsOfThisProcess(fresh=fresh_models, guard=guard), warnings.catch_warnings(record=True) as shown:
            _show_warnings_as_a_child_would()
            try:
                rc = main(list(args))
            except SystemExit as e:
                if e.code is None or isinstance(e.code, int):
                    rc = e.code or 0
                else:
                    print(e.code, file=sys.stderr)
                    rc = 1
            except BaseException:  # noqa: BLE001 - the interpreter would print it and exit 1
                traceback.print_exc()
                rc = 1
        for w in shown:
            sys.stderr.write(warnings.formatwarning(w.message, w.category, w.filename, w.lineno, w.line))
    finally:
        seconds = time.perf_counter() - t
        logging.Logger.callHandlers = real_call  # type: ignore[method-assign]
        root.setLevel(saved_root[0])
        root.handlers[:] = saved_root[1]
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)
        for s in (sys.stdout, sys.stderr):
            s.flush()
        sys.stdin, sys.stdout, sys.stderr = saved_streams
        for fd, saved in zip((0, 1, 2), saved_fds):
            os.dup2(saved, fd)
            os.close(saved)
    texts = []
    for f in files:
        f.seek(0)
        texts.append(f.read().decode("utf-8", "backslashreplace"))
        f.close()
    out, err = texts
    if "Traceback" in err:
        TRACEBACKS.append(" ".join(args))
    return Run(rc, out, err, seconds)


def non_finite_stored(folder: Path) -> int:
    """Records holding NaN or infinity in every results store under `folder` (quarantined ones too)."""
    n = 0
    for db in Path(folder).rglob("*.sqlite*"):
        if db.name.endswith(("-wal", "-shm")) or ".journal-" in db.name:
            continue
        try:
            c = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
            try:
                n += c.execute("SELECT count(*) FROM records WHERE value LIKE '%NaN%' OR value LIKE '%Infinity%'"
                               ).fetchone()[0]
            finally:
                c.close()
        except sqlite3.Error:  # a store damaged on purpose, or not a store
            continue
    return n


def one_line_error(run: Run) -> str | None:
    """None when the run failed the way a user error should (exit 2, one stderr line, no
    traceback); else what is wrong with it."""
    lines = [x for x in run.err.splitlines() if x.strip()]
    if NO_MODEL_GUARD in run.err:
        return "loaded a model before failing"
    if "Traceback" in run.err:
        return f"traceback: {lines[-1] if lines else ''}"
    if run.rc != 2:
        return f"exit {run.rc}: {lines[-1] if lines else ''}"
    if len(lines) != 1:
        return f"{len(lines)} lines on stderr: {lines!r}"
    return None
