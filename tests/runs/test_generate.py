"""Batched sampling (`evalcore.scoring.generate`) on the bundled models.

    reference   a row-by-row sampler with a full sort per row and step (the rule the batched
                one must match): the same texts, token for token
    batch       an item's text alone == its text inside a batch of other items
    nucleus     the windowed top-p kept set == the full-sort kept set, on real logits (and a
                float64 softmax's, but where rounding puts a token's mass at top_p)
    greedy      temperature 0 == argmax decoding recomputed without a cache
    seeds       the same call twice gives the same texts; another seed other texts
    draws       many one-step draws follow the kept, renormalised probabilities
"""
from __future__ import annotations

import pytest
import torch

from evalcore.scoring import Decoding, generate
from evalcore.scoring.generate import NUCLEUS_WINDOW, Sampler, _row_seed, nucleus

N_ITEMS = 6


@pytest.fixture(scope="module")
def items(hellaswag):
    return hellaswag.items(list(range(N_ITEMS)))


def _args(items, new: int | list[int] = 8):
    prompts = [it.query for it in items]
    keys = [str(it.index) for it in items]
    return prompts, keys, new if isinstance(new, list) else [new] * len(items)


def _reference(lm, prompts, keys, max_new, d: Decoding) -> list[str]:
    """One row at a time: the logits of a left-padded batch with a growing KV cache (every row
    to the last step), each row's token from a full descending sort (keep the smallest prefix
    whose mass reaches top_p) and one uniform from the row's own generator."""
    tok = lm.tokenizer
    ids = [tok(p).input_ids for p in prompts]
    B, L = len(ids), max(len(x) for x in ids)
    pad = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
    inp = torch.full((B, L), pad, dtype=torch.long)
    mask = torch.zeros((B, L), dtype=torch.long)
    for b, x in enumerate(ids):
        inp[b, L - len(x):] = torch.tensor(x)
        mask[b, L - len(x):] = 1
    gens = [torch.Generator().manual_seed(_row_seed(d.seed, k)) for k in keys]
    gc_eos = getattr(lm.model.generation_config, "eos_token_id", None)
    eos = {tok.eos_token_id, *(gc_eos if isinstance(gc_eos, list) else [gc_eos])} - {None}
    out: list[list[int]] = [[] for _ in range(B)]
    done = [False] * B

    def pick(x, gen):
        if d.temperature == 0:
            return int(x.argmax())
        x = x / d.temperature
        if d.top_k:
            x = x.masked_fill(x < torch.topk(x, d.top_k).values[-1], float("-inf"))
        e = torch.exp(x - x.max())
        if d.top_p < 1:
            ids = torch.sort(x, descending=True, stable=True).indices
            p = e[ids].double() / e.sum().double()
            cum = p.cumsum(0)
            n = int((torch.cat([cum.new_zeros(1), cum[:-1]]) < d.top_p).sum())  # mass before a token < top_p
            ids, cum = ids[:n], cum[:n]
        else:
            ids, cum = torch.arange(len(x)), e.double().cumsum(0)
        u = torch.rand(1, dtype=torch.float64, generator=gen)
        return int(ids[min(int(torch.searchsorted(cum, u * cum[-1], right=True)), len(ids) - 1)])

    with torch.inference_mode():
        cache = lm.new_cache()
        pos = (mask.cumsum(1) - 1).clamp_min(0)
        logits = lm.model(input_ids=inp, attention_mask=mask, position_ids=pos, cache=cache, use_cache=True,
                          logits_to_keep=1).logits[:, -1].float()
        for step in range(max(max_new)):
            nxt = [pick(logits[b], gens[b]) for b in range(B)]
            for b in range(B):
                if not done[b]:
                    if nxt[b] in eos:
                        done[b] = True
                    else:
                        out[b].append(nxt[b])
                        done[b] = len(out[b]) >= max_new[b]
            if all(done):
                break
            mask = torch.cat([mask, torch.ones((B, 1), dtype=torch.long)], dim=1)
            logits = lm.model(input_ids=torch.tensor(nxt)[:, None], attention_mask=mask,
                              position_ids=mask.sum(1, keepdim=True) - 1, cache=cache, use_cache=True).logits[:, -1].float()
    return [tok.decode(o, skip_special_tokens=True) for o in out]


