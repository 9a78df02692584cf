"""The side journal: where records go while another process holds a store's write lock.

Each process appends to its own `<store>.journal-<pid>.jsonl` next to the store (one JSON line
a record, with its CRC-32, fsynced). The records it holds are kept in memory per journal, to be
served and written by the next successful write of any Store on that file; a journal whose
process has ended is merged by the next open (torn or damaged lines skipped). Also here: which
other processes have a store open (/proc), and whether a journal's writer still runs.
"""
from __future__ import annotations

import json
import logging
import os
import re
import sqlite3
import stat
import threading
from collections.abc import Iterable
from pathlib import Path

from evalcore.store.records import INSERT, Row, crc_of

log = logging.getLogger("evalcore.store")  # the package's one logger: users and tests filter on this name

Merged = tuple[Path, int, int]  # a merged journal: its path, rows merged, lines skipped

# Records this process journaled because the store was locked, per journal file (absolute
# path): served by get_many and written by the next successful write of any Store on that file.
# JOURNAL_LOCK guards them, the journal files of this process and the merge of ended ones.
JOURNAL_LOCK = threading.Lock()
_PENDING: dict[Path, dict[str, Row]] = {}
_WARNED: set[Path] = set()


def journal_path(store: Path, pid: int) -> Path:
    """The side journal of process `pid` for `store`: `<store path>.journal-<pid>.jsonl`, absolute."""
    return Path(os.path.abspath(store.with_name(f"{store.name}.journal-{pid}.jsonl")))


def pending(journal: Path) -> dict[str, Row]:
    """The rows waiting in this process's `journal` to be written to the store, by key (a copy)."""
    with JOURNAL_LOCK:
        return dict(_PENDING.get(journal, {}))


def journaled_values(journal: Path, keys: Iterable[str]) -> dict[str, str]:
    """The JSON texts of those `keys` that wait in this process's `journal`."""
    with JOURNAL_LOCK:
        rows = _PENDING.get(journal, {})
        return {k: rows[k][3] for k in keys if k in rows}


def append(journal: Path, rows: list[Row]) -> bool:
    """Append rows to this process's side journal (fsynced), and keep them to serve and write later.

    Returns True the first time this process journals to `journal` (time to warn). An append
    that fails raises OSError and leaves no torn line behind.
    """
    blob = b"".join(json.dumps({"key": k, "op": op, "created": t, "value": v, "crc": c},
                               separators=(",", ":")).encode() + b"\n" for k, op, t, v, c in rows)
    with JOURNAL_LOCK:
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
            _fsync_folder(journal.parent)
        _PENDING.setdefault(journal, {}).update((r[0], r) for r in rows)
        first = journal not in _WARNED
        _WARNED.add(journal)
    return first


def settle(store: Path, journal: Path, written: dict[str, Row]) -> None:
    """Journaled rows are now in the store: forget them, and delete the journal once none is left."""
    if not written:
        return
    with JOURNAL_LOCK:
        rows = _PENDING.get(journal, {})
        for k in written:
            rows.pop(k, None)
        if rows:
            return
        _PENDING.pop(journal, None)
        try:
            journal.unlink()
        except FileNotFoundError:
            pass
        except OSError as e:  # merged again (INSERT OR IGNORE) by a later open
            log.info("results store %s: cannot delete journal %s (%s)", store, journal.name, e.strerror or e)
    log.info("results store %s: %d journaled record(s) written to the store", store, len(written))


# ----------------------------------------------------------------------------- merging at open

def merge_ended(conn: sqlite3.Connection, store: Path) -> list[Merged]:
    """In the open's write transaction on `store`: insert the rows of the journals of ended
    processes (and this one's). Returns the journals merged, for `drop_merged` once committed;
    a journal that cannot be read is left for a later open."""
    merged = []
    for path, pid in _journals(store):
        if pid != os.getpid() and alive(pid):
            continue  # a live writer appends to it; it merges its own journal
        try:
            rows, skipped = read_journal(path)
        except OSError as e:
            log.info("results store %s: cannot read journal %s (%s); left for a later open",
                     store, path.name, e.strerror or e)
            continue
        conn.executemany(INSERT, rows)
        merged.append((path, len(rows), skipped))
    return merged


def drop_merged(store: Path, merged: list[Merged]) -> None:
    """After the merge committed: delete the journals (the caller holds JOURNAL_LOCK)."""
    for path, n, skipped in merged:
        _PENDING.pop(path, None)
        try:
            path.unlink()
        except FileNotFoundError:
            pass
        except OSError as e:
            log.info("results store %s: merged journal %s but cannot delete it (%s)", store, path.name,
                     e.strerror or e)
        log.info("results store %s: merged %d record(s) from journal %s%s", store, n, path.name,
                 f" ({skipped} torn or damaged line(s) skipped: recomputed when needed)" if skipped else "")


def read_journal(path: Path) -> tuple[list[Row], int]:
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
                    or crc_of(row[3]) != row[4]):
                raise ValueError("bad line")
        except (ValueError, KeyError, TypeError):
            skipped += 1
            continue
        rows.append(row)
    return rows, skipped


def _journals(store: Path) -> list[tuple[Path, int]]:
    """Side journals next to the store, with the pid in their name."""
    folder = Path(os.path.abspath(store)).parent
    pattern = re.compile(re.escape(store.name) + r"\.journal-(\d+)\.jsonl")
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


# ----------------------------------------------------------------------------- other processes

def holders(store: Path) -> list[str]:
    """Other processes that have the store (or its -wal/-shm) open, as 'pid N (command line)'.
    Reads /proc (Linux); empty elsewhere, and processes this user cannot see are left out."""
    real = os.path.realpath(store)
    targets = {real, f"{real}-wal", f"{real}-shm"}
    me = os.getpid()
    try:
        pids = [int(d) for d in os.listdir("/proc") if d.isdigit()]
    except OSError:
        return []
    return [f"pid {pid} ({_command_line(pid)})" for pid in sorted(pids) if pid != me and _has_open(pid, targets)]


def _has_open(pid: int, targets: set[str]) -> bool:
    """Whether process `pid` has one of the `targets` open (False when it cannot be seen)."""
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for fd in fds:
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") in targets:
                return True
        except OSError:
            continue
    return False


def _command_line(pid: int) -> str:
    """Process `pid`'s command line on one line, cut to 60 characters; '?' when unreadable."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmd = " ".join(f.read().decode("utf-8", "replace").replace("\0", " ").split())  # one line
    except OSError:
        return "?"
    return cmd[:57] + "..." if len(cmd) > 60 else cmd


def alive(pid: int) -> bool:
    """Whether process `pid` still runs (as any user)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: it runs, as another user
        return True
    return True
