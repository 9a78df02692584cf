"""Fault injection for the CLI: kill, corrupt, fill the disk, lock the folder, feed bad input.

Shared by `tests/cli/test_faults.py`, `tests/cli/test_bad_input.py` and `bench/reliability_report.py`
(not a test file itself). Every fault runs the real CLI in a subprocess:

    SIGKILL          start a run, poll its store until N rows are committed, kill -9, rerun
    corrupt store    garbage bytes in the middle of the SQLite file, or the file cut to half
    disk full        RLIMIT_FSIZE in the child (SIGXFSZ ignored): writes past the limit fail (EFBIG)
    read-only        the store's folder and file made read-only; as root, which ignores file
                     modes, the child runs with CAP_DAC_OVERRIDE and CAP_FOWNER dropped
    bad input        each case must exit 2 with one line on stderr and no traceback, before
                     any model is loaded (a guard makes a model load exit 3)
"""
from __future__ import annotations

import ctypes
import json
import os
import random
import resource
import signal
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
PPL_LIMIT = 8  # Wikipedia passages in each perplexity run
PPL_BATCH_TOKENS = 300  # about 2 passages per forward batch: 5 store writes per run
MAUVE_LIMIT = 16  # HellaSwag contexts, generated in 2 batches of 8 (`--batch-size`)
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


# ----------------------------------------------------------------------------- damage on disk

def garble_middle(db: Path, *, seed: int = 0, n: int = 512) -> None:
    """Overwrite `n` random bytes in the middle of the file (page headers, cells, payload)."""
    size = Path(db).stat().st_size
    rng = random.Random(seed)
    with open(db, "r+b") as f:
        f.seek(size // 2 - n // 2)
        f.write(bytes(rng.randrange(256) for _ in range(n)))


def value_prefix(text_result: dict[str, Any], n_ids: int = 6) -> bytes:
    """The first bytes of a perplexity record's stored JSON (from a `--per-token` text entry):
    they sit in the record's own B-tree cell, so they can be found in the file."""
    return b'{"ids":[' + ",".join(str(i) for i in text_result["ids"][:n_ids]).encode()


def garble_digits(db: Path, prefix: bytes) -> None:
    """Bit rot that keeps the JSON valid: 9s over the digits of the first token id of the
    record starting with `prefix` (e.g. 20317 -> 99999: parses, and is wrong)."""
    raw = Path(db).read_bytes()
    at = raw.find(prefix)
    if at < 0 or raw.find(prefix, at + 1) >= 0:
        raise ValueError(f"{prefix!r} not found once in {db}")
    start = at + len(b'{"ids":[')
    end = raw.index(b",", start)
    with open(db, "r+b") as f:
        f.seek(start)
        f.write(b"9" * (end - start))


def truncate_half(db: Path) -> None:
    os.truncate(db, Path(db).stat().st_size // 2)


# ----------------------------------------------------------------------------- disk full, read-only

def file_size_limit(nbytes: int) -> Callable[[], None]:
    """preexec_fn: no file may grow past `nbytes` (writes past it fail with EFBIG, like a full disk)."""
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, nbytes))
    return apply


_CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH, _CAP_FOWNER = 1, 2, 3
_PR_CAPBSET_DROP = 24


