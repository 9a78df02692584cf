"""merge(): the records of several store files copied into one, for multi-node runs (each node
writes its own file, since SQLite must not be shared over NFS, and one process merges them).
"""
from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from pathlib import Path

from evalcore.errors import StoreError
from evalcore.store.core import Store
from evalcore.store.db import STORE_HINT, WAIT_ENV, columns, reason, transact
from evalcore.store.ownership import check_store_file, not_ours


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
    target_path = Path(into)
    paths = [Path(s) for s in sources]
    for src in paths:
        _check_source(src, target_path)
    check_store_file(target_path, "--into")
    target = Store(target_path)
    added: dict[str, int] = {}
    try:
        if target.read_only:
            raise StoreError(f"cannot merge into {target.path}: the folder or file is read-only; {STORE_HINT}")
        for src in paths:
            added[str(src)] = _copy(target, src)
    finally:
        target.close()
    return added


def _check_source(src: Path, into: Path) -> None:
    """Refuse a source that is missing, is the target, or is not a results store (raw bytes only)."""
    if not src.exists():
        raise StoreError(f"store file {src} does not exist; give the .sqlite file each node wrote")
    if src.resolve() == into.resolve():
        raise StoreError(f"store file {src} is the merge target; give --into a different file")
    why = not_ours(src) or ("it is empty" if src.stat().st_size == 0 else None)
    if why is not None:
        raise StoreError(f"{src} is not an evalcore results store ({why}); give store-merge the .sqlite "
                         "file each node wrote")


def _copy(target: Store, src: Path) -> int:
    """Copy the records of `src` into `target` in one transaction, on the target's own connection
    and under its lock (this module is part of the store); returns how many were new."""
    with target._lock:
        conn = target._conn
        try:
            conn.execute("ATTACH DATABASE ? AS src", (str(src),))
        except sqlite3.Error as e:
            raise StoreError(f"cannot open store file {src}: {reason(e)}") from e
        try:
            cols = columns(conn, "src")
            if not {"key", "op", "created", "value"} <= cols:
                raise StoreError(f"{src} is not an evalcore results store (no records table)")
            crc = "crc" if "crc" in cols else "NULL"  # older stores: no checksum, trusted as before

            def copy(c: sqlite3.Connection) -> int:
                before = int(c.execute("SELECT count(*) FROM main.records").fetchone()[0])
                c.execute("INSERT OR IGNORE INTO main.records (key, op, created, value, crc) "
                          f"SELECT key, op, created, value, {crc} FROM src.records")
                return int(c.execute("SELECT count(*) FROM main.records").fetchone()[0]) - before

            copied = transact(conn, copy, target._wait, target._read_wait)
            if not copied[0]:
                raise StoreError(f"cannot merge {src} into {target.path}: it stayed locked by another "
                                 f"process for {target._wait:g} s ({WAIT_ENV}); rerun store-merge when that "
                                 "process is done")
            return copied[1]
        except sqlite3.Error as e:
            raise StoreError(f"cannot merge {src} into {target.path}: {reason(e)}; is it an evalcore "
                             "results store?") from e
        finally:
            conn.execute("DETACH DATABASE src")
