"""Batched sampling whose output for an item does not depend on the batch it ran in.

Each row draws from its own `torch.Generator` seeded with (seed, item key), so a
continuation is reproducible per item and can be cached per (model, decoding, item).
Sampling is exact inverse-CDF sampling on processed logits (temperature, top-k, top-p);
temperature 0 is greedy.

    prompts, left-padded:   [pad pad c c c c]     position ids = cumsum(mask) - 1
                            [c   c   c c c c]
    then one token per step for every unfinished row, on top of the KV cache.

One step, for the R unfinished rows at once (logits [R, V] as the forward returns them):

    x      = logits / temperature                                    [R, V]
    top-k  x[x < k-th largest] = -inf
    top-p  e = exp(x - max), z = sum(e) per row; a window of the w largest x per row (topk,
           sorted): p = e / z, cum = cumsum(p) in float64; keep a token while the mass before
           it is below top_p. w = 64, 256, 1024, ... until each row's first dropped token is
           inside its window: the kept set of a full sort, found without sorting V values.
    draw   u = one float64 uniform from the row's generator; the token at the first cum > u x
           (the kept mass). Without top-p: cum over all V tokens in id order. (Gumbel-max
           would need V uniforms per row and step; this needs one.)

Finished rows leave the batch (and their rows of the KV cache) once a quarter of it has
finished, so later steps run the forward on fewer rows. The KV cache of evalcore's own forward
is preallocated for the prompt plus every new token ([B, kv heads, L + steps, head dim] per
layer) and written in place, instead of growing by a concatenation each step.
"""
from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from evalcore.errors import InputError
from evalcore.models import LoadedModel

if TYPE_CHECKING:
    from torch import Tensor

