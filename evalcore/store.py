"""Persistent results cache: one SQLite file, one row per (model, operation, item).

Each record is keyed by a content hash of everything that determines it: the model's
identity (name, weights fingerprint, dtype), the operation, the dataset identity and
preprocessing version, the item, and `CODE_VERSION`. Writes are one transaction per
batch, so a run killed with SIGKILL loses at most the batch in flight; SQLite's WAL mode
and `INSERT OR IGNORE` let several processes write the same work at once without
corruption or duplicate rows.

A store is marked as ours with `PRAGMA application_id = APPLICATION_ID` (stores written
before the mark are recognised by the `records` table on page 1, and get the mark when next
opened for writing). Whether a file is ours is read from its raw bytes, without SQLite, so
that a damaged file can be judged too: nothing that is not ours is ever renamed or written.

What can go wrong on disk, and what the store does about it:

    fault                                   detected by                       then
    the path is another file: not SQLite,   the raw bytes: SQLite magic,      refuse with StoreError (give --store a
    another program's database, a folder,   header application_id, our table  new file path, or move that file); it is
    a device or FIFO (symlinks followed)    on page 1; the file's type        never renamed, truncated or written
    our file with its header garbled, so    the raw bytes                     refuse with StoreError: unrecognisable,
    it is no longer recognisable                                              move it away
    our file, pages garbled or cut short    a full count at open, any query   warn once, move the file (and its
                                            failing with SQLITE_CORRUPT       -wal/-shm) aside, start empty: recompute
    a record's bytes changed (bit rot that  the record's CRC-32 (`crc`)       warn, delete that record: recompute it
    still parses as JSON)
    a stored record holds NaN or +-inf      parsing it (parse_constant)       warn, delete that record: recompute it
    (older stores wrote bare NaN)
    a record to write holds NaN or +-inf    json.dumps(allow_nan=False)       raise StoreError naming the op, record
                                                                              and value; nothing of the batch is kept
    another process holds the write lock    BEGIN IMMEDIATE at open (0.25 s   warn once at open, naming the processes
                                            wait) and at each write           that have the file open; a write retries
                                                                              with backoff for up to
                                                                              $EVALCORE_STORE_WAIT s (default 30), then
                                                                              appends its records
                                                                              to the side journal
                                                                              <store>.journal-<pid>.jsonl (fsynced),
                                                                              served by this Store; while records wait
                                                                              there, a write tries once (0.2 s); the
                                                                              next successful write writes them, or
                                                                              the next open does once this process
                                                                              has ended (torn lines skipped)
    the side journal cannot be written      the append (OSError)              raise StoreError (what to do)
    folder or file read-only                the first write                   open read-only: stored rows still serve;
                                                                              a write raises StoreError (what to do)
    disk full (ENOSPC, EFBIG)               the write's transaction           roll back, raise StoreError; committed
                                                                              rows stay readable
"""
from __future__ import annotations

import errno
import hashlib
import json
import logging
import math
import os
import re
import sqlite3
import stat
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from evalcore import assets
from evalcore.errors import StoreError

log = logging.getLogger(__name__)

CODE_VERSION = "1"  # bump when a stored computation changes meaning; old rows are then ignored

