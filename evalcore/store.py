"""Persistent results cache: one SQLite file, one row per (model, operation, item).

Each record is keyed by a content hash of everything that determines it: the model's
identity (name, weights fingerprint, dtype), the operation, the dataset identity and
preprocessing version, the item, and `CODE_VERSION`. Writes are one transaction per
batch, so a run killed with SIGKILL loses at most the batch in flight; SQLite's WAL mode
and `INSERT OR IGNORE` let several processes write the same work at once without
corruption or duplicate rows.

What can go wrong on disk, and what the store does about it:

    fault                                   detected by                      then
    the file is not SQLite / pages garbled  a full count at open, any query   warn once, move the file (and its
                                            failing with SQLITE_CORRUPT       -wal/-shm) aside, start empty: recompute
    a record's bytes changed (bit rot that  the record's CRC-32 (`crc`)       warn, delete that record: recompute it
    still parses as JSON)
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
import os
import sqlite3
import threading
import time
import zlib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from evalcore import assets
from evalcore.errors import StoreError

log = logging.getLogger(__name__)

CODE_VERSION = "1"  # bump when a stored computation changes meaning; old rows are then ignored

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

_CORRUPT = {sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB}
_STORE_HINT = "pass --store PATH or set EVALCORE_CACHE to a writable folder"
_FULL_HINT = "free disk space, or pass --store PATH / set EVALCORE_CACHE to a folder on another disk"


def _hint(why: str) -> str:
    return _FULL_HINT if "disk" in why else _STORE_HINT


def record_key(**parts: Any) -> str:
    """Content hash of the parts (JSON with sorted keys) plus CODE_VERSION."""
    blob = json.dumps({"v": CODE_VERSION, **parts}, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def _corrupt(e: sqlite3.Error) -> bool:
    return getattr(e, "sqlite_errorcode", None) in _CORRUPT or "malformed" in str(e) or "not a database" in str(e)


class Store:
    """A results store under a folder (default: the user cache folder, never the package).

    Parameters
    ----------
    path : SQLite file; default `<cache_dir>/results.sqlite`.

    Attributes
    ----------
    read_only : True when the file could only be opened for reading (read-only folder or
        file): stored results are served, and writing one raises StoreError.
    """

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path else assets.cache_dir() / "results.sqlite"
        self._lock = threading.Lock()
        self.read_only, self._read_only_why = False, ""
        self._conn = self._open()
        self._crc = "crc" if "crc" in self._columns(self._conn) else "NULL"  # NULL: an old read-only file

    # ------------------------------------------------------------------------- opening

    def _open(self) -> sqlite3.Connection:
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
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute(_SCHEMA)
            if "crc" not in self._columns(conn):
                try:
                    conn.execute("ALTER TABLE records ADD COLUMN crc INTEGER")
                except sqlite3.OperationalError as e:
                    if "duplicate column" not in str(e):  # another process added it first
                        raise
            self._probe(conn)
            conn.execute("BEGIN IMMEDIATE")  # fail now, not after the first batch, when the file is read-only
            conn.execute("ROLLBACK")
        except BaseException:
            conn.close()
            raise
        return conn

    @staticmethod
    def _sqlite(target: str | Path, *, uri: bool = False) -> sqlite3.Connection:
        conn = sqlite3.connect(target, timeout=60, check_same_thread=False, isolation_level=None, uri=uri)
        conn.text_factory = bytes  # decode values ourselves: one garbled record must not hide the others
        conn.execute("PRAGMA busy_timeout = 60000")
        return conn

    @staticmethod
    def _columns(conn: sqlite3.Connection) -> set[str]:
        return {r[1].decode() if isinstance(r[1], bytes) else r[1] for r in conn.execute("PRAGMA table_info(records)")}

    @staticmethod
    def _probe(conn: sqlite3.Connection) -> None:
        """Walk every page of the table (count) so a garbled file is found now, not mid-run."""
        conn.execute("SELECT count(*) FROM records").fetchone()

    def _quarantine(self, e: sqlite3.Error) -> None:
        """Move a corrupt store (with its -wal and -shm, which must not meet a new file) aside."""
        bad = self.path.with_name(f"{self.path.name}.corrupt-{int(time.time())}-{os.getpid()}")
        try:
            self.path.rename(bad)
            for side in ("-wal", "-shm"):
                p = Path(f"{self.path}{side}")
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

        A record whose bytes fail their checksum or do not parse is dropped (and deleted, so
        it is recomputed and rewritten); a garbled file is moved aside and nothing is found.
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
                            out[k] = json.loads(v)
                        except ValueError:  # UnicodeDecodeError included
                            bad.append(k)
            except sqlite3.Error as e:
                if not _corrupt(e):
                    raise StoreError(f"results store {self.path} unreadable: {e}; move it away to recompute") from e
                self._reopen_after_corruption(e)
                return {}
            if bad:
                log.warning("results store %s: %d record(s) failed their checksum or do not parse (%s...); recomputing them",
                            self.path, len(bad), bad[0][:12])
                self._delete(bad)
        return out

    def _delete(self, keys: list[str]) -> None:
        if self.read_only:
            return
        try:
            self._conn.executemany("DELETE FROM records WHERE key = ?", [(k,) for k in keys])
        except sqlite3.Error as e:  # best effort: the rows are ignored on read anyway
            log.info("could not delete bad records from %s: %s", self.path, e)

    # ------------------------------------------------------------------------- writing

    def put_many(self, op: str, records: Mapping[str, Any]) -> None:
        """Write records in one transaction (all or nothing); existing keys are left as they are.

        Raises
        ------
        StoreError
            Read-only folder or file, disk full, or another write failure; one line that
            says what to do. Records committed before stay readable.
        """
        now = time.time()
        rows = []
        for k, v in records.items():
            blob = json.dumps(v, separators=(",", ":")).encode()
            rows.append((k, op, now, blob.decode(), zlib.crc32(blob)))
        with self._lock:
            if self.read_only:
                raise StoreError(self._write_error(self._read_only_why))
            for attempt in (1, 2):
                try:
                    self._conn.execute("BEGIN IMMEDIATE")
                    self._conn.executemany("INSERT OR IGNORE INTO records (key, op, created, value, crc) "
                                           "VALUES (?, ?, ?, ?, ?)", rows)
                    self._conn.execute("COMMIT")
                    return
                except sqlite3.Error as e:
                    try:
                        self._conn.execute("ROLLBACK")
                    except sqlite3.Error:
                        pass
                    if attempt == 1 and _corrupt(e):
                        self._reopen_after_corruption(e)
                        continue
                    raise StoreError(self._write_error(self._why(e))) from e

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
        """A short reason from an sqlite3 or OS error: disk full, read-only, or its own text."""
        code = getattr(e, "sqlite_errorcode", None)
        err = getattr(e, "errno", None)
        text = str(e)
        if code == sqlite3.SQLITE_FULL or err in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT) or "disk is full" in text:
            return "disk full"
        if (code == sqlite3.SQLITE_READONLY or err in (errno.EROFS, errno.EACCES, errno.EPERM) or "readonly" in text
                or "unable to open" in text):
            return "the folder or file is read-only"
        if code is not None and (code & 0xFF) == sqlite3.SQLITE_IOERR:
            return f"disk I/O error ({getattr(e, 'sqlite_errorname', code)}): disk full or failing"
        return text

    # ------------------------------------------------------------------------- bookkeeping

    def count(self, op: str | None = None) -> int:
        with self._lock:
            if op is None:
                return self._conn.execute("SELECT count(*) FROM records").fetchone()[0]
            return self._conn.execute("SELECT count(*) FROM records WHERE op = ?", (op,)).fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def merge(sources: Iterable[str | Path], *, into: str | Path) -> dict[str, int]:
    """Copy every record of the source store files into `into` (created if missing).

    For per-node stores of a multi-node run (SQLite must not be shared over NFS): each node
    writes its own file, then one process merges them. Keys are content hashes, so a record
    already in `into` is left as it is (`INSERT OR IGNORE`) and merging twice adds nothing.
    Checksums travel with their records and are checked when a record is read.

    Returns
    -------
    New records added, per source path (in the order given).

    Raises
    ------
    StoreError
        A source is missing, is the target itself or is not a results store; the target is read-only.
    """
    target = Store(into)
    added: dict[str, int] = {}
    try:
        if target.read_only:
            raise StoreError(f"cannot merge into {target.path}: the folder or file is read-only; {_STORE_HINT}")
        for src in map(Path, sources):
            if not src.is_file():
                raise StoreError(f"store file {src} does not exist; give the .sqlite file each node wrote")
            if src.resolve() == target.path.resolve():
                raise StoreError(f"store file {src} is the merge target; give --into a different file")
            with target._lock:
                conn = target._conn
                try:
                    conn.execute("ATTACH DATABASE ? AS src", (str(src),))
                except sqlite3.Error as e:
                    raise StoreError(f"cannot open store file {src}: {Store._why(e)}") from e
                try:
                    cols = {r[1].decode() if isinstance(r[1], bytes) else r[1]
                            for r in conn.execute("PRAGMA src.table_info(records)")}
                    if not {"key", "op", "created", "value"} <= cols:
                        raise StoreError(f"{src} is not an evalcore results store (no records table)")
                    crc = "crc" if "crc" in cols else "NULL"  # older stores: no checksum, trusted as before
                    before = conn.execute("SELECT count(*) FROM main.records").fetchone()[0]
                    conn.execute("BEGIN IMMEDIATE")
                    conn.execute("INSERT OR IGNORE INTO main.records (key, op, created, value, crc) "
                                 f"SELECT key, op, created, value, {crc} FROM src.records")
                    conn.execute("COMMIT")
                    added[str(src)] = conn.execute("SELECT count(*) FROM main.records").fetchone()[0] - before
                except sqlite3.Error as e:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise StoreError(f"cannot merge {src} into {target.path}: {Store._why(e)}; is it an evalcore "
                                     "results store?") from e
                finally:
                    conn.execute("DETACH DATABASE src")
    finally:
        target.close()
    return added
