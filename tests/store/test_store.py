"""The results store on its own: files that are not ours, damage, non-finite values, a store
locked by another process and its side journal. Real files and real second processes; no
model is loaded, so every test here runs in well under a few seconds.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import shutil
import signal
import sqlite3
import stat
import subprocess
import sys
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from evalcore.errors import StoreError
from evalcore.store import APPLICATION_ID, WAIT_ENV, Store, merge

ROOT = Path(__file__).resolve().parents[2]

OLD_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    key TEXT PRIMARY KEY,
    op TEXT NOT NULL,
    created REAL NOT NULL,
    value TEXT NOT NULL
)
"""

# holds the write lock of the SQLite file argv[1] until its stdin is closed
HOLD_LOCK = """
import sqlite3, sys
c = sqlite3.connect(sys.argv[1], isolation_level=None)
c.execute("BEGIN IMMEDIATE")
print("held", flush=True)
sys.stdin.read()
c.execute("ROLLBACK")
"""


@pytest.fixture(autouse=True)
def _quick_wait(monkeypatch):
    monkeypatch.setenv(WAIT_ENV, "1")


# ----------------------------------------------------------------------------- helpers

def make_store(path: Path, records: dict[str, object], op: str = "op") -> None:
    s = Store(path)
    s.put_many(op, records)
    s.close()


def rows(path: Path) -> dict[str, object]:
    """key -> value of every row, read with plain sqlite3."""
    c = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return {k: json.loads(v) for k, v in c.execute("SELECT key, value FROM records")}
    finally:
        c.close()


def app_id(path: Path) -> int:
    return int.from_bytes(path.read_bytes()[68:72], "big")


def snapshot(path: Path) -> tuple[bytes, int, list[str]]:
    """A file's bytes, its mtime and its folder's listing: all must stay as they were."""
    return path.read_bytes(), os.stat(path).st_mtime_ns, sorted(os.listdir(path.parent))


def foreign_sqlite(path: Path) -> Path:
    c = sqlite3.connect(path)
    c.execute("CREATE TABLE contacts (id INTEGER PRIMARY KEY, name TEXT, phone TEXT)")
    c.executemany("INSERT INTO contacts (name, phone) VALUES (?, ?)", [("Ada", "123"), ("Grace", "456")])
    c.commit()
    c.close()
    return path


def foreign_records_table(path: Path) -> Path:
    """Another program's SQLite file with a `records` table of its own shape and application_id."""
    c = sqlite3.connect(path)
    c.execute("PRAGMA application_id = 1234567")
    c.execute("CREATE TABLE records (id INTEGER PRIMARY KEY, key TEXT, payload BLOB)")
    c.execute("INSERT INTO records (key, payload) VALUES ('x', x'00ff')")
    c.commit()
    c.close()
    return path


def text_file(path: Path) -> Path:
    path.write_text("my notes, not a database\n" * 50)
    return path


def png_file(path: Path) -> Path:
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(random.Random(0).randrange(256) for _ in range(3000)))
    return path


def tables(path: Path) -> list[str]:
    c = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return sorted(r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type = 'table'"))
    finally:
        c.close()


@contextlib.contextmanager
def lock_held(db: Path) -> Iterator[subprocess.Popen]:
    """Another process holding the store's write lock (BEGIN IMMEDIATE) for the block."""
    p = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(db)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         text=True)
    try:
        assert p.stdout.readline().strip() == "held"
        yield p
    finally:
        p.stdin.close()
        p.wait(timeout=30)
        p.stdout.close()


def dead_pid() -> int:
    """The pid of a process that has ended (and been reaped)."""
    p = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                       check=True)
    pid = int(p.stdout)
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    return pid


def journal_line(key: str, value: object, op: str = "op") -> bytes:
    text = json.dumps(value, separators=(",", ":"))
    return json.dumps({"key": key, "op": op, "created": 1.0, "value": text, "crc": zlib.crc32(text.encode())},
                      separators=(",", ":")).encode() + b"\n"


def warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "evalcore.store" and r.levelno >= logging.WARNING]


# ----------------------------------------------------------------------------- files that are not ours

@pytest.mark.parametrize("make", [text_file, foreign_sqlite, png_file, foreign_records_table],
                         ids=["text", "foreign-sqlite", "png", "records-table-of-another-app"])
def test_foreign_file_is_refused_and_left_untouched(tmp_path, make):
    f = make(tmp_path / "results.sqlite")
    before = snapshot(f)
    with pytest.raises(StoreError, match="not an evalcore results store") as e:
        Store(f)
    msg = str(e.value)
    assert str(f) in msg and "--store" in msg and "move" in msg and "\n" not in msg
    assert snapshot(f) == before  # same bytes, same mtime, no .corrupt-* / -wal / -shm next to it


def test_symlink_to_foreign_file_is_refused(tmp_path):
    target = foreign_sqlite(tmp_path / "contacts.db")
    link = tmp_path / "results.sqlite"
    link.symlink_to(target)
    before = snapshot(target)
    with pytest.raises(StoreError, match="not an evalcore results store"):
        Store(link)
    assert snapshot(target) == before and link.is_symlink() and os.readlink(link) == str(target)
    assert tables(target) == ["contacts"]


def test_symlink_to_our_store_is_used(tmp_path):
    target = tmp_path / "real.sqlite"
    make_store(target, {"k": [1, 2]})
    link = tmp_path / "link.sqlite"
    link.symlink_to(target)
    s = Store(link)
    assert s.get_many(["k"]) == {"k": [1, 2]}
    s.put_many("op", {"k2": 3})
    s.close()
    assert rows(target) == {"k": [1, 2], "k2": 3}


def test_directory_is_refused(tmp_path):
    d = tmp_path / "results.sqlite"
    d.mkdir()
    (d / "inside.txt").write_text("x")
    with pytest.raises(StoreError, match="directory"):
        Store(d)
    assert d.is_dir() and os.listdir(d) == ["inside.txt"] and sorted(os.listdir(tmp_path)) == ["results.sqlite"]


def test_dev_null_is_refused_and_unchanged():
    before = os.stat("/dev/null")
    with pytest.raises(StoreError, match="not a regular file"):
        Store("/dev/null")
    after = os.stat("/dev/null")
    assert (after.st_ino, after.st_mode, after.st_rdev) == (before.st_ino, before.st_mode, before.st_rdev)
    assert stat.S_ISCHR(after.st_mode)
    assert not any(os.path.lexists(f"/dev/null{s}") for s in ("-wal", "-shm", "-journal"))


def test_fifo_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "results.sqlite"
    os.mkfifo(fifo)
    with pytest.raises(StoreError, match="not a regular file"):
        Store(fifo)
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode) and os.listdir(tmp_path) == ["results.sqlite"]


def test_empty_file_becomes_a_store(tmp_path):
    f = tmp_path / "results.sqlite"
    f.touch()
    make_store(f, {"k": 1})
    assert rows(f) == {"k": 1} and app_id(f) == APPLICATION_ID


def test_new_store_carries_the_application_id(tmp_path):
    f = tmp_path / "new" / "results.sqlite"
    s = Store(f)
    s.close()
    assert app_id(f) == APPLICATION_ID  # in the main file itself, not only in the WAL


def test_store_with_its_header_gone_is_refused_as_unrecognisable(tmp_path):
    f = tmp_path / "results.sqlite"
    make_store(f, {f"k{i}": i for i in range(50)})
    with open(f, "r+b") as h:
        h.write(b"\0" * 100)
    before = snapshot(f)
    with pytest.raises(StoreError, match="unrecognisable") as e:
        Store(f)
    assert "move" in str(e.value)
    assert snapshot(f) == before


# ----------------------------------------------------------------------------- merge

