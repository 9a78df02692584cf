"""Talking to SQLite: connections with the store's settings, faults told apart (corrupt, locked,
disk full, read-only) with what to do about them, and write transactions that wait out another
process's lock with backoff for up to $EVALCORE_STORE_WAIT seconds.
"""
from __future__ import annotations

import errno
import math
import os
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal, TypeVar

from evalcore.errors import StoreError

WAIT_ENV = "EVALCORE_STORE_WAIT"  # seconds a write waits for a store locked by another process
WAIT_DEFAULT = 30.0

LOCK_PROBE_S = 0.25  # wait at open before calling the store locked (a batch commit takes milliseconds)
BUSY_FIRST_S, BUSY_CAP_S = 0.2, 5.0  # a write's busy timeout per attempt: doubles up to the cap
READ_WAIT_MIN_S = 5.0  # busy timeout of reads (and of a commit waiting for readers), at least

STORE_HINT = "pass --store PATH or set EVALCORE_CACHE to a writable folder"
FULL_HINT = "free disk space, or pass --store PATH / set EVALCORE_CACHE to a folder on another disk"

_CORRUPT = {sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB}

T = TypeVar("T")
# What `transact` gives: the body ran and committed, with its result; or the lock stayed held.
Committed = tuple[Literal[True], T]
Held = tuple[Literal[False], None]


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


# ----------------------------------------------------------------------------- faults

def hint(why: str) -> str:
    """What to do about a write that failed for `why` (a `reason`): free disk space, or another store."""
    return FULL_HINT if "disk" in why else STORE_HINT


def is_corrupt(e: sqlite3.Error) -> bool:
    """Whether SQLite found the file garbled or not a database at all."""
    return getattr(e, "sqlite_errorcode", None) in _CORRUPT or "malformed" in str(e) or "not a database" in str(e)


def is_busy(e: sqlite3.Error) -> bool:
    """Whether another connection holds the lock this one waited for."""
    code = getattr(e, "sqlite_errorcode", None)
    return (code is not None and (code & 0xFF) == sqlite3.SQLITE_BUSY) or "database is locked" in str(e)


def reason(e: BaseException) -> str:
    """A short reason from an sqlite3 or OS error: disk full, read-only, locked, or its own text."""
    code = getattr(e, "sqlite_errorcode", None)
    err = getattr(e, "errno", None)
    text = str(e)
    if code == sqlite3.SQLITE_FULL or err in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT) or "disk is full" in text:
        return "disk full"
    if (code == sqlite3.SQLITE_READONLY or err in (errno.EROFS, errno.EACCES, errno.EPERM) or "readonly" in text
            or "unable to open" in text):
        return "the folder or file is read-only"
    if isinstance(e, sqlite3.Error) and is_busy(e):
        return "locked by another process"
    if code is not None and (code & 0xFF) == sqlite3.SQLITE_IOERR:
        return f"disk I/O error ({getattr(e, 'sqlite_errorname', code)}): disk full or failing"
    return text


# ----------------------------------------------------------------------------- connections

def connect(target: str | Path, read_wait: float, *, uri: bool = False) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit), usable from any thread, whose
    text comes back as bytes, and which waits `read_wait` seconds for a lock."""
    conn = sqlite3.connect(target, timeout=read_wait, check_same_thread=False, isolation_level=None, uri=uri)
    conn.text_factory = bytes  # decode values ourselves: one garbled record must not hide the others
    busy_timeout(conn, read_wait)
    return conn


def busy_timeout(conn: sqlite3.Connection, seconds: float) -> None:
    """Make `conn` wait up to `seconds` for another connection's lock."""
    conn.execute(f"PRAGMA busy_timeout = {max(0, int(seconds * 1000))}")


def text(x: bytes | str) -> str:
    """A text value of a connection from `connect` (bytes) as str."""
    return x.decode() if isinstance(x, bytes) else x


def pragma(conn: sqlite3.Connection, name: str) -> str:
    """The value of PRAGMA `name`, as text."""
    return text(conn.execute(f"PRAGMA {name}").fetchone()[0])


def columns(conn: sqlite3.Connection, schema: str = "") -> set[str]:
    """The column names of the `records` table (of attached database `schema` if given); empty
    when there is no such table."""
    prefix = f"{schema}." if schema else ""
    return {text(r[1]) for r in conn.execute(f"PRAGMA {prefix}table_info(records)")}


def probe(conn: sqlite3.Connection) -> None:
    """Walk every page of the table (count) so a garbled file is found now, not mid-run."""
    conn.execute("SELECT count(*) FROM records").fetchone()


def transact(conn: sqlite3.Connection, body: Callable[[sqlite3.Connection], T], wait: float,
             read_wait: float) -> Committed[T] | Held:
    """Run `body` in a write transaction, retrying while another process holds the lock
    (busy timeout 0.2 s per attempt, doubling, for up to `wait` seconds in all).

    Returns (True, body's result), or (False, None) when the lock stayed held; other
    errors are raised, with the transaction rolled back. Between attempts, and after,
    `conn` waits `read_wait` seconds for locks again.
    """
    deadline = time.monotonic() + wait
    step = min(BUSY_FIRST_S, wait)
    while True:
        busy_timeout(conn, min(step, max(0.0, deadline - time.monotonic())))
        try:
            conn.execute("BEGIN IMMEDIATE")
            busy_timeout(conn, read_wait)  # a rollback-journal commit waits for readers
            result = body(conn)
            conn.execute("COMMIT")
            return True, result
        except BaseException as e:
            if conn.in_transaction:
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
            if not (isinstance(e, sqlite3.Error) and is_busy(e)):
                raise
            if time.monotonic() >= deadline:
                return False, None
            step = min(step * 2, BUSY_CAP_S)
        finally:
            busy_timeout(conn, read_wait)
