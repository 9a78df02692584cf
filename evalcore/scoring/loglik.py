"""Forward passes: per-token log-probs of continuations given a shared context.

The only module (with `models`) that imports torch. It takes token ids and returns numpy.

Token boundary, as lm-evaluation-harness draws it (`HFLM._encode_pair`):

    whole  = encode(context + continuation)     # tokenizer's default special tokens
    ctx    = encode(context)                    # e.g. Gemma: [<bos>, ...]; SmolLM2: no BOS
    cont   = whole[len(ctx):]
    scored sequence = ctx + cont                # lm-eval feeds ctx + cont, not `whole`

    position:  0 ....... Lc-1 | Lc ........ Lc+m-1
    tokens:    CTX  CTX  CTX  | CONT CONT .. CONT
    logits:    ..........[h]  | [h]  [h] .. (unused)
                          |      |
               predicts CONT_1   predicts CONT_2 ...

Because lm-eval always feeds `ctx + cont`, the context's KV cache is shared by every
continuation of an item, even when `whole` does not start with `ctx` (a BPE merge across
the boundary); `encode_pair` reports those cases (`merged`) for the record.

Shared-context batching (`iter_logprobs`): groups are sorted by length, descending, and
packed into batches under a token budget. Per batch:
  1. contexts, right-padded, run once through the model body -> KV cache + hidden state
     at each context's last real token;
  2. continuation rows (one per group x continuation) are sorted by length and cut into
     sub-passes with little padding; each takes its rows of the context cache;
  3. continuation tokens (all but the last, which predicts nothing we score) run on top
     with explicit position ids Lc_i + j and an attention mask that hides context padding;
  4. the LM head runs only on the hidden states that predict a continuation token.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from evalcore.models import LoadedModel

log = logging.getLogger(__name__)

HEAD_CHUNK_ROWS = 256  # rows of hidden states per LM-head matmul: bounds memory for 262k vocabularies


@dataclass(frozen=True)
class Group:
    """One context and the continuations scored after it."""

    context: tuple[int, ...]  # token ids of the context (with BOS where the tokenizer adds one)
    continuations: tuple[tuple[int, ...], ...]  # token ids of each continuation (>= 1 token each)
    merged: int = 0  # continuations whose whole encoding did not start with `context`

    @property
    def n_tokens(self) -> int:
        return len(self.context) + sum(len(c) for c in self.continuations)


def encode_pair(tokenizer, context: str, continuations: Sequence[str]) -> Group:
    """Tokenize a context and its continuations with lm-eval's boundary (module docstring)."""
    ctx_ids: list[int] = []
    conts: list[tuple[int, ...]] = []
    merged = 0
    for cont in continuations:
        # lm-eval moves trailing spaces of the context onto the continuation
        n_sp = len(context) - len(context.rstrip())
        c_str, k_str = (context[:-n_sp], context[-n_sp:] + cont) if n_sp else (context, cont)
        ctx_ids = tokenizer(c_str).input_ids if c_str else [_prefix_token(tokenizer)]
        whole = tokenizer(c_str + k_str).input_ids
        cont_ids = whole[len(ctx_ids):] if c_str else tokenizer(k_str).input_ids
        merged += whole[: len(ctx_ids)] != ctx_ids
        if not cont_ids:
            raise ValueError(f"continuation {cont!r} encodes to no tokens after the context")
        conts.append(tuple(cont_ids))
    return Group(tuple(ctx_ids), tuple(conts), merged)


def _prefix_token(tokenizer) -> int:
    """Token that stands for an empty context (lm-eval: BOS, else EOS)."""
    tid = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    if tid is None:
        raise ValueError("empty context and the tokenizer has neither BOS nor EOS")
    return int(tid)


def auto_batch_tokens(lm: LoadedModel) -> int:
    """Tokens per forward pass: enough to fill the matmuls, small enough for memory."""
    if lm.device.startswith("cuda"):
        return 65536
    return 8192


