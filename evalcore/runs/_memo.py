"""The one store-memoised map every run uses: values for keys, read from the store or computed.

    keys       [k0, k1, k2, k3, k4]      content hashes (store.record_key)
    store      k1, k3 found              -> cached = 2, served as they are
    compute    ([0, 2], [v0, v2])        batches of the missing positions, each stored before
               ([4],    [v4])            the next is computed: a killed run resumes from them
    returns    [v0, v1, v2, v3, v4], 2
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from evalcore.store import Store

Progress = Callable[[int, int], None]  # (done, total)
Batches = Iterator[tuple[list[int], list[Any]]]  # what a compute function yields: (positions, values)


def memo_map(store: Store, op: str, keys: Sequence[str],
             compute: Callable[[list[int]], Iterable[tuple[Sequence[int], Sequence[Any]]]], *,
             progress: Progress | None = None) -> tuple[list[Any], int]:
    """(the value of each key in order, how many came from the store).

    `compute(missing positions)` yields (positions, JSON-able values) batches; each batch is
    written to the store (operation `op`) as it comes, and `progress(done, total)` follows.
    """
    found = store.get_many(keys)
    values: dict[int, Any] = {i: found[k] for i, k in enumerate(keys) if k in found}
    cached = done = len(values)
    todo = [i for i in range(len(keys)) if i not in values]
    if progress:
        progress(done, len(keys))
    if todo:
        for positions, batch in compute(todo):
            store.put_many(op, {keys[i]: v for i, v in zip(positions, batch)})
            values.update(zip(positions, batch))
            done += len(positions)
            if progress:
                progress(done, len(keys))
    return [values[i] for i in range(len(keys))], cached