APPLICATION_ID = 0x45764C63  # "EvLc": PRAGMA application_id of every evalcore results store
WAIT_ENV = "EVALCORE_STORE_WAIT"  # seconds a write waits for a store locked by another process
WAIT_DEFAULT = 30.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    key TEXT PRIMARY KEY,
    op TEXT NOT NULL,
    created REAL NOT NULL,
    value TEXT NOT NULL,
    crc INTEGER
)
"""
# `crc` (CRC-32 of the value's UTF-8 bytes) came after the first stores: older rows have NULL
# there and are trusted as before; the column is added to an older file when it is opened.

# The table's text as SQLite keeps it in sqlite_master (on page 1), without IF NOT EXISTS, up to
# the last column every store has had (`crc` came later, appended by ALTER TABLE).
_SCHEMA_SIGNATURE = _SCHEMA.strip().replace(" IF NOT EXISTS", "").split(",\n    crc")[0].encode()
_SQLITE_MAGIC = b"SQLite format 3\x00"
_WAL_MAGIC = (0x377F0682, 0x377F0683)

_CORRUPT = {sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB}
_STORE_HINT = "pass --store PATH or set EVALCORE_CACHE to a writable folder"
_FULL_HINT = "free disk space, or pass --store PATH / set EVALCORE_CACHE to a folder on another disk"

_LOCK_PROBE_S = 0.25  # wait at open before calling the store locked (a batch commit takes milliseconds)
_BUSY_FIRST_S, _BUSY_CAP_S = 0.2, 5.0  # a write's busy timeout per attempt: doubles up to the cap
_READ_WAIT_MIN_S = 5.0  # busy timeout of reads (and of a commit waiting for readers), at least

Row = tuple[str, str, float, str, int]  # key, op, created, value (JSON text), crc
_INSERT = "INSERT OR IGNORE INTO records (key, op, created, value, crc) VALUES (?, ?, ?, ?, ?)"

# Records this process journaled because the store was locked, per journal file (absolute
# path): served by get_many and written by the next successful write of any Store on that file.
_JOURNAL_LOCK = threading.Lock()
_PENDING: dict[Path, dict[str, Row]] = {}
_JOURNAL_WARNED: set[Path] = set()


def _hint(why: str) -> str:
    return _FULL_HINT if "disk" in why else _STORE_HINT


def record_key(**parts: Any) -> str:
    """Content hash of the parts (JSON with sorted keys) plus CODE_VERSION."""
    blob = json.dumps({"v": CODE_VERSION, **parts}, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def _corrupt(e: sqlite3.Error) -> bool:
    return getattr(e, "sqlite_errorcode", None) in _CORRUPT or "malformed" in str(e) or "not a database" in str(e)


def _busy(e: sqlite3.Error) -> bool:
    code = getattr(e, "sqlite_errorcode", None)
    return (code is not None and (code & 0xFF) == sqlite3.SQLITE_BUSY) or "database is locked" in str(e)


def store_wait() -> float:
    """Seconds a write waits for a store locked by another process: $EVALCORE_STORE_WAIT, default 30.

    Raises
    ------
    StoreError
        The variable is set to something other than a finite number >= 0.
    """
    raw = os.environ.get(WAIT_ENV, "").strip()
    if not raw:
        return WAIT_DEFAULT
    try:
        wait = float(raw)
    except ValueError:
        wait = math.nan
    if not math.isfinite(wait) or wait < 0:
        raise StoreError(f"{WAIT_ENV}={raw!r} is not a number of seconds >= 0; set it to how long a write waits "
                         f"for a results store locked by another process (default {WAIT_DEFAULT:g}), or unset it")
    return wait


# ----------------------------------------------------------------------------- is this file ours?

def _wal_page1_has(wal: str, signature: bytes) -> bool:
    """Whether a WAL file holds a frame of page 1 containing `signature` (a store whose table was
    created and never checkpointed into the main file, e.g. its writer was killed)."""
    try:
        if not stat.S_ISREG(os.stat(wal).st_mode):
            return False
        with open(wal, "rb") as f:
            head = f.read(32)
            if len(head) < 32 or int.from_bytes(head[:4], "big") not in _WAL_MAGIC:
                return False
            page = int.from_bytes(head[8:12], "big")
            if page < 512 or page > 65536 or page & (page - 1):
                return False
            size = os.fstat(f.fileno()).st_size
            at = 32
            while at + 24 + page <= size:
                f.seek(at)
                if int.from_bytes(f.read(4), "big") == 1:
                    f.seek(at + 24)
                    if signature in f.read(page):
                        return True
                at += 24 + page
    except OSError:
        return False
    return False


def _not_ours(path: Path) -> str | None:
    """Why the file at `path` is not an evalcore results store; None when it is one, or when
    nothing is there or the file is empty (free to create). Reads raw bytes only, never SQLite,
    so a damaged file is judged too; symlinks are followed. A file that cannot be read raises
    StoreError."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise StoreError(f"cannot inspect results store {path}: {e.strerror or e}; {_STORE_HINT}") from e
    if stat.S_ISDIR(st.st_mode):
        return "it is a directory"
    if not stat.S_ISREG(st.st_mode):
        return "it is a device, FIFO or socket, not a regular file"
    if st.st_size == 0:
        return None
    try:
        with open(path, "rb") as f:
            head = f.read(100)
            if not head.startswith(_SQLITE_MAGIC):
                return "unrecognisable: not a SQLite file (another kind of file, or a store damaged beyond recognition)"
            if len(head) < 100:
                return "its SQLite header is cut short: unrecognisable"
            app = int.from_bytes(head[68:72], "big")
            if app == APPLICATION_ID:
                return None
            if app != 0:
                return f"a SQLite database of another program (application_id {app:#010x})"
            page = int.from_bytes(head[16:18], "big")
            page = 65536 if page == 1 else page
            f.seek(0)
            first = f.read(page if 512 <= page <= 65536 else 65536)
    except OSError as e:
        raise StoreError(f"cannot read results store {path}: {e.strerror or e}; {_STORE_HINT}") from e
    if _SCHEMA_SIGNATURE in first or _wal_page1_has(f"{os.path.realpath(path)}-wal", _SCHEMA_SIGNATURE):
        return None
    return "a SQLite database without evalcore's records table"


