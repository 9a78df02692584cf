"""Batched sampling whose output for an item does not depend on the batch it ran in.

Each row draws its noise from its own `torch.Generator` seeded with (seed, item key), so a
continuation is reproducible per item and can be cached per (model, decoding, item).
Sampling uses the Gumbel-max trick on processed logits (temperature, top-k, top-p);
temperature 0 is greedy.

    prompts, left-padded:   [pad pad c c c c]     position ids = cumsum(mask) - 1
                            [c   c   c c c c]
    then one token per step for every unfinished row, on top of the KV cache.
"""
from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from evalcore.errors import InputError
from evalcore.models import LoadedModel


@dataclass(frozen=True)
class Decoding:
    """Decoding settings (part of the cache key of every generated text)."""

    temperature: float = 1.0  # 0 = greedy
    top_p: float = 0.95  # nucleus sampling mass; 1 = off
    top_k: int = 0  # 0 = off
    max_new_tokens: int | None = None  # None: about the gold ending's length, per item
    seed: int = 0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.temperature) and 0 <= self.temperature <= 100):
            raise InputError(f"temperature={self.temperature}: must be a number in [0, 100] (0 = greedy)")
        if not 0 < self.top_p <= 1:  # NaN fails this too
            raise InputError(f"top_p={self.top_p}: must be in (0, 1]")
        if self.top_k < 0 or (self.max_new_tokens is not None and self.max_new_tokens < 1):
            raise InputError("top_k must be >= 0 and max_new_tokens >= 1")

    def to_dict(self) -> dict:
        return asdict(self)


def _row_seed(seed: int, key: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{key}".encode()).digest()[:8], "little") & ((1 << 63) - 1)


def generate(lm: LoadedModel, prompts: Sequence[str], keys: Sequence[str], max_new: Sequence[int],
             decoding: Decoding) -> list[str]:
    """Continue each prompt; `keys` identify items for their random streams; returns new text only."""
    import torch

    tok = lm.tokenizer
    ids = [tok(p).input_ids for p in prompts]
    B, L = len(ids), max(len(x) for x in ids)
    pad = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
    inp = torch.full((B, L), pad, dtype=torch.long)
    mask = torch.zeros((B, L), dtype=torch.long)
    for b, x in enumerate(ids):
        inp[b, L - len(x):] = torch.tensor(x)
        mask[b, L - len(x):] = 1
    gens = [torch.Generator().manual_seed(_row_seed(decoding.seed, k)) for k in keys]
    gc_eos = getattr(lm.model.generation_config, "eos_token_id", None)
    eos = {tok.eos_token_id, *(gc_eos if isinstance(gc_eos, list) else [gc_eos])} - {None}
    out: list[list[int]] = [[] for _ in range(B)]
    done = [False] * B
    steps = max(max_new)
    with torch.inference_mode():
        cache = lm.new_cache()
        pos = (mask.cumsum(1) - 1).clamp_min(0)
        logits = lm.model(input_ids=inp.to(lm.device), attention_mask=mask.to(lm.device), position_ids=pos.to(lm.device),
                          cache=cache, use_cache=True, logits_to_keep=1).logits[:, -1].float().cpu()
        for step in range(steps):
            nxt = [_pick(logits[b], decoding, gens[b]) for b in range(B)]
            for b in range(B):
                if not done[b]:
                    if nxt[b] in eos:
                        done[b] = True
                    else:
                        out[b].append(nxt[b])
                        done[b] = len(out[b]) >= max_new[b]
            if all(done) or step == steps - 1:
                break
            mask = torch.cat([mask, torch.ones((B, 1), dtype=torch.long)], dim=1)
            pos = mask.sum(1, keepdim=True) - 1
            logits = lm.model(input_ids=torch.tensor(nxt)[:, None].to(lm.device), attention_mask=mask.to(lm.device),
                              position_ids=pos.to(lm.device), cache=cache, use_cache=True).logits[:, -1].float().cpu()
    return [tok.decode(o, skip_special_tokens=True) for o in out]


def _pick(logits, d: Decoding, gen) -> int:
    """One token from processed logits: greedy, or Gumbel-max sampling with the row's generator."""
    import torch

    if d.temperature == 0:
        return int(logits.argmax())
    x = logits / d.temperature
    if d.top_k:
        kth = torch.topk(x, min(d.top_k, x.numel())).values[-1]
        x = x.masked_fill(x < kth, float("-inf"))
    if d.top_p < 1:
        sx, si = torch.sort(x, descending=True)
        cum = torch.softmax(sx, -1).cumsum(-1)
        drop = cum - torch.softmax(sx, -1) >= d.top_p  # keep the smallest prefix reaching top_p
        x = x.masked_fill(torch.zeros_like(drop).scatter(0, si, drop), float("-inf"))
    u = torch.rand(x.shape, generator=gen).clamp_(1e-20, 1.0)
    return int((x - torch.log(-torch.log(u))).argmax())
