"""Damage for the fault scenarios (faults.py): bytes garbled or cut in a results store, a file
size limit for a child (disk full), and a folder a root child cannot write (read-only)."""
from __future__ import annotations

import ctypes
import os
import random
import resource
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

# ----------------------------------------------------------------------------- damage on disk

def garble_middle(db: Path, *, seed: int = 0, n: int = 512) -> None:
    """Overwrite `n` random bytes in the middle of the file (page headers, cells, payload)."""
    size = Path(db).stat().st_size
    rng = random.Random(seed)
    with open(db, "r+b") as f:
        f.seek(size // 2 - n // 2)
        f.write(bytes(rng.randrange(256) for _ in range(n)))


def value_prefix(text_result: dict[str, Any], n_ids: int = 6) -> bytes:
    """The first bytes of a perplexity record's stored JSON (from a `--per-token` text entry):
    they sit in the record's own B-tree cell, so they can be found in the file."""
    return b'{"ids":[' + ",".join(str(i) for i in text_result["ids"][:n_ids]).encode()


def garble_digits(db: Path, prefix: bytes) -> None:
    """Bit rot that keeps the JSON valid: 9s over the digits of the first token id of the
    record starting with `prefix` (e.g. 20317 -> 99999: parses, and is wrong)."""
    raw = Path(db).read_bytes()
    at = raw.find(prefix)
    if at < 0 or raw.find(prefix, at + 1) >= 0:
        raise ValueError(f"{prefix!r} not found once in {db}")
    start = at + len(b'{"ids":[')
    end = raw.index(b",", start)
    with open(db, "r+b") as f:
        f.seek(start)
        f.write(b"9" * (end - start))


def truncate_half(db: Path) -> None:
    os.truncate(db, Path(db).stat().st_size // 2)


# ----------------------------------------------------------------------------- disk full, read-only

def file_size_limit(nbytes: int) -> Callable[[], None]:
    """preexec_fn: no file may grow past `nbytes` (writes past it fail with EFBIG, like a full disk)."""
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, nbytes))
    return apply


_CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH, _CAP_FOWNER = 1, 2, 3
_PR_CAPBSET_DROP = 24


def _drop_file_caps() -> None:
    """preexec_fn for root: drop the capabilities that let root write into read-only folders.

    They leave the bounding set before exec, so the new process (still uid 0, so it still
    reads root's 0600 model files as their owner) obeys file modes like any user.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (_CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH, _CAP_FOWNER):
        if libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def read_only_runner(folder: Path) -> tuple[bool, Callable[[], None] | None, str]:
    """(works, preexec_fn, how): how to run a child for which `folder` (already chmod 0o555)
    cannot be written. A probe child tries to create a file there; works is False when it can
    (a root that cannot drop CAP_DAC_OVERRIDE), and the caller skips the case."""
    pre = _drop_file_caps if os.geteuid() == 0 else None
    probe = [sys.executable, "-c", f"open({str(Path(folder) / '.probe')!r}, 'w')"]
    try:
        r = subprocess.run(probe, preexec_fn=pre, capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.SubprocessError) as e:
        return False, None, f"cannot start a restricted process: {e}"
    if r.returncode == 0:
        (Path(folder) / ".probe").unlink(missing_ok=True)
        return False, None, "the folder stays writable (root, and CAP_DAC_OVERRIDE cannot be dropped)"
    return True, pre, "root with CAP_DAC_OVERRIDE dropped" if pre else "file modes"


def make_read_only(folder: Path) -> None:
    for p in Path(folder).iterdir():
        p.chmod(0o444)
    Path(folder).chmod(0o555)


def make_writable(folder: Path) -> None:
    Path(folder).chmod(0o755)
    for p in Path(folder).iterdir():
        p.chmod(0o644)