@pytest.mark.parametrize("model", ["smol", "gemma"])
@pytest.mark.parametrize("d", [Decoding(), Decoding(temperature=0.7, top_p=0.5, top_k=40, seed=3),
                               Decoding(top_p=1.0, seed=1)], ids=["default", "t0.7-p0.5-k40", "p1"])
def test_same_texts_as_row_by_row_full_sort(request, items, model, d):
    lm = request.getfixturevalue(model)
    prompts, keys, new = _args(items, [8, 3, 6, 8, 4, 8])  # rows end at different steps
    got = generate(lm, prompts, keys, new, d)
    assert got == _reference(lm, prompts, keys, new, d)
    assert all(got)


@pytest.mark.parametrize("model", ["smol", "gemma"])
def test_text_does_not_depend_on_the_batch(request, items, model):
    lm = request.getfixturevalue(model)
    prompts, keys, new = _args(items)
    together = generate(lm, prompts, keys, new, Decoding())
    alone = [0, 2, 5]  # three rows, each in a batch of its own: first, middle and last of the batch
    assert [together[i] for i in alone] == [generate(lm, [prompts[i]], [keys[i]], [new[i]], Decoding())[0] for i in alone]
    order = [3, 0, 5, 1, 4, 2]  # other neighbours and other padding
    shuffled = generate(lm, [prompts[i] for i in order], [keys[i] for i in order], [new[i] for i in order], Decoding())
    assert shuffled == [together[i] for i in order]


def _full_sort(x, order, top_p: float, *, exact: bool = False):
    """Per row of x: the kept token ids of a full descending sort (`order`: x's stable sort),
    the cumulative probabilities in that order, and the mass before each token. Probabilities
    as the sampler computes them, or (`exact`) a float64 softmax."""
    if exact:
        p = torch.softmax(x.double(), -1).gather(1, order)
    else:
        e = torch.exp(x - x.max(-1, keepdim=True).values)
        p = e.gather(1, order).double() / e.sum(-1, keepdim=True).double()
    cum = p.cumsum(-1)
    before = torch.cat([torch.zeros_like(cum[:, :1]), cum[:, :-1]], 1)
    keep = before < top_p
    return [set(order[r][keep[r]].tolist()) for r in range(len(x))], cum, before


