"""Persistent results cache: one SQLite file, one row per (model, operation, item).

Each record is keyed by a content hash of everything that determines it: the model's
identity (name, weights fingerprint, dtype), the operation, the dataset identity and
preprocessing version, the item, and `CODE_VERSION`. Writes are one transaction per
batch, so a run killed with SIGKILL loses at most the batch in flight; SQLite's WAL mode
and `INSERT OR IGNORE` let several processes write the same work at once without
corruption or duplicate rows.
"""
from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
import threading
import time
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
    value TEXT NOT NULL
)
"""


def record_key(**parts: Any) -> str:
    """Content hash of the parts (JSON with sorted keys) plus CODE_VERSION."""
    blob = json.dumps({"v": CODE_VERSION, **parts}, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


class Store:
    """A results store under a folder (default: the user cache folder, never the package).

    Parameters
    ----------
    path : SQLite file; default `<cache_dir>/results.sqlite`.
    """

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path else assets.cache_dir() / "results.sqlite"
        self._lock = threading.Lock()
        self._conn = self._open()

    def _open(self) -> sqlite3.Connection:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=60, check_same_thread=False, isolation_level=None)
            conn.execute("PRAGMA busy_timeout = 60000")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute(_SCHEMA)
            conn.execute("SELECT count(*) FROM records LIMIT 1").fetchone()
            return conn
        except sqlite3.DatabaseError as e:
            if "not a database" in str(e) or "malformed" in str(e):
                bad = self.path.with_name(f"{self.path.name}.corrupt-{int(time.time())}")
                self.path.rename(bad)
                log.warning("results store %s is corrupt (%s); moved to %s, results will be recomputed", self.path, e, bad)
                return self._open()
            raise StoreError(f"cannot open results store {self.path}: {e}; set EVALCORE_CACHE to a writable folder") from e
        except OSError as e:
            raise StoreError(f"cannot create results store {self.path}: {e}; set EVALCORE_CACHE to a writable folder") from e

    def get_many(self, keys: Iterable[str]) -> dict[str, Any]:
        """Records found for these keys (missing keys are absent from the result)."""
        keys = list(keys)
        out: dict[str, Any] = {}
        with self._lock:
            for s in range(0, len(keys), 500):
                chunk = keys[s : s + 500]
                q = f"SELECT key, value FROM records WHERE key IN ({','.join('?' * len(chunk))})"
                try:
                    rows = self._conn.execute(q, chunk).fetchall()
                except sqlite3.DatabaseError as e:
                    raise StoreError(f"results store {self.path} unreadable: {e}; move it away to recompute") from e
                for k, v in rows:
                    try:
                        out[k] = json.loads(v)
                    except ValueError:
                        log.warning("dropping unreadable record %s in %s", k[:12], self.path)
        return out

    def put_many(self, op: str, records: Mapping[str, Any]) -> None:
        """Write records in one transaction (all or nothing); existing keys are left as they are."""
        now = time.time()
        rows = [(k, op, now, json.dumps(v, separators=(",", ":"))) for k, v in records.items()]
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                self._conn.executemany("INSERT OR IGNORE INTO records VALUES (?, ?, ?, ?)", rows)
                self._conn.execute("COMMIT")
            except sqlite3.Error as e:
                try:
                    self._conn.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
                raise StoreError(f"cannot write results store {self.path}: {e}; free disk space or set "
                                 "EVALCORE_CACHE to a writable folder (stored results are kept)") from e

    def count(self, op: str | None = None) -> int:
        with self._lock:
            if op is None:
                return self._conn.execute("SELECT count(*) FROM records").fetchone()[0]
            return self._conn.execute("SELECT count(*) FROM records WHERE op = ?", (op,)).fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._conn.close()
