"""What a record is: its key, its row in the `records` table, and its value as checked JSON.

A value is stored as compact JSON text with the CRC-32 of its UTF-8 bytes. NaN and +-inf are
never written, and a stored value that holds one is read as damage, like a failed checksum.
"""
from __future__ import annotations

import hashlib
import json
import math
import time
import zlib
from collections.abc import Mapping
from typing import Any

from evalcore.errors import StoreError

CODE_VERSION = "1"  # bump when a stored computation changes meaning; old rows are then ignored

APPLICATION_ID = 0x45764C63  # "EvLc": PRAGMA application_id of every evalcore results store

SCHEMA = """
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
SCHEMA_SIGNATURE = SCHEMA.strip().replace(" IF NOT EXISTS", "").split(",\n    crc")[0].encode()

Row = tuple[str, str, float, str, int]  # key, op, created, value (JSON text), crc
INSERT = "INSERT OR IGNORE INTO records (key, op, created, value, crc) VALUES (?, ?, ?, ?, ?)"


def record_key(**parts: Any) -> str:
    """The key of the record these parts determine: a SHA-256 hex digest of the parts (JSON with
    sorted keys, other types as their str) and CODE_VERSION, so equal parts give equal keys."""
    blob = json.dumps({"v": CODE_VERSION, **parts}, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def crc_of(text: str) -> int:
    """The CRC-32 a value's JSON text is stored with."""
    return zlib.crc32(text.encode())


def rows_of(op: str, records: Mapping[str, Any]) -> list[Row]:
    """The rows that store these records of operation `op`, stamped now.

    Raises StoreError naming the op, the record and the value's place when a value holds NaN
    or +-inf: nothing of the batch is to be written then.
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
        rows.append((k, op, now, text, crc_of(text)))
    return rows


def loads(blob: bytes | str) -> Any:
    """Parse a stored value; NaN, Infinity and -Infinity raise ValueError like any damage."""
    return json.loads(blob, parse_constant=_refuse_constant)


def decode(value: bytes, crc: int | None) -> Any:
    """The value a stored row holds. Raises ValueError when its bytes fail their CRC-32 (a NULL
    crc, from an older store, is trusted), do not parse, or hold NaN or +-inf."""
    if crc is not None and zlib.crc32(value) != crc:
        raise ValueError("the value fails its checksum")
    return loads(value)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"non-finite number {name}")


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
