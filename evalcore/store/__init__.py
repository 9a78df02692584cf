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

Where each part lives:

    records     a record: its key (`record_key`), its row, its value as JSON with a CRC-32
    db          SQLite: connections, faults told apart, write transactions that wait out a lock
    ownership   is this file ours (`check_store_file`), and moving a corrupt one of ours aside
    journal     the side journal of a locked store, and which other processes have it open
    core        `Store`: open, read, write
    merging     `merge`: per-node stores copied into one
"""
from __future__ import annotations

from evalcore.store.core import Store
from evalcore.store.db import WAIT_DEFAULT, WAIT_ENV, store_wait
from evalcore.store.merging import merge
from evalcore.store.ownership import check_store_file
from evalcore.store.records import APPLICATION_ID, CODE_VERSION, record_key

__all__ = ["APPLICATION_ID", "CODE_VERSION", "WAIT_DEFAULT", "WAIT_ENV", "Store", "check_store_file", "merge",
           "record_key", "store_wait"]
