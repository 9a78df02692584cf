"""Where a command's results go: the JSON (`--out`: a file replaced atomically, a device or pipe
written through, `-` for stdout), its summary line, and the progress bar on stderr."""
from __future__ import annotations

import argparse
import json
import os
import stat
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from evalcore.errors import EvalcoreError


def progress_bar(desc: str, *, enabled: bool = True) -> tuple[Any, Callable[[int, int], None]]:
    """(bar, update): a tqdm bar on stderr (off when not enabled) and the callback that sets it
    to `done` of `total` items; close the bar when finished."""
    from tqdm import tqdm

    bar = tqdm(total=0, desc=desc, unit="item", file=sys.stderr, disable=None if enabled else True)

    def update(done: int, total: int) -> None:
        bar.total = total
        bar.n = done
        bar.refresh()

    return bar, update



def to_stdout(out: Path) -> bool:
    """True when --out is `-` or names this process's stdout (/dev/stdout, /proc/self/fd/1, ...)."""
    if str(out) == "-":
        return True
    try:
        a, b = os.stat(out), os.fstat(sys.stdout.fileno())
    except (OSError, ValueError):
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)



def say(args: argparse.Namespace, line: str) -> None:
    """The command's summary line: on stdout, or on stderr when the JSON goes to stdout."""
    print(line, file=sys.stderr if to_stdout(args.out) else sys.stdout)



def report(args: argparse.Namespace, result: dict[str, Any], line: str) -> int:
    """Writes the JSON result to --out, then the summary line (`say`); returns 0, the command's
    exit status."""
    write_json(args.out, result)
    say(args, line)
    return 0



def write_json(path: Path, obj: Any) -> None:
    """The JSON result to `path`: `-` is stdout; a regular file (or a symlink to one) is replaced
    atomically; anything else that exists (a device such as /dev/null, a FIFO, a terminal) is
    written through, never replaced. NaN and infinity are refused (they are not JSON)."""
    try:
        text = json.dumps(obj, indent=1, allow_nan=False) + "\n"
    except ValueError:
        raise EvalcoreError("the result holds a non-finite number (NaN or infinity); nothing was written. "
                            "Rerun with -v to see which value") from None
    if to_stdout(path):
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    real = Path(os.path.realpath(path))
    hint = "give --out a writable path with free space (results computed with a model are in the store: a rerun reads them back)"
    try:
        st = real.stat()
    except OSError:
        st = None
    if st is not None and stat.S_ISDIR(st.st_mode):
        raise EvalcoreError(f"--out {path} is a folder; give a file name, e.g. {Path(path) / 'result.json'}")
    try:
        if st is not None and not stat.S_ISREG(st.st_mode):
            with open(real, "w") as f:  # a device or pipe: write through, the node itself stays as it is
                f.write(text)
            return
        real.parent.mkdir(parents=True, exist_ok=True)
        tmp = real.with_name(f".{real.name}.tmp{os.getpid()}")
        try:
            tmp.write_text(text)
            os.replace(tmp, real)  # through a symlink: the file it points at is replaced, the link stays
        finally:
            tmp.unlink(missing_ok=True)
    except OSError as e:  # disk full, read-only folder, /dev/full: one line; the results are in the store
        raise EvalcoreError(f"cannot write {path}: {e.strerror or e}; {hint}") from e