NUCLEUS_WINDOW = 64  # first top-p window per row; grown 4x while a row's nucleus is wider


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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _row_seed(seed: int, key: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{key}".encode()).digest()[:8], "little") & ((1 << 63) - 1)


def generate(lm: LoadedModel, prompts: Sequence[str], keys: Sequence[str], max_new: Sequence[int],
             decoding: Decoding) -> list[str]:
    """Continue each prompt; `keys` identify items for their random streams; returns new text only."""
    tok = lm.tokenizer
    out = sample_ids(lm, [tok(p).input_ids for p in prompts], keys, max_new, decoding)
    return [tok.decode(o, skip_special_tokens=True) for o in out]


def sample_ids(lm: LoadedModel, ids: Sequence[Sequence[int]], keys: Sequence[str], max_new: Sequence[int],
               decoding: Decoding) -> list[list[int]]:
    """Continue each prompt given as token ids; returns each row's new token ids (EOS excluded).

    Per step: the sampler picks a token for each unfinished row (`Sampler.pick`); a row ends at
    an EOS token (not part of its output) or after its `max_new` tokens. Finished rows leave the
    batch (their KV cache rows too) when at least a quarter of it has finished, so the forward
    runs on fewer rows; a cache without `batch_select_indices` keeps them, fed a pad token.
    """
    import torch

    tok = lm.tokenizer
    B, L = len(ids), max(len(x) for x in ids)
    steps = max(max_new)
    pad = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
    inp = torch.full((B, L), pad, dtype=torch.long)
    mask = torch.zeros((B, L + steps), dtype=torch.long)  # column L + s: the token fed after step s
    for b, x in enumerate(ids):
        inp[b, L - len(x):] = torch.tensor(list(x), dtype=torch.long)
        mask[b, L - len(x):L] = 1
    gc_eos = getattr(lm.model.generation_config, "eos_token_id", None)
    eos = torch.tensor(sorted({tok.eos_token_id, *(gc_eos if isinstance(gc_eos, list) else [gc_eos])} - {None}),
                       dtype=torch.long)
    sampler = Sampler(decoding, keys)
    toks = torch.full((B, steps), pad, dtype=torch.long)  # the token each item drew at each step
    kept = torch.zeros((B, steps), dtype=torch.bool)  # ... and whether it belongs to the item's output
    count = torch.zeros(B, dtype=torch.long)
    limit = torch.tensor(list(max_new), dtype=torch.long)
    done = torch.zeros(B, dtype=torch.bool)
    rows = torch.arange(B)  # the item of each row of the forward's batch
    dev = lm.device
    with torch.inference_mode():
        cache = _Cache(L + steps) if lm.backend == "native" else lm.new_cache()
        shrink = getattr(cache, "batch_select_indices", None)
        pos = (mask[:, :L].cumsum(1) - 1).clamp_min(0)
        logits = lm.model(input_ids=inp.to(dev), attention_mask=mask[:, :L].to(dev), position_ids=pos.to(dev),
                          cache=cache, use_cache=True, logits_to_keep=1).logits[:, -1]
        pos = pos[:, -1:]
        for step in range(steps):
            live = ~done[rows]
            nxt = torch.full((len(rows),), pad, dtype=torch.long)
            nxt[live] = sampler.pick(logits if bool(live.all()) else logits[live.to(logits.device)], rows[live])
            end = live & torch.isin(nxt, eos)
            take = live & ~end
            toks[rows, step], kept[rows, step] = nxt, take
            count[rows] += take
            done[rows] |= end | (count[rows] >= limit[rows])
            if step == steps - 1 or bool(done.all()):
                break
            mask[:, L + step] = 1
            pos = pos + 1
            stay = ~done[rows]
            if shrink is not None and 4 * int((~stay).sum()) >= len(rows):
                sel = stay.nonzero().flatten()
                shrink(sel.to(dev))
                rows, nxt, pos, mask = rows[sel], nxt[sel], pos[sel], mask[sel]
            logits = lm.model(input_ids=nxt[:, None].to(dev), attention_mask=mask[:, : L + step + 1].to(dev),
                              position_ids=pos.to(dev), cache=cache, use_cache=True).logits[:, -1]
    return [toks[b][kept[b]].tolist() for b in range(B)]


class Sampler:
    """Picks one token per row from a batch of logits, each row with its own random stream.

    A stream depends on (seed, the item's key) only, and each pick for an item draws one
    float64 uniform from it, so an item's tokens are the same in any batch.
    """

    def __init__(self, decoding: Decoding, keys: Sequence[str]) -> None:
        import torch

        self.d = decoding
        self.gens = [torch.Generator().manual_seed(_row_seed(decoding.seed, k)) for k in keys]

    def pick(self, logits: Tensor, items: Tensor) -> Tensor:
        """logits [R, V] (any device and float dtype), items [R]: whose stream each row draws
        from -> [R] token ids on the CPU."""
        import torch

        x = logits.float()
        if self.d.temperature == 0:
            return x.argmax(-1).cpu()
        if self.d.temperature != 1:
            x = x / self.d.temperature
        if self.d.top_k:
            kth = torch.topk(x, min(self.d.top_k, x.shape[1]), dim=-1).values[:, -1:]
            x = x.masked_fill(x < kth, float("-inf"))
        if self.d.top_p < 1:
            ids, cum, n = nucleus(x, self.d.top_p)
        else:  # every token, in id order
            ids, cum = None, torch.exp(x - x.max(-1, keepdim=True).values).double().cumsum(-1)
            n = torch.full((x.shape[0],), x.shape[1], dtype=torch.long, device=x.device)
        u = torch.cat([torch.rand(1, dtype=torch.float64, generator=self.gens[i]) for i in items.tolist()])
        cum, n = cum.cpu(), n.cpu()
        target = u * cum.gather(1, (n - 1)[:, None])[:, 0]  # in [0, the kept mass)
        j = torch.minimum(torch.searchsorted(cum, target[:, None], right=True)[:, 0], n - 1)
        return j if ids is None else ids.cpu().gather(1, j[:, None])[:, 0]


def nucleus(x: Tensor, top_p: float, window: int = NUCLEUS_WINDOW) -> tuple[Tensor, Tensor, Tensor]:
    """The top-p kept set of each row of x [R, V] (float32 logits, -inf for tokens already
    excluded): token ids [R, w] in descending order of x, their cumulative probabilities
    [R, w] (float64, +inf past a row's window), and the kept count n [R] (the first n ids).

    The rule is a full sort's: p = exp(x - max) / sum (the sum over the row in float32,
    ~1e-7 relative error), summed in descending order in float64; a token is kept while the
    mass before it is below top_p. Windows of the w largest x grow (x4) for the rows whose
    whole window is kept, until every row's first dropped token lies inside its window (or
    w = V).
    """
    import torch

    R, V = x.shape
    e = torch.exp(x - x.max(-1, keepdim=True).values)
    z = e.sum(-1, keepdim=True).double()
    got: list[Any] = [None] * R
    todo = torch.arange(R, device=x.device)
    w = min(window, V)
    while len(todo):
        part = len(todo) < R
        i = torch.topk(x[todo] if part else x, w, dim=-1).indices  # sorted, descending
        p = (e[todo] if part else e).gather(1, i).double() / (z[todo] if part else z)
        cum = p.cumsum(-1)
        before = torch.cat([cum.new_zeros((len(cum), 1)), cum[:, :-1]], 1)  # the mass before each token
        n = (before < top_p).sum(-1)
        fits = (n < w) | (w == V)
        for j in fits.nonzero().flatten().tolist():
            got[int(todo[j])] = (i[j], cum[j], n[j])
        todo = todo[~fits]
        w = min(4 * w, V)
    width = max(len(g[0]) for g in got)
    ids = torch.zeros((R, width), dtype=torch.long, device=x.device)
    cums = torch.full((R, width), float("inf"), dtype=torch.float64, device=x.device)
    for r, (i, cum, _) in enumerate(got):
        ids[r, : len(i)], cums[r, : len(i)] = i, cum
    return ids, cums, torch.stack([g[2] for g in got])


class _Cache:
    """KV cache for evalcore's own forward (its `cache=` interface: `update`, `get_seq_length`),
    preallocated for `capacity` positions: each update writes into place and returns views of
    the positions so far, where a concatenation would copy the whole cache every step."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.kv: dict[int, tuple[Tensor, Tensor]] = {}
        self.n: dict[int, int] = {}

    def update(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        import torch

        if layer not in self.kv:
            B, H, _, D = k.shape
            self.kv[layer] = (torch.empty((B, H, self.capacity, D), dtype=k.dtype, device=k.device),
                              torch.empty((B, H, self.capacity, D), dtype=v.dtype, device=v.device))
            self.n[layer] = 0
        ks, vs = self.kv[layer]
        a, b = self.n[layer], self.n[layer] + k.shape[2]
        ks[:, :, a:b] = k
        vs[:, :, a:b] = v
        self.n[layer] = b
        return ks[:, :, :b], vs[:, :, :b]

    def get_seq_length(self) -> int:
        return self.n.get(0, 0)

    def batch_select_indices(self, indices: Tensor) -> None:
        """Keep only these rows of the batch (the positions so far, into new buffers)."""
        import torch

        for layer, (ks, vs) in self.kv.items():
            n = self.n[layer]
            k = torch.empty((len(indices), *ks.shape[1:]), dtype=ks.dtype, device=ks.device)
            v = torch.empty((len(indices), *vs.shape[1:]), dtype=vs.dtype, device=vs.device)
            k[:, :, :n], v[:, :, :n] = ks[indices, :, :n], vs[indices, :, :n]
            self.kv[layer] = (k, v)