def test_merge_into_foreign_database_is_refused_and_leaves_it_unchanged(tmp_path):
    src = tmp_path / "node0.sqlite"
    make_store(src, {"a": 1})
    into = foreign_sqlite(tmp_path / "contacts.db")
    before, src_before = snapshot(into), src.read_bytes()
    with pytest.raises(StoreError, match="not an evalcore results store") as e:
        merge([src], into=into)
    assert "--into" in str(e.value)
    assert snapshot(into) == before and tables(into) == ["contacts"] and src.read_bytes() == src_before


def test_merge_of_foreign_source_is_refused_before_creating_the_target(tmp_path):
    good = tmp_path / "node0.sqlite"
    make_store(good, {"a": 1})
    bad = foreign_sqlite(tmp_path / "contacts.db")
    before = snapshot(bad)
    into = tmp_path / "all.sqlite"
    with pytest.raises(StoreError, match="contacts.db is not an evalcore results store"):
        merge([good, bad], into=into)
    assert not into.exists() and snapshot(bad) == before


def test_merge_of_our_stores(tmp_path):
    a, b, into = tmp_path / "a.sqlite", tmp_path / "b.sqlite", tmp_path / "all.sqlite"
    make_store(a, {"x": 1, "y": 2})
    make_store(b, {"y": 2, "z": 3})
    assert merge([a, b], into=into) == {str(a): 2, str(b): 1}
    assert rows(into) == {"x": 1, "y": 2, "z": 3} and app_id(into) == APPLICATION_ID


# ----------------------------------------------------------------------------- damage to our files

