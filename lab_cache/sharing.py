"""How sessions share one server's work (no Streamlit here): `Turns`, one heavy call at a time
per model, and `Memo`, results computed once and shared. `lab_cache` holds one of each per
process (`st.cache_resource`)."""
from __future__ import annotations

import contextlib
import threading
from collections import OrderedDict

from evalcore import runtime


class Turns:
    """One heavy call at a time per model, first come first served.

    Two sessions running the same model at once would double its activations and split the CPU
    between them, so each finishes later than if they had taken turns; a class of visitors
    would run the server out of memory. A waiting session is told its place:

        smollm2-135m: [A running] [B waiting, place 1] [C waiting, place 2]
    """

    def __init__(self) -> None:
        self._cv = threading.Condition()
        self._lines: dict[str, list[object]] = {}

    @contextlib.contextmanager
    def turn(self, name: str, on_wait=None):
        """Hold `name`'s turn for the block; while others are ahead, call `on_wait(place)` every
        0.25 s (place 1 = next). The caller leaves the line however the block ends, also when
        Streamlit stops its script inside `on_wait`."""
        me = object()
        with self._cv:
            line = self._lines.setdefault(name, [])
            line.append(me)
        try:
            while True:
                with self._cv:
                    if line[0] is not me:
                        self._cv.wait(0.25)
                    place = line.index(me)
                if place == 0:
                    break
                if on_wait is not None:
                    on_wait(place)
            yield
        finally:
            with self._cv:
                line.remove(me)
                self._cv.notify_all()

    def idle(self, name: str) -> bool:
        """True when nobody holds or awaits `name`'s turn."""
        with self._cv:
            return not self._lines.get(name)


class Memo:
    """Results shared by all sessions, least recently used dropped first.

    Not `st.cache_data`: a progress bar that a page passes in cannot be updated from inside
    a cached function (Streamlit would replay it on every cache hit). Values are frozen
    result dataclasses; a miss computes under a per-key lock, so two sessions asking for
    the same work at once compute it once.
    """

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self._data: OrderedDict[tuple, object] = OrderedDict()
        self._lock = threading.Lock()
        self._key_locks: dict[tuple, threading.Lock] = {}

    def peek(self, key: tuple):
        """The value if some session computed it already, else None (never computes)."""
        with self._lock:
            return self._data.get(key)

    def get(self, key: tuple, compute, progress=None, turns: tuple[Turns, str | tuple[str, ...]] | None = None):
        """The value for `key`, computed once; while another session computes it, wait.

        The wait polls, calling `progress(-1, -1)` between polls, so a waiting page still
        reacts to its user (Streamlit stops or reruns a script at its next st call). With
        `turns=(Turns, model name)` the computation waits for the model's turn, calling
        `progress(place, -1)` meanwhile; with several names, for each one's turn in name order.
        """
        with self._lock:
            if key in self._data:
                self._data.move_to_end(key)
                return self._data[key]
            key_lock = self._key_locks.setdefault(key, threading.Lock())
        while not key_lock.acquire(timeout=0.25):
            if progress is not None:
                progress(-1, -1)
        try:
            with self._lock:
                if key in self._data:
                    return self._data[key]
            if turns is None:
                value = compute()
            else:
                queue, who = turns
                on_wait = None if progress is None else lambda place: progress(place, -1)
                with contextlib.ExitStack() as held:
                    # one order for everyone: a session holding A's turn and waiting for B's is
                    # never waited on by one holding B's and waiting for A's
                    for name in sorted({who} if isinstance(who, str) else set(who)):
                        held.enter_context(queue.turn(name, on_wait))
                    value = compute()
            runtime.release_free_memory()  # the activations' heap pages, back to the box
            with self._lock:
                self._data[key] = value
                self._key_locks.pop(key, None)
                while len(self._data) > self.max_entries:
                    self._data.popitem(last=False)
            return value
        finally:
            key_lock.release()