def _refusal(path: Path, why: str, flag: str = "--store") -> str:
    fix = ("give store-merge the .sqlite files evalcore wrote" if flag == "store-merge"
           else f"give {flag} a new file path, or move that file away")
    return f"{path} is not an evalcore results store ({why}); it was left as it is: {fix}"


def check_store_file(path: Path, flag: str = "--store") -> None:
    """Refuse, before any work, a path that holds something other than an evalcore results store
    (StoreError in one line; the file is left as it is); also checks EVALCORE_STORE_WAIT."""
    why = _not_ours(path)
    if why is not None:
        raise StoreError(_refusal(path, why, flag))
    store_wait()


# ----------------------------------------------------------------------------- who holds the lock

def _holders(path: Path) -> list[str]:
    """Other processes that have the store (or its -wal/-shm) open, as 'pid N (command line)'.
    Reads /proc (Linux); empty elsewhere, and processes this user cannot see are left out."""
    real = os.path.realpath(path)
    targets = {real, f"{real}-wal", f"{real}-shm"}
    me = os.getpid()
    found = []
    try:
        pids = [int(d) for d in os.listdir("/proc") if d.isdigit()]
    except OSError:
        return []
    for pid in sorted(pids):
        if pid == me:
            continue
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") not in targets:
                    continue
            except OSError:
                continue
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    cmd = " ".join(f.read().decode("utf-8", "replace").replace("\0", " ").split())  # one line
            except OSError:
                cmd = "?"
            found.append(f"pid {pid} ({cmd[:57] + '...' if len(cmd) > 60 else cmd})")
            break
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: it runs, as another user
        return True
    return True


# ----------------------------------------------------------------------------- values

def _refuse_constant(name: str) -> Any:
    raise ValueError(f"non-finite number {name}")


def _loads(blob: bytes | str) -> Any:
    """Parse a stored value; NaN, Infinity and -Infinity raise ValueError like any damage."""
    return json.loads(blob, parse_constant=_refuse_constant)


def _non_finite(v: Any, where: str = "$") -> tuple[str, float] | None:
    """(JSON path, value) of the first NaN or +-inf in a nested value, or None."""
    if isinstance(v, float):
        return None if math.isfinite(v) else (where, v)
    if isinstance(v, Mapping):
        for k, x in v.items():
            found = _non_finite(k, f"{where} key {k!r}") or _non_finite(x, f"{where}.{k}")
            if found:
                return found
    elif isinstance(v, (list, tuple)):
        for i, x in enumerate(v):
            found = _non_finite(x, f"{where}[{i}]")
            if found:
                return found
    return None


def _read_journal(path: Path) -> tuple[list[Row], int]:
    """The rows of a side journal whose line parses and whose value matches its CRC-32, and the
    number of lines skipped (a torn last line from a kill mid-append, or damage)."""
    rows: list[Row] = []
    skipped = 0
    for line in path.read_bytes().split(b"\n"):
        if not line.strip():
            continue
        try:
            d = json.loads(line)
            row = (d["key"], d["op"], float(d["created"]), d["value"], d["crc"])
            if (not all(isinstance(x, str) for x in (row[0], row[1], row[3])) or not isinstance(row[4], int)
                    or zlib.crc32(row[3].encode()) != row[4]):
                raise ValueError("bad line")
        except (ValueError, KeyError, TypeError):
            skipped += 1
            continue
        rows.append(row)
    return rows, skipped