def _drop_file_caps() -> None:
    """preexec_fn for root: drop the capabilities that let root write into read-only folders.

    They leave the bounding set before exec, so the new process (still uid 0, so it still
    reads root's 0600 model files as their owner) obeys file modes like any user.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (_CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH, _CAP_FOWNER):
        if libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def read_only_runner(folder: Path) -> tuple[bool, Callable[[], None] | None, str]:
    """(works, preexec_fn, how): how to run a child for which `folder` (already chmod 0o555)
    cannot be written. A probe child tries to create a file there; works is False when it can
    (a root that cannot drop CAP_DAC_OVERRIDE), and the caller skips the case."""
    pre = _drop_file_caps if os.geteuid() == 0 else None
    probe = [sys.executable, "-c", f"open({str(Path(folder) / '.probe')!r}, 'w')"]
    try:
        r = subprocess.run(probe, preexec_fn=pre, capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.SubprocessError) as e:
        return False, None, f"cannot start a restricted process: {e}"
    if r.returncode == 0:
        (Path(folder) / ".probe").unlink(missing_ok=True)
        return False, None, "the folder stays writable (root, and CAP_DAC_OVERRIDE cannot be dropped)"
    return True, pre, "root with CAP_DAC_OVERRIDE dropped" if pre else "file modes"


def make_read_only(folder: Path) -> None:
    for p in Path(folder).iterdir():
        p.chmod(0o444)
    Path(folder).chmod(0o555)


def make_writable(folder: Path) -> None:
    Path(folder).chmod(0o755)
    for p in Path(folder).iterdir():
        p.chmod(0o644)


# ----------------------------------------------------------------------------- bad input

@dataclass(frozen=True)
class BadInput:
    """One bad CLI input: the arguments (built in a scratch folder) and a phrase the one-line
    error must contain. `env` adds environment variables ("{d}" is the scratch folder), `stdin`
    names a file fed to the process, and `loads=True` marks a case only a model load can find
    (it runs without the no-model guard)."""

    name: str
    build: Callable[[Path], list[str]]
    expect: str
    env: tuple[tuple[str, str], ...] = ()
    stdin: str | None = None
    loads: bool = False


def _text_file(content: bytes, *, model: str = MODEL, out: str = "o.json", link: str | None = None
               ) -> Callable[[Path], list[str]]:
    def build(d: Path) -> list[str]:
        f = d / "text.txt"
        f.write_bytes(content)
        if link is not None:
            (d / out).symlink_to(d / link)
        return ["perplexity", "--model", model, "--text-file", str(f), "--out", str(d / out)]
    return build


def _indices(content: str, *, out: str = "o.json") -> Callable[[Path], list[str]]:
    def build(d: Path) -> list[str]:
        f = d / "indices.json"
        f.write_text(content)
        return ["hellaswag", "--model", MODEL, "--indices", str(f), "--out", str(d / out)]
    return build


def _features(p: Any, q: Any, *extra: str, out: str = "o.json") -> Callable[[Path], list[str]]:
    def build(d: Path) -> list[str]:
        import numpy as np

        for name, x in (("p", p), ("q", q)):
            if isinstance(x, bytes):
                (d / f"{name}.npy").write_bytes(x)
            else:
                np.save(d / f"{name}.npy", x() if callable(x) else x)
        return ["mauve", "--p-features", str(d / "p.npy"), "--q-features", str(d / "q.npy"), *extra,
                "--out", str(d / out)]
    return build


def _gauss(n: int, dim: int, *, nan: bool = False, seed: int = 0) -> Callable[[], Any]:
    def make() -> Any:
        import numpy as np

        x = np.random.default_rng(seed).normal(size=(n, dim))
        if nan:
            x[3, 1] = np.nan
        return x
    return make


def _kl(*extra: str) -> Callable[[Path], list[str]]:
    return _args("kl", "--model-p", MODEL, "--model-q", MODEL, "--corpus", "wikipedia", "--limit", "1", *extra,
                 "--out", "{d}/o.json")


def _st_blob(header: bytes) -> bytes:
    """A safetensors file: its 8-byte header length, then the header."""
    return len(header).to_bytes(8, "little") + header


_LLAMA = {"model_type": "llama", "hidden_size": 8, "num_attention_heads": 2, "num_hidden_layers": 1,
          "intermediate_size": 16, "vocab_size": 32, "rms_norm_eps": 1e-5}


def _forged(*, st: bytes | None = None, config: bytes | None = None, st_link: str | None = None,
            model_in: str = "model") -> Callable[[Path], list[str]]:
    """A model folder with one forged part (weights file, config, or a symlink as the weights)."""
    def build(d: Path) -> list[str]:
        f = d / model_in
        f.mkdir(exist_ok=True)
        (f / "config.json").write_bytes(config if config is not None else json.dumps(_LLAMA).encode())
        if st_link is not None:
            target = f / st_link if not st_link.startswith("/") else Path(st_link)
            (f / "model.safetensors").symlink_to(target)
        else:
            (f / "model.safetensors").write_bytes(st if st is not None else _st_blob(b"{}"))
        return ["perplexity", "--model", str(f), "--text-file", "/etc/hostname", "--out", str(d / "o.json")]
    return build


def _foreign_store(content: bytes | None, *, merge: bool = False) -> Callable[[Path], list[str]]:
    """A file at the store's path that is not ours: `content`, or another program's SQLite database."""
    def build(d: Path) -> list[str]:
        f = d / "theirs.sqlite"
        if content is not None:
            f.write_bytes(content)
        else:
            c = sqlite3.connect(f)
            c.execute("CREATE TABLE contacts (name TEXT, phone TEXT)")
            c.execute("INSERT INTO contacts VALUES ('Ada', '555-0100')")
            c.commit()
            c.close()
        if merge:
            ours = d / "ours.sqlite"
            c = sqlite3.connect(ours)
            c.close()
            return ["store-merge", str(ours), "--into", str(f)]
        return ["perplexity", "--model", MODEL, "--corpus", "wikipedia", "--store", str(f), "--out", str(d / "o.json")]
    return build


def _symlink_loop_model(d: Path) -> list[str]:
    (d / "loop").symlink_to(d / "loop")
    return ["perplexity", "--model", str(d / "loop"), "--text-file", "/etc/hostname", "--out", str(d / "o.json")]


def _npy_claiming(shape: tuple[int, ...]) -> bytes:
    """A .npy whose header claims `shape` (float64) over 40 x 8 numbers of data."""
    import io

    import numpy as np

    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "<f8", "fortran_order": False, "shape": shape})
    return buf.getvalue() + np.zeros((40, 8)).tobytes()


def _args(*a: str) -> Callable[[Path], list[str]]:
    def build(d: Path) -> list[str]:
        return [x.replace("{d}", str(d)) for x in a]
    return build


_GOOD = b"The quick brown fox jumps over the lazy dog, and then it runs into the forest."

BAD_INPUTS: list[BadInput] = [
    BadInput("unknown model name", _text_file(_GOOD, model="no-such-model"), "unknown model"),
    BadInput("malformed hub id a/b/c", _text_file(_GOOD, model="a/b/c"), "unknown model"),
    BadInput("nonexistent local path", _text_file(_GOOD, model="./no/such/folder"), "does not exist"),
    BadInput("missing text file", _args("perplexity", "--model", MODEL, "--text-file", "{d}/none.txt",
                                        "--out", "{d}/o.json"), "cannot read"),
    BadInput("empty text file", _text_file(b""), "empty"),
    BadInput("whitespace-only text file", _text_file(b"  \n\t \n"), "whitespace"),
    BadInput("binary text file", _text_file(bytes(range(256)) * 4), "binary"),
    BadInput("non-UTF-8 text file", _text_file("café crème, déjà vu".encode("latin-1")), "not UTF-8"),
    BadInput("indices: duplicates", _indices("[3, 1, 3]"), "duplicates"),
    BadInput("indices: negative", _indices("[0, -2]"), "out of range"),
    BadInput("indices: out of range", _indices("[10042]"), "out of range"),
    BadInput("indices: not JSON", _indices("0, 1, 2"), "unreadable"),
    BadInput("indices: not a list", _indices('{"a": 1}'), "list of integers"),
    BadInput("indices: empty list", _indices("[]"), "non-empty"),
    BadInput("hellaswag --limit 0", _args("hellaswag", "--model", MODEL, "--limit", "0", "--out", "{d}/o.json"),
             "at least 1"),
    BadInput("perplexity --limit 0", _args("perplexity", "--model", MODEL, "--corpus", "wikipedia", "--limit", "0",
                                           "--out", "{d}/o.json"), "at least 1"),
    BadInput("mauve --limit 0", _args("mauve", "--model", MODEL, "--limit", "0", "--out", "{d}/o.json"), "at least"),
    BadInput("hellaswag --sample 0", _args("hellaswag", "--model", MODEL, "--sample", "0", "--out", "{d}/o.json"),
             "--sample 0"),
    BadInput("perplexity --stride 0", _args("perplexity", "--model", MODEL, "--corpus", "wikipedia", "--limit", "2",
                                            "--stride", "0", "--out", "{d}/o.json"), "stride"),
    BadInput("perplexity --max-length 1", _args("perplexity", "--model", MODEL, "--corpus", "wikipedia", "--limit",
                                                "2", "--max-length", "1", "--out", "{d}/o.json"), "--max-length"),
    BadInput("mauve features with NaN", _features(_gauss(40, 8, nan=True), _gauss(40, 8, seed=1)), "NaN"),
    BadInput("mauve features: mismatched dims", _features(_gauss(40, 8), _gauss(40, 6, seed=1)),
             "different dimensions"),
    BadInput("mauve features: 1-D array", _features(lambda: __import__("numpy").zeros(8), _gauss(40, 8)), "2-D"),
    BadInput("mauve features: not .npy", _features(b"not numpy at all", _gauss(40, 8)), "not a .npy"),
    BadInput("mauve --k 1", _features(_gauss(40, 8), _gauss(40, 8, seed=1), "--k", "1"),
             "need 2..20 clusters"),
    BadInput("mauve --k > texts", _features(_gauss(10, 8), _gauss(10, 8, seed=1), "--k", "50"),
             "need 2..5 clusters"),
    BadInput("mauve --k abc", _features(_gauss(40, 8), _gauss(40, 8, seed=1), "--k", "abc"),
             "integer"),
    BadInput("mauve features: empty file", _features(b"", _gauss(40, 8)), "not a .npy"),
    BadInput("mauve --scaling 0", _features(_gauss(40, 8), _gauss(40, 8, seed=1), "--scaling", "0"), "scaling"),
    BadInput("mauve --limit 2 (model texts)", _args("mauve", "--model", MODEL, "--limit", "2", "--out", "{d}/o.json"),
             "at least 4"),
    BadInput("mauve --top-p 0", _args("mauve", "--model", MODEL, "--limit", "8", "--top-p", "0", "--out",
                                      "{d}/o.json"), "--top-p"),
    BadInput("mauve --k 40 for 8 texts", _args("mauve", "--model", MODEL, "--limit", "8", "--k", "40",
                                                "--out", "{d}/o.json"), "k=40"),
    BadInput("mauve --clusters 21 for 40 + 40 features", _features(_gauss(40, 8), _gauss(40, 8, seed=1), "--clusters",
                                                                   "21"), "need 2..20 clusters"),
    BadInput("mauve unknown --featurizer", _args("mauve", "--model", MODEL, "--limit", "8", "--featurizer",
                                                 "no-such-model", "--out", "{d}/o.json"), "unknown model"),
    # nonsense parameters: refused at parse time, non-finite included
    BadInput("mauve --temperature nan", _args("mauve", "--model", MODEL, "--limit", "8", "--temperature", "nan",
                                              "--out", "{d}/o.json"), "finite"),
    BadInput("mauve --temperature inf", _args("mauve", "--model", MODEL, "--limit", "8", "--temperature", "inf",
                                              "--out", "{d}/o.json"), "finite"),
    BadInput("mauve --scaling nan (features)", _features(_gauss(40, 8), _gauss(40, 8, seed=1), "--scaling", "nan"),
             "finite"),
    BadInput("perplexity --stride 5000 --max-length 8", _args("perplexity", "--model", MODEL, "--corpus", "wikipedia",
                                                              "--stride", "5000", "--max-length", "8", "--out",
                                                              "{d}/o.json"), "--stride 5000"),
    BadInput("hellaswag --batch-size 0", _args("hellaswag", "--model", MODEL, "--limit", "4", "--batch-size", "0",
                                               "--out", "{d}/o.json"), "--batch-size"),
    BadInput("hellaswag --batch-tokens -7", _args("hellaswag", "--model", MODEL, "--limit", "4", "--batch-tokens",
                                                  "-7", "--out", "{d}/o.json"), "--batch-tokens"),
    BadInput("kl --top-k 0", _kl("--top-k", "0"), "--top-k"),
    BadInput("kl --top-k -1", _kl("--top-k", "-1"), "--top-k"),
    BadInput("kl --top-k 100000000", _kl("--top-k", "100000000"), "--top-k"),
    BadInput("--device mps without MPS", _args("perplexity", "--model", MODEL, "--corpus", "wikipedia", "--device",
                                               "mps", "--out", "{d}/o.json"), "mps"),
    BadInput("--device cuda:7 without CUDA", _args("hellaswag", "--model", MODEL, "--limit", "2", "--device", "cuda:7",
                                                   "--out", "{d}/o.json"), "cuda"),
    BadInput("EVALCORE_MEMORY_LIMIT_GB=inf", _text_file(_GOOD), "EVALCORE_MEMORY_LIMIT_GB",
             env=(("EVALCORE_MEMORY_LIMIT_GB", "inf"),)),
    BadInput("EVALCORE_MEMORY_LIMIT_GB=-1", _text_file(_GOOD), "EVALCORE_MEMORY_LIMIT_GB",
             env=(("EVALCORE_MEMORY_LIMIT_GB", "-1"),)),
    # model names that are not usable paths
    BadInput("--model ~nosuchuser/x", _text_file(_GOOD, model="~nosuchuser/x"), "not a usable path"),
    BadInput("--model ''", _text_file(_GOOD, model=""), "empty model name"),
    BadInput("--model '   '", _text_file(_GOOD, model="   "), "empty model name"),
    # forged model folders: refused from their headers, before any load
    BadInput("safetensors header length 2^62", _forged(st=(1 << 62).to_bytes(8, "little") + b"{}"), "header length"),
    BadInput("safetensors header is a list", _forged(st=_st_blob(b"[1, 2, 3]")), "not an object"),
    BadInput("safetensors file empty", _forged(st=b""), "not a safetensors file"),
    BadInput("safetensors file garbage", _forged(st=bytes(range(256)) * 64), "not a safetensors file"),
    BadInput("safetensors tensor past the file's end", _forged(st=_st_blob(
        b'{"w": {"dtype": "F32", "shape": [1000, 1000], "data_offsets": [0, 4000000]}}')), "outside the file"),
    BadInput("config.json is a list", _forged(config=b"[1, 2]"), "not an object"),
    BadInput("config.json lacks hidden_size", _forged(config=json.dumps(
        {"model_type": "llama", "num_attention_heads": 2, "num_hidden_layers": 1, "intermediate_size": 8,
         "vocab_size": 16, "rms_norm_eps": 1e-5}).encode()), "hidden_size"),
    BadInput("config.json hidden_size NaN", _forged(config=b'{"model_type": "llama", "hidden_size": NaN}'),
             "hidden_size"),
    BadInput("config.json asks for custom code (auto_map)", _forged(config=json.dumps(
        {"model_type": "custom", "auto_map": {"AutoModelForCausalLM": "modeling.Custom"}}).encode()), "auto_map"),
    BadInput("model.safetensors a symlink loop", _forged(st_link="model.safetensors"), "cannot be read"),
    BadInput("model.safetensors a symlink to /etc/passwd", _forged(st_link="/etc/passwd"), "not a safetensors file"),
    BadInput("model.safetensors a symlink to /dev/zero", _forged(st_link="/dev/zero"), "not a regular file"),
    BadInput("model folder a symlink loop", _symlink_loop_model, "does not exist"),
    # text sources past the size limit, from files that never end
    BadInput("--text-file /dev/zero", _args("perplexity", "--model", MODEL, "--text-file", "/dev/zero", "--out",
                                            "{d}/o.json"), "more than"),
    BadInput("--text-file /dev/stdin fed /dev/zero", _args("perplexity", "--model", MODEL, "--text-file", "/dev/stdin",
                                                          "--out", "{d}/o.json"), "more than", stdin="/dev/zero"),
    BadInput("--indices /dev/urandom", _args("hellaswag", "--model", MODEL, "--indices", "/dev/urandom", "--out",
                                             "{d}/o.json"), "more than"),
    BadInput("--indices 60,000 entries with duplicates", _indices(json.dumps([i % 10042 for i in range(60_000)])),
             "duplicates"),
    BadInput("features .npy header claims 1e11 rows", _features(_npy_claiming((10**11, 8)), _gauss(40, 8)),
             "limit"),
    BadInput("features .npy header claims more than the file", _features(_npy_claiming((4000, 8)), _gauss(40, 8)),
             "truncated"),
    # --out that would destroy an input, or is a folder
    BadInput("--out = --text-file", _text_file(_GOOD, out="text.txt"), "same file as --text-file"),
    BadInput("--out = --store", _args("perplexity", "--model", MODEL, "--corpus", "wikipedia", "--store", "{d}/s.sqlite",
                                      "--out", "{d}/s.sqlite"), "same file as --store"),
    BadInput("--out = the store's -wal file", _args("perplexity", "--model", MODEL, "--corpus", "wikipedia", "--store",
                                                    "{d}/s.sqlite", "--out", "{d}/s.sqlite-wal"), "same file as --store"),
    BadInput("--out = the default store", _args("perplexity", "--model", MODEL, "--corpus", "wikipedia", "--out",
                                                 "{d}/cache/results.sqlite"), "same file as --store",
             env=(("EVALCORE_CACHE", "{d}/cache"),)),
    BadInput("--out = --indices", _indices("[1, 2]", out="indices.json"), "same file as --indices"),
    BadInput("--out = --p-features", _features(_gauss(40, 8), _gauss(40, 8, seed=1), out="p.npy"),
             "same file as --p-features"),
    BadInput("--out a symlink to --text-file", _text_file(_GOOD, out="link.txt", link="text.txt"),
             "same file as --text-file"),
    BadInput("--out a folder", _args("perplexity", "--model", MODEL, "--corpus", "wikipedia", "--out", "{d}"),
             "is a folder"),
    # a --store (or --into) that is some other program's file: refused, and left as it is
    BadInput("--store a text file", _foreign_store(b"my notes\n"), "not an evalcore results store"),
    BadInput("--store another program's SQLite", _foreign_store(None), "not an evalcore results store"),
    BadInput("--store /dev/null", _args("perplexity", "--model", MODEL, "--corpus", "wikipedia", "--store", "/dev/null",
                                        "--out", "{d}/o.json"), "not an evalcore results store"),
    BadInput("--store a folder", _args("perplexity", "--model", MODEL, "--corpus", "wikipedia", "--store", "{d}",
                                       "--out", "{d}/o.json"), "directory"),
    BadInput("store-merge --into another program's SQLite", _foreign_store(None, merge=True),
             "not an evalcore results store"),
    BadInput("EVALCORE_STORE_WAIT=nan", _text_file(_GOOD), "EVALCORE_STORE_WAIT", env=(("EVALCORE_STORE_WAIT", "nan"),)),
    # load-time checks (they need a model, so no guard): each still one line, exit 2, before slow work
    BadInput("EVALCORE_CACHE is a file", _args("perplexity", "--model", MODEL, "--text-file", "/etc/hostname",
                                               "--store", "{d}/s.sqlite", "--out", "{d}/o.json"),
             "cache folder", env=(("EVALCORE_CACHE", "/etc/hostname"),), loads=True),
]


def run_bad_input(case: BadInput, folder: Path, *, in_process: bool = False) -> tuple[Run, str | None]:
    """Run one bad input (with the no-model guard unless it `loads`); (run, None) when it failed as
    it should. `in_process`: through `cli_in_process` (no child start-up, the same checks) rather
    than a child process of the real entry point."""
    folder.mkdir(parents=True, exist_ok=True)
    args = case.build(folder)
    extra = {k: v.replace("{d}", str(folder)) for k, v in case.env}
    if in_process:
        run = cli_in_process(args, guard=not case.loads, extra_env=extra, stdin=case.stdin)
    elif case.stdin is not None:
        with open(case.stdin, "rb") as fin:
            run = cli(args, guard=not case.loads, timeout=120, extra_env=extra, stdin=fin)
    else:
        run = cli(args, guard=not case.loads, timeout=120, extra_env=extra)
    problem = one_line_error(run)
    if problem is None and case.expect.lower() not in run.err.lower():
        problem = f"message lacks {case.expect!r}: {run.err.strip()}"
    return run, problem


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
