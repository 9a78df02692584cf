"""The model body's best tokens/s on large causal batches (no mask, no LM head): the ceiling
the throughput benches compare against (an item cannot cost less than its tokens through it)."""
from __future__ import annotations

import time


def body_peak_tokens_per_s(lm, rows: int = 4, length: int = 512, repeats: int = 3) -> float:
    import torch

    ids = torch.randint(10, 1000, (rows, length), generator=torch.Generator().manual_seed(0))
    best = float("inf")
    with torch.inference_mode():
        lm.model.base_model(input_ids=ids)  # warm-up
        for _ in range(repeats):
            t = time.perf_counter()
            lm.model.base_model(input_ids=ids)
            best = min(best, time.perf_counter() - t)
    return rows * length / best