class Store:
    """A results store under a folder (default: the user cache folder, never the package).

    Parameters
    ----------
    path : SQLite file; default `<cache_dir>/results.sqlite`. It must be missing, empty, or
        an evalcore results store: anything else raises StoreError and is left untouched.

    Attributes
    ----------
    read_only : True when the file could only be opened for reading (read-only folder or
        file): stored results are served, and writing one raises StoreError.
    locked : True when another process held the write lock when the store was opened.

    Raises
    ------
    StoreError
        The path is not ours, cannot be created or opened, or $EVALCORE_STORE_WAIT is invalid.
    """

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path else assets.cache_dir() / "results.sqlite"
        self._lock = threading.Lock()
        self.read_only, self._read_only_why = False, ""
        self.locked = False
        self._wait = store_wait()
        self._read_wait = max(self._wait, _READ_WAIT_MIN_S)
        self._conn = self._open()
        self._crc = "crc" if "crc" in self._columns(self._conn) else "NULL"  # NULL: an old read-only file

    @property
    def journal(self) -> Path:
        """This process's side journal: `<store path>.journal-<pid>.jsonl`, next to the store."""
        return self._journal_of(os.getpid())

    def _journal_of(self, pid: int) -> Path:
        return Path(os.path.abspath(self.path.with_name(f"{self.path.name}.journal-{pid}.jsonl")))

    # ------------------------------------------------------------------------- opening

    def _open(self) -> sqlite3.Connection:
        check_store_file(self.path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StoreError(f"cannot create the folder of results store {self.path}: {e.strerror or e}; "
                             f"{_STORE_HINT}") from e
        try:
            conn = self._connect(read_only=False)
        except sqlite3.Error as e:
            if _corrupt(e):
                self._quarantine(e)
                return self._open()
            if not self.path.exists():
                raise StoreError(f"cannot create results store {self.path}: {self._why(e)}; {_hint(self._why(e))}") from e
            try:  # a read-only folder or file: serve what is stored, refuse writes
                conn = self._connect(read_only=True)
            except sqlite3.Error as e2:
                if _corrupt(e2):
                    raise StoreError(f"results store {self.path} is corrupt ({e2}) and its folder is read-only; "
                                     f"{_STORE_HINT}") from e2
                raise StoreError(f"cannot open results store {self.path}: {self._why(e)}; {_hint(self._why(e))}") from e
            self.read_only, self._read_only_why = True, self._why(e)  # or a disk too full for the -shm file
            log.info("results store %s opened read-only (%s): stored results are read, new ones cannot be kept",
                     self.path, e)
        return conn

    def _connect(self, *, read_only: bool) -> sqlite3.Connection:
        if read_only:
            # mode=ro still needs the -shm file of a WAL database; with the folder read-only it
            # cannot be created, and immutable=1 reads the main file without it (nobody can write there)
            try:
                conn = self._sqlite(f"file:{self.path}?mode=ro", uri=True)
                self._probe(conn)
            except sqlite3.OperationalError:
                conn = self._sqlite(f"file:{self.path}?mode=ro&immutable=1", uri=True)
                self._probe(conn)
            return conn
        conn = self._sqlite(self.path)
        try:
            # The first transaction marks a new file (before WAL mode, so the mark is written to the
            # main file itself), and fails now, not after the first batch, when the file is
            # read-only; waiting only ~0 s for it tells whether another process holds the lock.
            with _JOURNAL_LOCK:
                done, merged = self._transact(conn, self._setup, _LOCK_PROBE_S)
                if done:
                    self._drop_journals(merged)
            if not done:
                self.locked = True
                self._warn_locked()
                if "crc" not in self._columns(conn):  # a new or old file its holder has not set up yet
                    done, _ = self._transact(conn, self._setup_schema, self._wait)
                    if not done:
                        raise StoreError(f"results store {self.path} is locked by another process and not set up "
                                         f"yet; wait for it to finish, or give --store a new file path")
            if self._pragma(conn, "journal_mode") != "wal":
                try:
                    conn.execute("PRAGMA journal_mode = WAL")
                except sqlite3.OperationalError as e:
                    if not _busy(e):
                        raise
                    log.info("results store %s stays in rollback-journal mode for now (%s)", self.path, e)
            conn.execute("PRAGMA synchronous = NORMAL")
            if not done:  # else the setup walked the table already
                self._probe(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    def _setup(self, conn: sqlite3.Connection) -> list[tuple[Path, int, int]]:
        """In the open's write transaction: mark the file, create the table, merge the journals of
        ended processes (and this one's); returns the merged journals as (path, rows, lines skipped)."""
        app = conn.execute("PRAGMA application_id").fetchone()[0]
        if app != APPLICATION_ID:
            tables = {self._text(r[0]) for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if app != 0 or (tables and "records" not in tables):  # changed since the raw check
                raise StoreError(_refusal(self.path, "a SQLite database of another program"))
        self._setup_schema(conn)
        self._probe(conn)  # a garbled file fails here, before the mark or a journal is written into it
        if app != APPLICATION_ID:
            conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        merged = []
        for path, pid in self._journals():
            if pid != os.getpid() and _alive(pid):
                continue  # a live writer appends to it; it merges its own journal
            try:
                rows, skipped = _read_journal(path)
            except OSError as e:
                log.info("results store %s: cannot read journal %s (%s); left for a later open",
                         self.path, path.name, e.strerror or e)
                continue
            conn.executemany(_INSERT, rows)
            merged.append((path, len(rows), skipped))
        return merged

    def _setup_schema(self, conn: sqlite3.Connection) -> None:
        conn.execute(_SCHEMA)
        if "crc" not in self._columns(conn):
            try:
                conn.execute("ALTER TABLE records ADD COLUMN crc INTEGER")
            except sqlite3.OperationalError as e:
                if "duplicate column" not in str(e):  # another process added it first
                    raise

    def _journals(self) -> list[tuple[Path, int]]:
        """Side journals next to the store, with the pid in their name."""
        folder = Path(os.path.abspath(self.path)).parent
        pattern = re.compile(re.escape(self.path.name) + r"\.journal-(\d+)\.jsonl")
        try:
            names = os.listdir(folder)
        except OSError:
            return []
        out = []
        for name in sorted(names):
            m = pattern.fullmatch(name)
            if m and int(m.group(1)) > 0:
                try:
                    if stat.S_ISREG(os.stat(folder / name).st_mode):
                        out.append((folder / name, int(m.group(1))))
                except OSError:
                    continue
        return out

    def _drop_journals(self, merged: list[tuple[Path, int, int]]) -> None:
        """After the merge committed: delete the journals (holding _JOURNAL_LOCK)."""
        for path, n, skipped in merged:
            _PENDING.pop(path, None)
            try:
                path.unlink()
            except FileNotFoundError:
                pass
            except OSError as e:
                log.info("results store %s: merged journal %s but cannot delete it (%s)", self.path, path.name,
                         e.strerror or e)
            log.info("results store %s: merged %d record(s) from journal %s%s", self.path, n, path.name,
                     f" ({skipped} torn or damaged line(s) skipped: recomputed when needed)" if skipped else "")

    def _warn_locked(self) -> None:
        holders = _holders(self.path)
        who = (f"another process (with it open: {', '.join(holders)})" if holders
               else "another process or connection (none that this user can see has it open)")
        log.warning("results store %s is locked by %s; writes will be retried for up to %g s (%s), and results that "
                    "cannot be written then go to the side journal %s next to the store", self.path, who, self._wait,
                    WAIT_ENV, self.journal.name)

    def _sqlite(self, target: str | Path, *, uri: bool = False) -> sqlite3.Connection:
        conn = sqlite3.connect(target, timeout=self._read_wait, check_same_thread=False, isolation_level=None, uri=uri)
        conn.text_factory = bytes  # decode values ourselves: one garbled record must not hide the others
        self._busy_timeout(conn, self._read_wait)
        return conn

    @staticmethod
    def _busy_timeout(conn: sqlite3.Connection, seconds: float) -> None:
        conn.execute(f"PRAGMA busy_timeout = {max(0, int(seconds * 1000))}")

    @staticmethod
    def _text(x: bytes | str) -> str:
        return x.decode() if isinstance(x, bytes) else x

    @classmethod
    def _pragma(cls, conn: sqlite3.Connection, name: str) -> str:
        return cls._text(conn.execute(f"PRAGMA {name}").fetchone()[0])

    @classmethod
    def _columns(cls, conn: sqlite3.Connection) -> set[str]:
        return {cls._text(r[1]) for r in conn.execute("PRAGMA table_info(records)")}

    @staticmethod
    def _probe(conn: sqlite3.Connection) -> None:
        """Walk every page of the table (count) so a garbled file is found now, not mid-run."""
        conn.execute("SELECT count(*) FROM records").fetchone()

    def _quarantine(self, e: sqlite3.Error) -> None:
        """Move a corrupt store of ours (with its -wal and -shm, which must not meet a new file)
        aside; a file that is not provably ours is refused instead, and left as it is."""
        why = _not_ours(self.path)
        if why is not None:
            raise StoreError(f"results store {self.path} is corrupt ({e}) and unrecognisable ({why}), so it was left "
                             f"as it is; move it away, or give --store a new file path") from e
        real = Path(os.path.realpath(self.path))  # a symlink's target is the file SQLite wrote
        bad = real.with_name(f"{real.name}.corrupt-{int(time.time())}-{os.getpid()}")
        try:
            real.rename(bad)
            for side in ("-wal", "-shm"):
                p = Path(f"{real}{side}")
                if p.exists():
                    p.rename(Path(f"{bad}{side}"))
        except OSError as e2:
            raise StoreError(f"results store {self.path} is corrupt ({e}) and cannot be moved aside "
                             f"({e2.strerror or e2}); delete it, or {_STORE_HINT}") from e
        log.warning("results store %s is corrupt (%s); moved to %s, results will be recomputed", self.path, e, bad.name)

    def _reopen_after_corruption(self, e: sqlite3.Error) -> None:
        try:
            self._conn.close()
        except sqlite3.Error:
            pass
        self._quarantine(e)
        self.read_only, self._read_only_why = False, ""
        self._conn = self._open()
        self._crc = "crc" if "crc" in self._columns(self._conn) else "NULL"  # NULL: an old read-only file

    # ------------------------------------------------------------------------- reading

    def get_many(self, keys: Iterable[str]) -> dict[str, Any]:
        """Records found for these keys (missing keys are absent from the result).

        A record whose bytes fail their checksum, do not parse, or hold NaN or +-inf is
        dropped (and deleted, so it is recomputed and rewritten); a garbled file is moved
        aside and nothing is found in it. Records this process could only journal (the store
        was locked) are served too.
        """
        keys = list(keys)
        out: dict[str, Any] = {}
        bad: list[str] = []
        with self._lock:
            try:
                for s in range(0, len(keys), 500):
                    chunk = keys[s : s + 500]
                    q = f"SELECT key, value, {self._crc} FROM records WHERE key IN ({','.join('?' * len(chunk))})"
                    for k, v, crc in self._conn.execute(q, chunk).fetchall():
                        k = k.decode("utf-8", "replace")
                        if crc is not None and zlib.crc32(v) != crc:
                            bad.append(k)
                            continue
                        try:
                            out[k] = _loads(v)
                        except ValueError:  # UnicodeDecodeError and NaN/Infinity included
                            bad.append(k)
            except sqlite3.Error as e:
                if _busy(e):
                    raise StoreError(f"results store {self.path} stayed locked by another process for "
                                     f"{self._read_wait:g} s while reading; rerun when it is done") from e
                if not _corrupt(e):
                    raise StoreError(f"results store {self.path} unreadable: {e}; move it away to recompute") from e
                self._reopen_after_corruption(e)
                out, bad = {}, []
            if bad:
                log.warning("results store %s: %d record(s) failed their checksum, do not parse or hold NaN/inf "
                            "(%s...); recomputing them", self.path, len(bad), bad[0][:12])
                self._delete(bad)
            with _JOURNAL_LOCK:
                pending = _PENDING.get(self.journal, {})
                journaled = {k: pending[k][3] for k in keys if k not in out and k in pending}
        for k, v in journaled.items():
            out[k] = _loads(v)  # checked when written
        return out

    def _delete(self, keys: list[str]) -> None:
        if self.read_only:
            return
        try:  # a short wait: with another writer holding the lock, the rows are ignored on read anyway
            self._busy_timeout(self._conn, _BUSY_FIRST_S)
            self._conn.executemany("DELETE FROM records WHERE key = ?", [(k,) for k in keys])
        except sqlite3.Error as e:  # best effort
            log.info("could not delete bad records from %s: %s", self.path, e)
        finally:
            self._busy_timeout(self._conn, self._read_wait)

    # ------------------------------------------------------------------------- writing

    def put_many(self, op: str, records: Mapping[str, Any]) -> None:
        """Write records in one transaction (all or nothing); existing keys are left as they are.

        While another process holds the write lock, the write retries with backoff for up to
        $EVALCORE_STORE_WAIT seconds; then the records go to this process's side journal
        (`journal`), are served by `get_many`, and are written with the next successful write.
        While records wait in the journal, a write makes one short attempt (0.2 s) instead.

        Raises
        ------
        StoreError
            A record holds NaN or +-inf (nothing of the batch is written); read-only folder
            or file, disk full, a journal that cannot be written, or another write failure;
            one line that says what to do. Records committed before stay readable.
        """
        now = time.time()
        rows: list[Row] = []
        for k, v in records.items():
            try:
                text = json.dumps(v, separators=(",", ":"), allow_nan=False)
            except ValueError as e:
                found = _non_finite(v)
                if found is None:
                    raise
                raise StoreError(f"refusing to store {op} record {k[:12]}...: {found[1]} at {found[0]}; non-finite "
                                 "values are never stored, so nothing of this batch was written (a NaN or inf "
                                 "result is a numerical failure: check the model's dtype and the inputs)") from e
            rows.append((k, op, now, text, zlib.crc32(text.encode())))
        with self._lock:
            if self.read_only:
                raise StoreError(self._write_error(self._read_only_why))
            for attempt in (1, 2):
                with _JOURNAL_LOCK:
                    pending = dict(_PENDING.get(self.journal, {}))
                todo = [*pending.values(), *rows]
                if not todo:
                    return
                # Once this process journals, the lock has stayed held for the whole wait: later
                # batches make one short attempt each, so the run keeps its pace.
                wait = min(self._wait, _BUSY_FIRST_S) if pending else self._wait
                try:
                    done, _ = self._transact(self._conn, lambda c: c.executemany(_INSERT, todo), wait)
                except sqlite3.Error as e:
                    if attempt == 1 and _corrupt(e):
                        self._reopen_after_corruption(e)
                        continue
                    raise StoreError(self._write_error(self._why(e))) from e
                if done:
                    self._settle(pending)
                else:
                    self._append_journal(rows)
                return

    def _transact(self, conn: sqlite3.Connection, body: Callable[[sqlite3.Connection], Any],
                  wait: float) -> tuple[bool, Any]:
        """Run `body` in a write transaction, retrying while another process holds the lock
        (busy timeout 0.2 s per attempt, doubling, for up to `wait` seconds in all).

        Returns (True, body's result), or (False, None) when the lock stayed held; other
        errors are raised, with the transaction rolled back.
        """
        deadline = time.monotonic() + wait
        step = min(_BUSY_FIRST_S, wait)
        while True:
            self._busy_timeout(conn, min(step, max(0.0, deadline - time.monotonic())))
            try:
                conn.execute("BEGIN IMMEDIATE")
                self._busy_timeout(conn, self._read_wait)  # a rollback-journal commit waits for readers
                result = body(conn)
                conn.execute("COMMIT")
                return True, result
            except BaseException as e:
                if conn.in_transaction:
                    try:
                        conn.execute("ROLLBACK")
                    except sqlite3.Error:
                        pass
                if not (isinstance(e, sqlite3.Error) and _busy(e)):
                    raise
                if time.monotonic() >= deadline:
                    return False, None
                step = min(step * 2, _BUSY_CAP_S)
            finally:
                self._busy_timeout(conn, self._read_wait)

    def _settle(self, written: dict[str, Row]) -> None:
        """Journaled rows are now in the store: forget them, and delete the journal once none is left."""
        if not written:
            return
        journal = self.journal
        with _JOURNAL_LOCK:
            pending = _PENDING.get(journal, {})
            for k in written:
                pending.pop(k, None)
            if pending:
                return
            _PENDING.pop(journal, None)
            try:
                journal.unlink()
            except FileNotFoundError:
                pass
            except OSError as e:  # merged again (INSERT OR IGNORE) by a later open
                log.info("results store %s: cannot delete journal %s (%s)", self.path, journal.name, e.strerror or e)
        log.info("results store %s: %d journaled record(s) written to the store", self.path, len(written))

    def _append_journal(self, rows: list[Row]) -> None:
        """Append rows to this process's side journal (fsynced), and keep them to serve and write later."""
        journal = self.journal
        blob = b"".join(json.dumps({"key": k, "op": op, "created": t, "value": v, "crc": c},
                                   separators=(",", ":")).encode() + b"\n" for k, op, t, v, c in rows)
        with _JOURNAL_LOCK:
            try:
                new = not journal.exists()
                fd = os.open(journal, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
                try:
                    size = os.fstat(fd).st_size
                    try:
                        view = memoryview(blob)
                        while view:
                            view = view[os.write(fd, view):]
                        os.fsync(fd)
                    except OSError:
                        try:  # no torn line for the next append to follow
                            os.ftruncate(fd, size)
                        except OSError:
                            pass
                        raise
                finally:
                    os.close(fd)
                if new:
                    self._fsync_folder(journal.parent)
            except OSError as e:
                why = self._why(e)
                raise StoreError(self._write_error(f"it is locked by another process and its journal {journal.name} "
                                                   f"cannot be written ({why})")) from e
            _PENDING.setdefault(journal, {}).update((r[0], r) for r in rows)
            warn = journal not in _JOURNAL_WARNED
            _JOURNAL_WARNED.add(journal)
        if warn:
            log.warning("results store %s is still locked after %g s; new results go to %s next to it (kept, and "
                        "written to the store when the lock is free, or merged by a later run)", self.path,
                        self._wait, journal.name)

    @staticmethod
    def _fsync_folder(folder: Path) -> None:
        try:
            fd = os.open(folder, os.O_RDONLY)
        except OSError:
            return
        try:
            os.fsync(fd)
        except OSError:
            pass
        finally:
            os.close(fd)

    def _write_error(self, why: str) -> str:
        try:
            n = self._conn.execute("SELECT count(*) FROM records").fetchone()[0]
            n = f"{n} result{'s' if n != 1 else ''}"
        except sqlite3.Error:
            n = "results"
        kept = "stored so far are kept; a rerun resumes from them" if "disk" in why else "stored there stay readable"
        return f"cannot write results to {self.path}: {why}; {_hint(why)} ({n} {kept})"

    @staticmethod
    def _why(e: BaseException) -> str:
        """A short reason from an sqlite3 or OS error: disk full, read-only, locked, or its own text."""
        code = getattr(e, "sqlite_errorcode", None)
        err = getattr(e, "errno", None)
        text = str(e)
        if code == sqlite3.SQLITE_FULL or err in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT) or "disk is full" in text:
            return "disk full"
        if (code == sqlite3.SQLITE_READONLY or err in (errno.EROFS, errno.EACCES, errno.EPERM) or "readonly" in text
                or "unable to open" in text):
            return "the folder or file is read-only"
        if isinstance(e, sqlite3.Error) and _busy(e):
            return "locked by another process"
        if code is not None and (code & 0xFF) == sqlite3.SQLITE_IOERR:
            return f"disk I/O error ({getattr(e, 'sqlite_errorname', code)}): disk full or failing"
        return text

    # ------------------------------------------------------------------------- bookkeeping

    def count(self, op: str | None = None) -> int:
        """Records in the file (journaled ones not yet written are not counted)."""
        with self._lock:
            if op is None:
                return self._conn.execute("SELECT count(*) FROM records").fetchone()[0]
            return self._conn.execute("SELECT count(*) FROM records WHERE op = ?", (op,)).fetchone()[0]

    def close(self) -> None:
        """Close the file; journaled records are written first if the lock is free now (else a
        later open merges the journal once this process has ended)."""
        with self._lock:
            try:
                with _JOURNAL_LOCK:
                    pending = dict(_PENDING.get(self.journal, {}))
                if pending and not self.read_only:
                    done, _ = self._transact(self._conn, lambda c: c.executemany(_INSERT, list(pending.values())),
                                             _BUSY_FIRST_S)
                    if done:
                        self._settle(pending)
            except sqlite3.Error as e:
                log.info("results store %s: journaled records not written at close (%s); a later open merges them",
                         self.path, e)
            finally:
                self._conn.close()


def merge(sources: Iterable[str | Path], *, into: str | Path) -> dict[str, int]:
    """Copy every record of the source store files into `into` (created if missing).

    For per-node stores of a multi-node run (SQLite must not be shared over NFS): each node
    writes its own file, then one process merges them. Keys are content hashes, so a record
    already in `into` is left as it is (`INSERT OR IGNORE`) and merging twice adds nothing.
    Checksums travel with their records and are checked when a record is read. Every source
    and the target are checked to be evalcore stores (from their raw bytes) before any is
    opened, so a wrong path changes nothing.

    Returns
    -------
    New records added, per source path (in the order given).

    Raises
    ------
    StoreError
        A source is missing, is the target itself or is not a results store; the target is
        not a results store, is read-only, or stays locked by another process.
    """
    into = Path(into)
    sources = [Path(s) for s in sources]
    for src in sources:
        if not src.exists():
            raise StoreError(f"store file {src} does not exist; give the .sqlite file each node wrote")
        if src.resolve() == into.resolve():
            raise StoreError(f"store file {src} is the merge target; give --into a different file")
        why = _not_ours(src) or ("it is empty" if src.stat().st_size == 0 else None)
        if why is not None:
            raise StoreError(f"{src} is not an evalcore results store ({why}); give store-merge the .sqlite "
                             "file each node wrote")
    check_store_file(into, "--into")
    target = Store(into)
    added: dict[str, int] = {}
    try:
        if target.read_only:
            raise StoreError(f"cannot merge into {target.path}: the folder or file is read-only; {_STORE_HINT}")
        for src in sources:
            with target._lock:
                conn = target._conn
                try:
                    conn.execute("ATTACH DATABASE ? AS src", (str(src),))
                except sqlite3.Error as e:
                    raise StoreError(f"cannot open store file {src}: {Store._why(e)}") from e
                try:
                    cols = {Store._text(r[1]) for r in conn.execute("PRAGMA src.table_info(records)")}
                    if not {"key", "op", "created", "value"} <= cols:
                        raise StoreError(f"{src} is not an evalcore results store (no records table)")
                    crc = "crc" if "crc" in cols else "NULL"  # older stores: no checksum, trusted as before

                    def copy(c: sqlite3.Connection, crc: str = crc) -> int:
                        before = c.execute("SELECT count(*) FROM main.records").fetchone()[0]
                        c.execute("INSERT OR IGNORE INTO main.records (key, op, created, value, crc) "
                                  f"SELECT key, op, created, value, {crc} FROM src.records")
                        return c.execute("SELECT count(*) FROM main.records").fetchone()[0] - before

                    done, n = target._transact(conn, copy, target._wait)
                    if not done:
                        raise StoreError(f"cannot merge {src} into {target.path}: it stayed locked by another "
                                         f"process for {target._wait:g} s ({WAIT_ENV}); rerun store-merge when that "
                                         "process is done")
                    added[str(src)] = n
                except sqlite3.Error as e:
                    raise StoreError(f"cannot merge {src} into {target.path}: {Store._why(e)}; is it an evalcore "
                                     "results store?") from e
                finally:
                    conn.execute("DETACH DATABASE src")
    finally:
        target.close()
    return added
