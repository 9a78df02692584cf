"""Token rows into one padded batch: the [B, T] ids and attention mask a forward pass takes.

    rows:  [a a a a]         ids:  a a a a     mask:  1 1 1 1
           [b b]       ->          b b 0 0            1 1 0 0
                        left=True: 0 0 b b            0 0 1 1   (prompts for generation)

T is the longest row; `value` fills the padding.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import Tensor


def pad_batch(rows: Sequence[Sequence[int]], *, value: int = 0, left: bool = False) -> tuple[Tensor, Tensor]:
    """(ids, mask): the rows as one [B, T] long tensor padded with `value` on the right (on the
    left with left=True), and its mask, 1 at real tokens and 0 at padding."""
    import torch

    B, T = len(rows), max((len(r) for r in rows), default=0)
    ids = torch.full((B, T), value, dtype=torch.long)
    mask = torch.zeros((B, T), dtype=torch.long)
    for b, r in enumerate(rows):
        real = slice(T - len(r), T) if left else slice(0, len(r))
        ids[b, real] = torch.tensor(list(r), dtype=torch.long)
        mask[b, real] = 1
    return ids, mask