def iter_logprobs(
    lm: LoadedModel,
    groups: Sequence[Group],
    *,
    batch_tokens: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> Iterator[tuple[list[int], list[list[npt.NDArray[np.float64]]]]]:
    """Score groups in length-sorted batches, yielding each batch as soon as it is done.

    Yields
    ------
    (indices, logprobs): indices into `groups`; for each, one float64 array per
    continuation with the log-prob of each of its tokens (natural log).
    """
    budget = batch_tokens or auto_batch_tokens(lm)
    order = sorted(range(len(groups)), key=lambda i: (-len(groups[i].context), -groups[i].n_tokens))
    batch: list[int] = []
    for i in order:
        if batch and _batch_cost([groups[j] for j in batch + [i]]) > budget:
            yield batch, _score_batch(lm, [groups[j] for j in batch])
            if progress:
                progress(len(batch))
            batch = []
        batch.append(i)
    if batch:
        yield batch, _score_batch(lm, [groups[j] for j in batch])
        if progress:
            progress(len(batch))


def score_groups(lm: LoadedModel, groups: Sequence[Group], **kw) -> list[list[npt.NDArray[np.float64]]]:
    """All groups' per-token log-probs, in the order given (see `iter_logprobs`)."""
    out: list[list[npt.NDArray[np.float64]]] = [[] for _ in groups]
    for idx, res in iter_logprobs(lm, groups, **kw):
        for i, r in zip(idx, res):
            out[i] = r
    return out


def _batch_cost(batch: list[Group]) -> int:
    """Padded tokens of a batch: contexts padded to the longest, continuations likewise."""
    lc = max(len(g.context) for g in batch)
    n = sum(len(g.continuations) for g in batch)
    lm_ = max(len(c) for g in batch for c in g.continuations)
    return len(batch) * lc + n * (lm_ + lc // 4)  # lc//4: attention over the cached context


def head_log_probs(lm: LoadedModel, hidden, vocab: int | None = None):
    """Float32 log-softmax of the LM head (with Gemma-style soft-capping) for rows of hidden states,
    over the first `vocab` entries if given (two models sharing a tokenizer may pad differently)."""
    import torch

    logits = lm.model.get_output_embeddings()(hidden).float()
    if vocab is not None:
        logits = logits[:, :vocab]
    cap = getattr(lm.model.config, "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return torch.log_softmax(logits, dim=-1)


def _head_logprobs(lm: LoadedModel, hidden, targets):
    """log p(target) for each row of hidden states, LM head applied in chunks of rows."""
    import torch

    out = torch.empty(hidden.shape[0], dtype=torch.float64)
    for s in range(0, hidden.shape[0], HEAD_CHUNK_ROWS):
        lp = head_log_probs(lm, hidden[s : s + HEAD_CHUNK_ROWS])
        t = targets[s : s + HEAD_CHUNK_ROWS].to(lp.device)
        out[s : s + HEAD_CHUNK_ROWS] = lp.gather(1, t[:, None])[:, 0].double().cpu()
    return out


def _score_batch(lm: LoadedModel, batch: list[Group]) -> list[list[npt.NDArray[np.float64]]]:
    import torch

    dev = lm.device
    body = lm.model.base_model
    B = len(batch)
    lc = torch.tensor([len(g.context) for g in batch])
    Lc = int(lc.max())
    ctx = torch.zeros((B, Lc), dtype=torch.long)
    ctx_mask = torch.zeros((B, Lc), dtype=torch.long)
    for b, g in enumerate(batch):
        ctx[b, : lc[b]] = torch.tensor(g.context)
        ctx_mask[b, : lc[b]] = 1
    pos = torch.arange(Lc)[None, :].expand(B, Lc)
    # rows of the continuation pass: one per (group, continuation)
    owner = [b for b, g in enumerate(batch) for _ in g.continuations]
    conts = [c for g in batch for c in g.continuations]
    N = len(conts)

    with torch.inference_mode():
        ctx_cache = _new_cache(lm)
        h = body(input_ids=ctx.to(dev), attention_mask=ctx_mask.to(dev), position_ids=pos.to(dev),
                 cache=ctx_cache, use_cache=True).last_hidden_state  # [B, Lc, H]
        h_last = h[torch.arange(B), lc - 1]  # [B, H]: predicts each CONT_1
        # first tokens: predicted from the context's last hidden state
        rows = [h_last[torch.tensor(owner)]]
        targets = [torch.tensor([c[0] for c in conts])]
        order: list[int] = []  # continuation rows in the order their hidden states were appended
        for sub in _length_buckets([len(c) - 1 for c in conts]):
            rows.append(_continuation_pass(lm, ctx_cache, ctx_mask, lc, [owner[n] for n in sub],
                                           [conts[n] for n in sub]))
            targets.append(torch.tensor([t for n in sub for t in conts[n][1:]]))
            order.extend(sub)
        lp = _head_logprobs(lm, torch.cat(rows), torch.cat(targets)).numpy()

    # unpack: the first N values are CONT_1 of each row; then each sub-pass, row-major
    per_cont: list[npt.NDArray[np.float64]] = [lp[n : n + 1].copy() for n in range(N)]  # one-token endings
    o = N
    for n in order:
        k = len(conts[n]) - 1
        per_cont[n] = np.concatenate([[lp[n]], lp[o : o + k]])
        o += k
    out: list[list[npt.NDArray[np.float64]]] = []
    i = 0
    for g in batch:
        out.append(per_cont[i : i + len(g.continuations)])
        i += len(g.continuations)
    return out


def _length_buckets(lengths: list[int], *, max_waste: float = 0.2) -> list[list[int]]:
    """Rows with length > 0, sorted by length and cut so that padding stays under `max_waste`."""
    order = sorted((n for n, L in enumerate(lengths) if L > 0), key=lambda n: -lengths[n])
    buckets: list[list[int]] = []
    cur: list[int] = []
    real = 0
    for n in order:
        if cur and (len(cur) + 1) * lengths[cur[0]] > (1 + max_waste) * (real + lengths[n]):
            buckets.append(cur)
            cur, real = [], 0
        cur.append(n)
        real += lengths[n]
    if cur:
        buckets.append(cur)
    return buckets


def _new_cache(lm: LoadedModel):
    from transformers import DynamicCache

    return DynamicCache(config=lm.model.config)


def _continuation_pass(lm: LoadedModel, ctx_cache, ctx_mask, lc, owner: list[int], conts: list[tuple[int, ...]]):
    """Run continuation tokens (all but the last) on top of their contexts' cached keys/values.

    Returns the hidden states that predict CONT_2.., row-major over (row, position).
    """
    import torch

    dev = lm.device
    own = torch.tensor(owner)
    cache = _new_cache(lm)
    for li, layer in enumerate(ctx_cache.layers):  # this sub-pass's rows of the context cache
        idx = own.to(layer.keys.device)  # with a device map, layers sit on different devices
        cache.update(layer.keys[idx], layer.values[idx], li)
    N, Lm = len(conts), max(len(c) for c in conts) - 1
    inp = torch.zeros((N, Lm), dtype=torch.long)
    cmask = torch.zeros((N, Lm), dtype=torch.long)
    for n, c in enumerate(conts):
        inp[n, : len(c) - 1] = torch.tensor(c[:-1])
        cmask[n, : len(c) - 1] = 1
    mask = torch.cat([ctx_mask[own], cmask], dim=1)
    cpos = lc[own][:, None] + torch.arange(Lm)[None, :]
    hc = lm.model.base_model(input_ids=inp.to(dev), attention_mask=mask.to(dev), position_ids=cpos.to(dev),
                             cache=cache, use_cache=True).last_hidden_state  # [N, Lm, H]
    return hc[cmask.bool().to(dev)]


def reference_logprobs(lm: LoadedModel, context: Sequence[int], continuation: Sequence[int]) -> npt.NDArray[np.float64]:
    """Plain, unbatched lm-eval-style computation: one forward of ctx+cont, no cache reuse.

    For tests and parity checks: logits of the last len(cont) input positions, float32 softmax.
    """
    import torch

    ids = list(context) + list(continuation)
    inp = torch.tensor([ids[:-1]], device=lm.device)
    with torch.inference_mode():
        logits = lm.model(input_ids=inp).logits[0, -len(continuation):].float()
        lp = torch.log_softmax(logits, dim=-1)
        t = torch.tensor(list(continuation), device=lp.device)
        return lp.gather(1, t[:, None])[:, 0].double().cpu().numpy()