@pytest.mark.parametrize("model", ["smol", "gemma"])
def test_nucleus_kept_set_is_the_full_sort_one(request, items, model):
    lm = request.getfixturevalue(model)
    tok = lm.tokenizer
    rows = []
    with torch.inference_mode():
        for it in items:  # every position's next-token logits of context + gold ending: confident and flat rows
            ids = torch.tensor([tok(it.query + " " + it.choices[it.label]).input_ids])
            rows.append(lm.model(input_ids=ids).logits[0].float())
    logits = torch.cat(rows)
    logits = logits[:: max(1, len(logits) // 32)]  # ~32 rows: a full sort of the vocabulary each
    order = torch.sort(logits, dim=-1, descending=True, stable=True).indices  # the same at every temperature
    rank = torch.empty_like(order).scatter_(1, order, torch.arange(order.shape[1]).expand_as(order))
    widest, near = 0, 0
    for temperature in (0.5, 1.0, 1.5):
        x = logits / temperature
        for top_p in (0.1, 0.5, 0.9, 0.95, 0.99):
            ids, cum, n = nucleus(x, top_p)
            kept = [set(ids[r, : n[r]].tolist()) for r in range(len(x))]
            ref, ref_cum, _ = _full_sort(x, order, top_p)
            # the same set, up to which of several equal logits at the edge is kept (a sort orders ties
            # by id, topk need not: either set is the full sort's, and the masses are the same)
            bad = [r for r in range(len(x)) if len(kept[r]) != len(ref[r])
                   or {float(x[r, t]) for t in kept[r] ^ ref[r]} - {float(x[r, ids[r, n[r] - 1]])}]
            assert not bad, f"T={temperature} top_p={top_p}: rows {bad[:5]} differ"
            for r in range(len(x)):
                assert torch.equal(cum[r, : n[r]], ref_cum[r, : n[r]])
            widest = max(widest, int(n.max()))
            # against float64 probabilities: the same set but for tokens whose preceding mass is
            # within the float32 sum's rounding of top_p
            exact, _, before = _full_sort(x, order, top_p, exact=True)
            for r in range(len(x)):
                for t in ref[r] ^ exact[r]:  # ref: kept, ties at the edge taken in id order
                    assert abs(float(before[r, rank[r, t]]) - top_p) < 1e-6, (temperature, top_p, r, t)
                    near += 1
    assert widest > 4 * NUCLEUS_WINDOW  # the window grew more than once for some row
    assert near <= 0.05 * 15 * len(logits)
    # with earlier exclusions (top-k's -inf), the kept set stays inside what is left
    x = logits.masked_fill(logits < torch.topk(logits, 5).values[:, -1:], float("-inf"))
    ids, _, n = nucleus(x, 0.99)
    order = torch.sort(x, dim=-1, descending=True, stable=True).indices
    assert [set(ids[r, : n[r]].tolist()) for r in range(len(x))] == _full_sort(x, order, 0.99)[0]
    assert int(n.max()) <= 5


@pytest.mark.parametrize("model", ["smol", "gemma"])
def test_temperature_zero_is_greedy(request, items, model):
    lm = request.getfixturevalue(model)
    prompts, keys, new = _args(items[:2], 6)
    got = generate(lm, prompts, keys, new, Decoding(temperature=0))
    eos = lm.tokenizer.eos_token_id
    want = []
    with torch.inference_mode():
        for p in prompts:  # each prompt alone, the whole sequence again at each step, no cache
            ids = lm.tokenizer(p).input_ids
            out: list[int] = []
            for _ in range(6):
                t = int(lm.model(input_ids=torch.tensor([ids + out]), logits_to_keep=1).logits[0, -1].argmax())
                if t == eos:
                    break
                out.append(t)
            want.append(lm.tokenizer.decode(out, skip_special_tokens=True))
    assert got == want
    assert got != generate(lm, prompts, keys, new, Decoding())  # sampling is not greedy here


def test_same_call_same_texts_other_seed_other_texts(smol, items):
    prompts, keys, new = _args(items)
    first = generate(smol, prompts, keys, new, Decoding())
    assert generate(smol, prompts, keys, new, Decoding()) == first
    other = generate(smol, prompts, keys, new, Decoding(seed=1))
    assert sum(a != b for a, b in zip(first, other)) >= N_ITEMS // 2
    assert len(set(first)) == N_ITEMS


@pytest.mark.parametrize("d", [Decoding(), Decoding(top_p=1.0), Decoding(temperature=1.5, top_p=0.8, top_k=10)],
                         ids=["default", "p1", "t1.5-p0.8-k10"])
def test_draws_follow_the_kept_distribution(d):
    n, V = 20000, 50
    logits = torch.randn(1, V, generator=torch.Generator().manual_seed(0)) * 2
    toks = Sampler(d, [str(i) for i in range(n)]).pick(logits.expand(n, V).contiguous(), torch.arange(n))
    freq = torch.bincount(toks, minlength=V).double() / n
    y = logits[0].double() / d.temperature
    if d.top_k:
        y = y.masked_fill(y < torch.topk(y, d.top_k).values[-1], float("-inf"))
    sp, si = torch.sort(torch.softmax(y, -1), descending=True)
    keep = sp.cumsum(0) - sp < d.top_p
    q = torch.zeros(V, dtype=torch.float64)
    q[si[keep]] = sp[keep] / sp[keep].sum()
    assert float(freq[q == 0].sum()) == 0  # nothing outside the kept set
    z = (freq - q)[q > 0] / (q * (1 - q) / n).sqrt()[q > 0]
    assert float(z.abs().max()) < 4.5 and int(keep.sum()) > 2
