"""The Store: one SQLite results file, opened (set up, marked, its journals merged, a corrupt one
moved aside, a read-only one served), read with every record checked, and written in one
transaction a batch, with retry and backoff while another process holds the lock and the side
journal after that. The faults and what the store does about each: the package's docstring.
"""
from __future__ import annotations

import logging
import os
import sqlite3
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from evalcore import assets
from evalcore.errors import StoreError
from evalcore.store.db import (BUSY_FIRST_S, LOCK_PROBE_S, READ_WAIT_MIN_S, STORE_HINT, WAIT_ENV, busy_timeout,
                               columns, connect, hint, is_busy, is_corrupt, pragma, probe, reason, store_wait, text,
                               transact)
from evalcore.store.journal import (JOURNAL_LOCK, Merged, append, drop_merged, holders, journal_path,
                                    journaled_values, merge_ended, pending, settle)
from evalcore.store.ownership import check_store_file, quarantine, refusal
from evalcore.store.records import APPLICATION_ID, INSERT, SCHEMA, Row, decode, loads, rows_of

log = logging.getLogger("evalcore.store")  # the package's one logger: users and tests filter on this name


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
        self._read_wait = max(self._wait, READ_WAIT_MIN_S)
        self._attach()

    @property
    def journal(self) -> Path:
        """This process's side journal: `<store path>.journal-<pid>.jsonl`, next to the store."""
        return journal_path(self.path, os.getpid())

    # ------------------------------------------------------------------------- opening

    def _attach(self) -> None:
        """Open the file as `_conn`, and learn whether its table has the `crc` column."""
        self._conn = self._open()
        self._crc = "crc" if "crc" in columns(self._conn) else "NULL"  # NULL: an old read-only file

    def _open(self) -> sqlite3.Connection:
        """A connection to the file: for writing, or read-only (`read_only`) when that is all the
        folder or file allows; a corrupt file of ours is moved aside and a new one started."""
        check_store_file(self.path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StoreError(f"cannot create the folder of results store {self.path}: {e.strerror or e}; "
                             f"{STORE_HINT}") from e
        try:
            return self._connect()
        except sqlite3.Error as e:
            if is_corrupt(e):
                quarantine(self.path, e)
                return self._open()
            why = reason(e)
            if not self.path.exists():
                raise StoreError(f"cannot create results store {self.path}: {why}; {hint(why)}") from e
            try:  # a read-only folder or file: serve what is stored, refuse writes
                conn = self._connect_read_only()
            except sqlite3.Error as e2:
                if is_corrupt(e2):
                    raise StoreError(f"results store {self.path} is corrupt ({e2}) and its folder is read-only; "
                                     f"{STORE_HINT}") from e2
                raise StoreError(f"cannot open results store {self.path}: {why}; {hint(why)}") from e
            self.read_only, self._read_only_why = True, why  # or a disk too full for the -shm file
            log.info("results store %s opened read-only (%s): stored results are read, new ones cannot be kept",
                     self.path, e)
            return conn

    def _connect_read_only(self) -> sqlite3.Connection:
        """A reading connection to a file this process cannot write, its table walked once."""
        # mode=ro still needs the -shm file of a WAL database; with the folder read-only it
        # cannot be created, and immutable=1 reads the main file without it (nobody can write there)
        try:
            conn = connect(f"file:{self.path}?mode=ro", self._read_wait, uri=True)
            probe(conn)
        except sqlite3.OperationalError:
            conn = connect(f"file:{self.path}?mode=ro&immutable=1", self._read_wait, uri=True)
            probe(conn)
        return conn

    def _connect(self) -> sqlite3.Connection:
        """A writing connection to a set-up file in WAL mode; `locked` when another process held the lock."""
        conn = connect(self.path, self._read_wait)
        try:
            # The first transaction marks a new file (before WAL mode, so the mark is written to the
            # main file itself), and fails now, not after the first batch, when the file is
            # read-only; waiting only ~0 s for it tells whether another process holds the lock.
            with JOURNAL_LOCK:
                setup = transact(conn, self._setup, LOCK_PROBE_S, self._read_wait)
                if setup[0]:
                    drop_merged(self.path, setup[1])
            if not setup[0]:
                self.locked = True
                self._warn_locked()
                if "crc" not in columns(conn):  # a new or old file its holder has not set up yet
                    done, _ = transact(conn, _setup_schema, self._wait, self._read_wait)
                    if not done:
                        raise StoreError(f"results store {self.path} is locked by another process and not set up "
                                         f"yet; wait for it to finish, or give --store a new file path")
            if pragma(conn, "journal_mode") != "wal":
                try:
                    conn.execute("PRAGMA journal_mode = WAL")
                except sqlite3.OperationalError as e:
                    if not is_busy(e):
                        raise
                    log.info("results store %s stays in rollback-journal mode for now (%s)", self.path, e)
            conn.execute("PRAGMA synchronous = NORMAL")
            if not setup[0]:  # else the setup walked the table already
                probe(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    def _setup(self, conn: sqlite3.Connection) -> list[Merged]:
        """In the open's write transaction: mark the file, create the table, merge the journals of
        ended processes (and this one's); returns the merged journals as (path, rows, lines skipped)."""
        app = conn.execute("PRAGMA application_id").fetchone()[0]
        if app != APPLICATION_ID:
            tables = {text(r[0]) for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if app != 0 or (tables and "records" not in tables):  # changed since the raw check
                raise StoreError(refusal(self.path, "a SQLite database of another program"))
        _setup_schema(conn)
        probe(conn)  # a garbled file fails here, before the mark or a journal is written into it
        if app != APPLICATION_ID:
            conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        return merge_ended(conn, self.path)

    def _warn_locked(self) -> None:
        found = holders(self.path)
        who = (f"another process (with it open: {', '.join(found)})" if found
               else "another process or connection (none that this user can see has it open)")
        log.warning("results store %s is locked by %s; writes will be retried for up to %g s (%s), and results that "
                    "cannot be written then go to the side journal %s next to the store", self.path, who, self._wait,
                    WAIT_ENV, self.journal.name)

    def _reopen_after_corruption(self, e: sqlite3.Error) -> None:
        try:
            self._conn.close()
        except sqlite3.Error:
            pass
        quarantine(self.path, e)
        self.read_only, self._read_only_why = False, ""
        self._attach()

    # ------------------------------------------------------------------------- reading

    def get_many(self, keys: Iterable[str]) -> dict[str, Any]:
        """Records found for these keys (missing keys are absent from the result).

        A record whose bytes fail their checksum, do not parse, or hold NaN or +-inf is
        dropped (and deleted, so it is recomputed and rewritten); a garbled file is moved
        aside and nothing is found in it. Records this process could only journal (the store
        was locked) are served too.
        """
        keys = list(keys)
        with self._lock:
            out, bad = self._read(keys)
            if bad:
                log.warning("results store %s: %d record(s) failed their checksum, do not parse or hold NaN/inf "
                            "(%s...); recomputing them", self.path, len(bad), bad[0][:12])
                self._delete(bad)
            journaled = journaled_values(self.journal, (k for k in keys if k not in out))
        for k, v in journaled.items():
            out[k] = loads(v)  # checked when written
        return out

    def _read(self, keys: list[str]) -> tuple[dict[str, Any], list[str]]:
        """The records stored for `keys`, and the keys of those that fail their checks; nothing
        when the file turns out garbled (it is moved aside)."""
        out: dict[str, Any] = {}
        bad: list[str] = []
        try:
            for s in range(0, len(keys), 500):
                chunk = keys[s : s + 500]
                q = f"SELECT key, value, {self._crc} FROM records WHERE key IN ({','.join('?' * len(chunk))})"
                for k, v, crc in self._conn.execute(q, chunk).fetchall():
                    key = k.decode("utf-8", "replace")
                    try:
                        out[key] = decode(v, crc)
                    except ValueError:  # UnicodeDecodeError and NaN/Infinity included
                        bad.append(key)
        except sqlite3.Error as e:
            if is_busy(e):
                raise StoreError(f"results store {self.path} stayed locked by another process for "
                                 f"{self._read_wait:g} s while reading; rerun when it is done") from e
            if not is_corrupt(e):
                raise StoreError(f"results store {self.path} unreadable: {e}; move it away to recompute") from e
            self._reopen_after_corruption(e)
            return {}, []
        return out, bad

    def _delete(self, keys: list[str]) -> None:
        if self.read_only:
            return
        try:  # a short wait: with another writer holding the lock, the rows are ignored on read anyway
            busy_timeout(self._conn, BUSY_FIRST_S)
            self._conn.executemany("DELETE FROM records WHERE key = ?", [(k,) for k in keys])
        except sqlite3.Error as e:  # best effort
            log.info("could not delete bad records from %s: %s", self.path, e)
        finally:
            busy_timeout(self._conn, self._read_wait)

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
        rows = rows_of(op, records)
        with self._lock:
            if self.read_only:
                raise StoreError(self._write_error(self._read_only_why))
            for attempt in (1, 2):
                waiting = pending(self.journal)
                todo = [*waiting.values(), *rows]
                if not todo:
                    return
                # Once this process journals, the lock has stayed held for the whole wait: later
                # batches make one short attempt each, so the run keeps its pace.
                wait = min(self._wait, BUSY_FIRST_S) if waiting else self._wait
                try:
                    done = self._insert(todo, wait)
                except sqlite3.Error as e:
                    if attempt == 1 and is_corrupt(e):
                        self._reopen_after_corruption(e)
                        continue
                    raise StoreError(self._write_error(reason(e))) from e
                if done:
                    settle(self.path, self.journal, waiting)
                else:
                    self._journal(rows)
                return

    def _insert(self, rows: list[Row], wait: float) -> bool:
        """Insert rows in one transaction, waiting up to `wait` s for the lock; False when it stayed held."""
        done, _ = transact(self._conn, lambda c: c.executemany(INSERT, rows), wait, self._read_wait)
        return done

    def _journal(self, rows: list[Row]) -> None:
        """Keep rows the locked store did not take in this process's side journal; warn the first time."""
        journal = self.journal
        try:
            first = append(journal, rows)
        except OSError as e:
            raise StoreError(self._write_error(f"it is locked by another process and its journal {journal.name} "
                                               f"cannot be written ({reason(e)})")) from e
        if first:
            log.warning("results store %s is still locked after %g s; new results go to %s next to it (kept, and "
                        "written to the store when the lock is free, or merged by a later run)", self.path,
                        self._wait, journal.name)

    def _write_error(self, why: str) -> str:
        try:
            stored = self._count(None)
            n = f"{stored} result{'s' if stored != 1 else ''}"
        except sqlite3.Error:
            n = "results"
        kept = "stored so far are kept; a rerun resumes from them" if "disk" in why else "stored there stay readable"
        return f"cannot write results to {self.path}: {why}; {hint(why)} ({n} {kept})"

    # ------------------------------------------------------------------------- bookkeeping

    def count(self, op: str | None = None) -> int:
        """The number of records in the file, of operation `op` if given (journaled ones not yet
        written are not counted)."""
        with self._lock:
            return self._count(op)

    def _count(self, op: str | None) -> int:
        if op is None:
            return int(self._conn.execute("SELECT count(*) FROM records").fetchone()[0])
        return int(self._conn.execute("SELECT count(*) FROM records WHERE op = ?", (op,)).fetchone()[0])

    def close(self) -> None:
        """Close the file; journaled records are written first if the lock is free now (else a
        later open merges the journal once this process has ended)."""
        with self._lock:
            try:
                waiting = pending(self.journal)
                if waiting and not self.read_only and self._insert(list(waiting.values()), BUSY_FIRST_S):
                    settle(self.path, self.journal, waiting)
            except sqlite3.Error as e:
                log.info("results store %s: journaled records not written at close (%s); a later open merges them",
                         self.path, e)
            finally:
                self._conn.close()


def _setup_schema(conn: sqlite3.Connection) -> None:
    """Create the records table, or add the `crc` column to an older one."""
    conn.execute(SCHEMA)
    if "crc" not in columns(conn):
        try:
            conn.execute("ALTER TABLE records ADD COLUMN crc INTEGER")
        except sqlite3.OperationalError as e:
            if "duplicate column" not in str(e):  # another process added it first
                raise
