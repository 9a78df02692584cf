"""Is this file ours? Judged from its raw bytes, never through SQLite, so that a damaged file
can be judged too; and the one thing ever done to a file that is ours and garbled: moving it
aside. A path that holds anything else is refused, and left as it is.
"""
from __future__ import annotations

import logging
import os
import sqlite3
import stat
import time
from pathlib import Path

from evalcore.errors import StoreError
from evalcore.store.db import STORE_HINT, store_wait
from evalcore.store.records import APPLICATION_ID, SCHEMA_SIGNATURE

log = logging.getLogger("evalcore.store")  # the package's one logger: users and tests filter on this name

_SQLITE_MAGIC = b"SQLite format 3\x00"
_WAL_MAGIC = (0x377F0682, 0x377F0683)


def check_store_file(path: Path, flag: str = "--store") -> None:
    """Refuse, before any work, a path that holds something other than an evalcore results store
    (StoreError in one line; the file is left as it is); also checks EVALCORE_STORE_WAIT.

    Returns nothing: returning at all means the path is missing, empty, or one of our stores.
    `flag` is the option the user gave the path with, named in the message.
    """
    why = not_ours(path)
    if why is not None:
        raise StoreError(refusal(path, why, flag))
    store_wait()


def refusal(path: Path, why: str, flag: str = "--store") -> str:
    """The one-line message refusing `path` (not ours because `why`), saying what to give `flag`."""
    fix = ("give store-merge the .sqlite files evalcore wrote" if flag == "store-merge"
           else f"give {flag} a new file path, or move that file away")
    return f"{path} is not an evalcore results store ({why}); it was left as it is: {fix}"


def not_ours(path: Path) -> str | None:
    """Why the file at `path` is not an evalcore results store; None when it is one, or when
    nothing is there or the file is empty (free to create). Reads raw bytes only, never SQLite,
    so a damaged file is judged too; symlinks are followed. A file that cannot be read raises
    StoreError."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise StoreError(f"cannot inspect results store {path}: {e.strerror or e}; {STORE_HINT}") from e
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
        raise StoreError(f"cannot read results store {path}: {e.strerror or e}; {STORE_HINT}") from e
    if SCHEMA_SIGNATURE in first or _wal_page1_has(f"{os.path.realpath(path)}-wal", SCHEMA_SIGNATURE):
        return None
    return "a SQLite database without evalcore's records table"


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


def quarantine(path: Path, e: sqlite3.Error) -> None:
    """Move the corrupt store at `path` (with its -wal and -shm, which must not meet a new file)
    aside, to `<file>.corrupt-<time>-<pid>`; a file that is not provably ours is refused instead
    (StoreError), and left as it is."""
    why = not_ours(path)
    if why is not None:
        raise StoreError(f"results store {path} is corrupt ({e}) and unrecognisable ({why}), so it was left "
                         f"as it is; move it away, or give --store a new file path") from e
    real = Path(os.path.realpath(path))  # a symlink's target is the file SQLite wrote
    bad = real.with_name(f"{real.name}.corrupt-{int(time.time())}-{os.getpid()}")
    try:
        real.rename(bad)
        for side in ("-wal", "-shm"):
            p = Path(f"{real}{side}")
            if p.exists():
                p.rename(Path(f"{bad}{side}"))
    except OSError as e2:
        raise StoreError(f"results store {path} is corrupt ({e}) and cannot be moved aside "
                         f"({e2.strerror or e2}); delete it, or {STORE_HINT}") from e
    log.warning("results store %s is corrupt (%s); moved to %s, results will be recomputed", path, e, bad.name)
