"""A memory-capped cgroup (v1) for a child process: how the Cloud rehearsal and the tests give
a process a smaller machine than this one. Needs root and /sys/fs/cgroup/memory.

    with MemoryGroup("evalcore-rehearsal", 2.7 * 2**30) as g:
        subprocess.Popen(g.wrap(["python", "-m", "streamlit", ...]))   # the child starts inside the group
        ...
        g.oom_kills()                                                    # kills by the cap, so far
    # the group is removed (once its processes have exited)
"""
from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

V1_MEMORY = Path("/sys/fs/cgroup/memory")


class MemoryGroup:
    """A cgroup v1 memory group `name` capped at `cap_bytes` (swap included where it is accounted).
    Creating it raises OSError without root or cgroup v1."""

    def __init__(self, name: str, cap_bytes: float) -> None:
        self.path = V1_MEMORY / name
        self.path.mkdir(exist_ok=True)
        (self.path / "memory.limit_in_bytes").write_text(str(int(cap_bytes)))
        swap = self.path / "memory.memsw.limit_in_bytes"
        if swap.exists():
            try:
                swap.write_text(str(int(cap_bytes)))
            except OSError:
                pass

    def wrap(self, cmd: Sequence[str]) -> list[str]:
        """`cmd` behind a shell that moves itself into the group, then execs it."""
        return ["sh", "-c", f'echo $$ > {self.path / "cgroup.procs"} && exec "$@"', "sh", *cmd]

    def oom_kills(self) -> int:
        try:
            for line in (self.path / "memory.oom_control").read_text().splitlines():
                if line.startswith("oom_kill "):
                    return int(line.split()[1])
        except OSError:
            pass
        return 0

    def remove(self) -> None:
        """Remove the group; its processes must have exited (retried for up to 10 s while they go)."""
        for _ in range(20):
            try:
                self.path.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError:
                time.sleep(0.5)

    def __enter__(self) -> MemoryGroup:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()