def _garble_middle(db: Path) -> None:
    size = db.stat().st_size
    with open(db, "r+b") as f:
        f.seek(size // 2 - 256)
        f.write(bytes(random.Random(0).randrange(256) for _ in range(512)))


def _truncate_half(db: Path) -> None:
    os.truncate(db, db.stat().st_size // 2)


@pytest.mark.parametrize("damage", [_garble_middle, _truncate_half], ids=["garble-middle", "truncate-half"])
def test_our_damaged_store_is_quarantined_and_recomputed(tmp_path, caplog, damage):
    db = tmp_path / "s.sqlite"
    data = {f"{i:064x}": {"nll": [i / 7] * 40, "text": f"item {i}"} for i in range(300)}
    make_store(db, data)
    damage(db)
    caplog.set_level(logging.WARNING, logger="evalcore.store")
    s = Store(db)
    got = s.get_many(data)
    moved = list(tmp_path.glob("s.sqlite.corrupt-*"))
    assert len(moved) == 1, os.listdir(tmp_path)
    assert len(warnings(caplog)) == 1 and "corrupt" in warnings(caplog)[0]
    assert got == {}
    s.put_many("op", {"k": 1})
    assert s.get_many(["k"]) == {"k": 1}
    s.close()
    caplog.clear()
    s = Store(db)
    assert s.count() == 1 and not warnings(caplog)
    s.close()


def test_old_store_without_application_id_keeps_its_rows_and_gets_the_mark(tmp_path):
    db = tmp_path / "old.sqlite"
    c = sqlite3.connect(db, isolation_level=None)
    c.execute("PRAGMA journal_mode = WAL")
    c.execute(OLD_SCHEMA)
    c.executemany("INSERT INTO records VALUES (?, ?, ?, ?)", [("a", "op", 1.0, "[1,2]"), ("b", "op", 1.0, '{"x":3}')])
    c.close()
    assert app_id(db) == 0
    s = Store(db)
    assert s.get_many(["a", "b"]) == {"a": [1, 2], "b": {"x": 3}}
    s.put_many("op", {"c": 4})
    s.close()
    assert rows(db) == {"a": [1, 2], "b": {"x": 3}, "c": 4} and app_id(db) == APPLICATION_ID


def test_old_store_whose_table_is_only_in_its_wal_is_recognised(tmp_path):
    """A store whose creator was killed before any checkpoint: page 1 with the table is in the -wal."""
    live = tmp_path / "live.sqlite"
    c = sqlite3.connect(live, isolation_level=None)
    c.execute("PRAGMA journal_mode = WAL")
    c.execute(OLD_SCHEMA)
    c.execute("INSERT INTO records VALUES ('a', 'op', 1.0, '[1]')")
    db = tmp_path / "old.sqlite"
    shutil.copy(live, db)
    shutil.copy(f"{live}-wal", f"{db}-wal")
    c.close()
    assert b"CREATE TABLE records" not in db.read_bytes()
    s = Store(db)
    assert s.get_many(["a"]) == {"a": [1]}
    s.close()


# ----------------------------------------------------------------------------- non-finite numbers

@pytest.mark.parametrize("bad", [float("nan"), float("inf"), {"nll": [1.0, [2.0, float("-inf")]]}],
                         ids=["nan", "inf", "nested-minus-inf"])
def test_put_many_refuses_non_finite_values_and_writes_nothing(tmp_path, bad):
    db = tmp_path / "s.sqlite"
    s = Store(db)
    s.put_many("op", {"before": 1})
    key = "ab" * 32
    with pytest.raises(StoreError, match="non-finite values are never stored") as e:
        s.put_many("perplexity", {"good": 2, key: bad, "after": 3})
    msg = str(e.value)
    assert "perplexity" in msg and key[:12] in msg and "\n" not in msg
    assert s.get_many(["good", key, "after"]) == {}
    s.close()
    assert rows(db) == {"before": 1}


def test_nested_path_of_the_bad_value_is_named(tmp_path):
    s = Store(tmp_path / "s.sqlite")
    with pytest.raises(StoreError, match=r"-inf at \$\.nll\[1\]\[1\]"):
        s.put_many("op", {"k": {"nll": [1.0, [2.0, float("-inf")]]}})
    s.close()


@pytest.mark.parametrize("value", ["NaN", '{"nll":[1.0,Infinity]}', "[-Infinity]"])
def test_stored_non_finite_record_is_not_served_and_is_deleted(tmp_path, caplog, value):
    db = tmp_path / "s.sqlite"
    make_store(db, {"good": 1})
    c = sqlite3.connect(db)
    c.executemany("INSERT INTO records VALUES (?, ?, ?, ?, ?)",
                  [("bad", "op", 1.0, value, zlib.crc32(value.encode())), ("old", "op", 1.0, value, None)])
    c.commit()
    c.close()
    caplog.set_level(logging.WARNING, logger="evalcore.store")
    s = Store(db)
    assert s.get_many(["good", "bad", "old"]) == {"good": 1}
    assert len(warnings(caplog)) == 1 and "2 record(s)" in warnings(caplog)[0]
    s.close()
    assert rows(db) == {"good": 1}


# ----------------------------------------------------------------------------- a locked store

@pytest.mark.parametrize("raw", ["abc", "-1", "nan", "inf", "1e999"])
def test_store_wait_must_be_a_finite_number(tmp_path, monkeypatch, raw):
    monkeypatch.setenv(WAIT_ENV, raw)
    with pytest.raises(StoreError, match=WAIT_ENV):
        Store(tmp_path / "s.sqlite")
    assert not (tmp_path / "s.sqlite").exists()


def test_locked_store_warns_journals_serves_and_merges(tmp_path, caplog):
    db = tmp_path / "s.sqlite"
    make_store(db, {"a": 1})
    journal = tmp_path / f"s.sqlite.journal-{os.getpid()}.jsonl"
    caplog.set_level(logging.WARNING, logger="evalcore.store")
    with lock_held(db) as holder:
        s = Store(db)
        assert s.locked and not s.read_only and s.journal == journal
        (msg,) = warnings(caplog)
        assert "locked" in msg and f"pid {holder.pid} (" in msg and "retried" in msg and journal.name in msg
        t = time.monotonic()
        s.put_many("op", {"k1": {"v": [1.5]}, "k2": "two"})
        assert 0.9 <= time.monotonic() - t < 10  # EVALCORE_STORE_WAIT=1
        t = time.monotonic()
        s.put_many("op", {"k3": 3})
        assert time.monotonic() - t < 0.9  # while records wait in the journal, one short attempt
        assert len(warnings(caplog)) == 2 and "journal" in warnings(caplog)[1]  # journaling: warned once
        assert s.get_many(["a", "k1", "k2", "k3", "none"]) == {"a": 1, "k1": {"v": [1.5]}, "k2": "two", "k3": 3}
        assert [json.loads(x)["key"] for x in journal.read_text().splitlines()] == ["k1", "k2", "k3"]
        assert rows(db) == {"a": 1}
    s2 = Store(db)  # the lock is free: the journal is merged
    assert not s2.locked and not journal.exists()
    assert rows(db) == {"a": 1, "k1": {"v": [1.5]}, "k2": "two", "k3": 3}
    s2.close()
    s.put_many("op", {"k4": 4})
    s.close()
    assert rows(db)["k4"] == 4 and not journal.exists()


def test_next_successful_write_flushes_the_journal(tmp_path):
    db = tmp_path / "s.sqlite"
    make_store(db, {"a": 1})
    with lock_held(db):
        s = Store(db)
        s.put_many("op", {"k1": 1})
        assert s.journal.exists()
    s.put_many("op", {"k2": 2})
    assert not s.journal.exists() and rows(db) == {"a": 1, "k1": 1, "k2": 2}
    s.close()


def test_journal_that_cannot_be_written_raises(tmp_path):
    db = tmp_path / "s.sqlite"
    make_store(db, {"a": 1})
    with lock_held(db):
        s = Store(db)
        s.journal.mkdir()  # the journal's path is taken: the append fails
        with pytest.raises(StoreError, match="journal") as e:
            s.put_many("op", {"k1": 1})
        assert "cannot write results" in str(e.value) and "1 result" in str(e.value)
        s.close()
    assert rows(db) == {"a": 1}


def test_journal_of_an_ended_process_is_merged_and_a_torn_line_skipped(tmp_path, caplog):
    db = tmp_path / "s.sqlite"
    make_store(db, {"a": 1})
    journal = tmp_path / f"s.sqlite.journal-{dead_pid()}.jsonl"
    bad_crc = journal_line("c", 3).replace(b'"crc":', b'"crc":1')
    journal.write_bytes(journal_line("b", [2.5]) + bad_crc + journal_line("d", {"x": 4}) + journal_line("e", 5)[:25])
    caplog.set_level(logging.INFO, logger="evalcore.store")
    s = Store(db)
    assert s.get_many(["a", "b", "c", "d", "e"]) == {"a": 1, "b": [2.5], "d": {"x": 4}}
    s.close()
    assert not journal.exists() and rows(db) == {"a": 1, "b": [2.5], "d": {"x": 4}}
    assert any("merged 2 record(s)" in r.getMessage() and "2 torn or damaged" in r.getMessage()
               for r in caplog.records)


def test_journal_of_a_live_process_is_left_alone(tmp_path):
    db = tmp_path / "s.sqlite"
    make_store(db, {"a": 1})
    live = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        journal = tmp_path / f"s.sqlite.journal-{live.pid}.jsonl"
        journal.write_bytes(journal_line("b", 2))
        s = Store(db)
        assert s.get_many(["b"]) == {}
        s.close()
        assert journal.read_bytes() == journal_line("b", 2) and rows(db) == {"a": 1}
    finally:
        live.stdin.close()
        live.wait(timeout=30)
    s = Store(db)
    s.close()
    assert not journal.exists() and rows(db) == {"a": 1, "b": 2}


def test_sigkill_right_after_journaling_loses_nothing(tmp_path):
    db = tmp_path / "s.sqlite"
    make_store(db, {"a": 1})
    child = ("import sys, time\n"
             "from evalcore.store import Store\n"
             "s = Store(sys.argv[1])\n"
             "s.put_many('op', {'c1': [1.0, 2.0], 'c2': {'x': 'y'}})\n"
             "print('journaled', flush=True)\n"
             "time.sleep(600)\n")
    with lock_held(db):
        env = {**os.environ, WAIT_ENV: "0"}
        p = subprocess.Popen([sys.executable, "-c", child, str(db)], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
        try:
            assert p.stdout.readline().strip() == "journaled", p.stderr.read()
        finally:
            os.kill(p.pid, signal.SIGKILL)
            p.communicate(timeout=30)
        journal = tmp_path / f"s.sqlite.journal-{p.pid}.jsonl"
        assert journal.exists() and rows(db) == {"a": 1}
    s = Store(db)
    assert s.get_many(["a", "c1", "c2"]) == {"a": 1, "c1": [1.0, 2.0], "c2": {"x": "y"}}
    s.close()
    assert not journal.exists() and rows(db) == {"a": 1, "c1": [1.0, 2.0], "c2": {"x": "y"}}


# ----------------------------------------------------------------------------- disk full, read-only

DISK_FULL_CHILD = """
import resource, signal, sys
from evalcore.errors import StoreError
from evalcore.store import Store
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (40_000, 40_000))
s = Store(sys.argv[1])
try:
    for i in range(200):
        s.put_many("op", {f"k{i}": "x" * 2000})
except StoreError as e:
    print(e)
    raise SystemExit(0)
raise SystemExit(1)
"""


def test_disk_full_is_one_line_and_keeps_the_committed_rows(tmp_path):
    db = tmp_path / "s.sqlite"
    r = subprocess.run([sys.executable, "-c", DISK_FULL_CHILD, str(db)], cwd=ROOT, capture_output=True, text=True,
                       timeout=120, check=False)
    assert r.returncode == 0, r.stderr
    n = len(rows(db))
    msg = r.stdout.strip()
    assert n >= 1 and "disk full" in msg and "free disk space" in msg and "--store" in msg and f"{n} result" in msg
    assert not list(tmp_path.glob("*.journal-*"))


READ_ONLY_CHILD = """
import sys
from evalcore.errors import StoreError
from evalcore.store import Store
s = Store(sys.argv[1])
print(s.read_only, s.get_many(["a"]))
try:
    s.put_many("op", {"b": 2})
except StoreError as e:
    print(e)
"""


def test_read_only_folder_serves_rows_and_refuses_writes(tmp_path):
    from tests.support import faults
    ro = tmp_path / "ro"
    ro.mkdir()
    db = ro / "s.sqlite"
    make_store(db, {"a": 1})
    faults.make_read_only(ro)
    try:
        ok, pre, how = faults.read_only_runner(ro)
        if not ok:
            pytest.skip(how)
        r = subprocess.run([sys.executable, "-c", READ_ONLY_CHILD, str(db)], cwd=ROOT, capture_output=True,
                           text=True, timeout=120, check=False, preexec_fn=pre)
    finally:
        faults.make_writable(ro)
    first, msg = r.stdout.strip().splitlines()
    assert first == "True {'a': 1}", r.stderr
    assert "read-only" in msg and "--store" in msg and "EVALCORE_CACHE" in msg and "1 result" in msg
    assert rows(db) == {"a": 1}


WRITER_CHILD = """
import sys
from evalcore.store import Store
s = Store(sys.argv[1])
for b in range(20):
    s.put_many("op", {f"k{b}-{i}": [b, i, 0.5] for i in range(10)})
s.close()
"""


def test_two_processes_create_and_write_one_store_at_once(tmp_path):
    db = tmp_path / "shared.sqlite"
    ps = [subprocess.Popen([sys.executable, "-c", WRITER_CHILD, str(db)], cwd=ROOT, stderr=subprocess.PIPE, text=True)
          for _ in range(2)]
    errs = [p.communicate(timeout=120)[1] for p in ps]
    assert [p.returncode for p in ps] == [0, 0], errs
    assert not any(e.strip() for e in errs), errs  # no lock warning: batches commit in milliseconds
    assert len(rows(db)) == 200 and app_id(db) == APPLICATION_ID and not list(tmp_path.glob("*.journal-*"))
