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

Because lm-eval always feeds `ctx + cont`, the context's computation is shared by every
continuation of an item, even when `whole` does not start with `ctx` (a BPE merge across
the boundary); `encode_pair` reports those cases (`merged`) for the record.

Shared-context batching (`iter_logprobs`): each group becomes one packed row, its endings
(each minus its last token, which is only predicted) laid out as a token trie after the context:

    tokens:    CTX CTX CTX | He  is  sits | ran  | She  was        endings: " He is ..", " He sits ..",
    positions: 0   1   2   | 3   4   4    | 3    | 3    4                  " ran ..", " She was .."
    subtree:   [0, 9)      | [3,6) [4,5) [5,6) | [6,7) | [7,9) [8,9)
    attends:   its ancestors in the trie and itself: j <= i < end(j)

so the context is computed once, a prefix the endings share (" He") once, and the whole
group in one forward pass with a custom 4-D attention mask (no KV-cache copies, one large
matmul per layer). Trie nodes are numbered depth first, so a node's subtree is the interval
[j, end(j)) and "j is an ancestor of i" is `j <= i < end(j)`. Rows are sorted by length,
descending, and packed into batches under a token budget (padding stays small; on evalcore's
own forward it costs attention only: the projections, MLPs and norms run on the real tokens
alone, which made bf16 SmolLM2 ~15% faster on 200 items). The LM head
runs once per distinct hidden state that predicts an ending's token (the context's last
position predicts every ending's first token; " He" predicts "is" and "sits"), each target
read from its row's log-softmax. For models with sliding-window layers (Gemma 3) a second
mask adds the window, from the same positions.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from evalcore.models import LoadedModel
from evalcore.scoring.batch import pad_batch
from evalcore.tokenizer import prefix_token

if TYPE_CHECKING:
    from torch import Tensor

log = logging.getLogger(__name__)

HEAD_CHUNK_ROWS = 128  # rows of hidden states per LM-head matmul: bounds memory for 262k vocabularies
HEAD_CHUNK_LOGITS = 1 << 24  # ... or more rows, up to this many logits a chunk, for smaller vocabularies


@dataclass(frozen=True)
class Group:
    """One context and the continuations scored after it."""

    context: tuple[int, ...]  # token ids of the context (with BOS where the tokenizer adds one)
    continuations: tuple[tuple[int, ...], ...]  # token ids of each continuation (>= 1 token each)
    merged: int = 0  # continuations whose whole encoding did not start with `context`

    @property
    def n_tokens(self) -> int:
        """Tokens in the context and all continuations together."""
        return len(self.context) + sum(len(c) for c in self.continuations)


def encode_pair(tokenizer: Any, context: str, continuations: Sequence[str]) -> Group:
    """Tokenize a context and its continuations with lm-eval's boundary (module docstring)."""
    ctx_ids: list[int] = []
    conts: list[tuple[int, ...]] = []
    merged = 0
    for cont in continuations:
        # lm-eval moves trailing spaces of the context onto the continuation
        n_sp = len(context) - len(context.rstrip())
        c_str, k_str = (context[:-n_sp], context[-n_sp:] + cont) if n_sp else (context, cont)
        ctx_ids = tokenizer(c_str).input_ids if c_str else [prefix_token(tokenizer)]
        whole = tokenizer(c_str + k_str).input_ids
        cont_ids = whole[len(ctx_ids):] if c_str else tokenizer(k_str).input_ids
        merged += whole[: len(ctx_ids)] != ctx_ids
        if not cont_ids:
            raise ValueError(f"continuation {cont!r} encodes to no tokens after the context")
        conts.append(tuple(cont_ids))
    return Group(tuple(ctx_ids), tuple(conts), merged)


def auto_batch_tokens(lm: LoadedModel, *, packed: bool = False) -> int:
    """Tokens per forward pass: enough to fill the matmuls, small enough for memory.

    Packed HellaSwag rows on CPU use a smaller budget: measured on 2 cores, 2048 tokens a pass
    scores 20-40% more items/s than 8192 (activations stay in cache; the T x T masks stay small).
    """
    if lm.device.startswith("cuda"):
        return 65536
    return 2048 if packed else 8192


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
    budget = batch_tokens or auto_batch_tokens(lm, packed=True)
    rows = [_layout(g) for g in groups]
    batches: list[list[int]] = []
    for i in sorted(range(len(groups)), key=lambda i: -len(rows[i].tokens)):
        # rows come longest first, so a batch's padded size is its count times its first row
        if batches and (len(batches[-1]) + 1) * len(rows[batches[-1][0]].tokens) <= budget:
            batches[-1].append(i)
        else:
            batches.append([i])
    for batch in batches:
        yield batch, _score_batch(lm, [rows[j] for j in batch])
        if progress:
            progress(len(batch))


def score_groups(lm: LoadedModel, groups: Sequence[Group], **kw: Any) -> list[list[npt.NDArray[np.float64]]]:
    """All groups' per-token log-probs, in the order given (see `iter_logprobs`)."""
    out: list[list[npt.NDArray[np.float64]]] = [[] for _ in groups]
    for idx, res in iter_logprobs(lm, groups, **kw):
        for i, r in zip(idx, res):
            out[i] = r
    return out


@dataclass(frozen=True)
class _Row:
    """A group's packed row (module docstring): the context, then its endings' token trie."""

    tokens: list[int]  # input ids: the context, then trie nodes depth first
    pos: list[int]  # position ids: index in the context, or context length + depth in the trie
    end: list[int]  # subtree of each token: it is attended to by rows [index, end)
    pred: list[list[int]]  # per continuation, the row index whose hidden state predicts each of its tokens
    targets: tuple[tuple[int, ...], ...]  # the continuations' tokens, which `pred` predict


def _layout(g: Group) -> _Row:
    lc = len(g.context)
    kids: list[dict[int, int]] = [{}]  # trie nodes by creation: token -> child node; node 0 is the context
    token, depth = [-1], [0]
    for c in g.continuations:
        n = 0
        for t in c[:-1]:
            if t not in kids[n]:
                kids[n][t] = len(kids)
                kids.append({})
                token.append(t)
                depth.append(depth[n] + 1)
            n = kids[n][t]
    order: list[int] = []  # nodes depth first (iterative: a continuation may be thousands of tokens)
    row = [lc - 1] * len(kids)  # node -> its row index
    stack = list(reversed(kids[0].values()))
    while stack:
        n = stack.pop()
        row[n] = lc + len(order)
        order.append(n)
        stack.extend(reversed(kids[n].values()))
    size = [1] * len(kids)  # nodes in each subtree
    for n in reversed(order):
        size[n] += sum(size[k] for k in kids[n].values())
    pred = []
    for c in g.continuations:
        n, p = 0, [lc - 1]
        for t in c[:-1]:
            n = kids[n][t]
            p.append(row[n])
        pred.append(p)
    return _Row(tokens=[*g.context, *(token[n] for n in order)],
                pos=[*range(lc), *(lc - 1 + depth[n] for n in order)],
                end=[lc + len(order)] * lc + [row[n] + size[n] for n in order],
                pred=pred, targets=g.continuations)


def head_log_probs(lm: LoadedModel, hidden: Tensor, vocab: int | None = None) -> Tensor:
    """Float32 log-softmax of the LM head (with Gemma-style soft-capping) for rows of hidden states,
    over the first `vocab` entries if given (two models sharing a tokenizer may pad differently)."""
    import torch

    from evalcore.native import softcap_logits

    logits = lm.model.get_output_embeddings()(hidden).float()
    if vocab is not None:
        logits = logits[:, :vocab]
    return torch.log_softmax(softcap_logits(logits, lm.model.config), dim=-1)


def _head_logprobs(lm: LoadedModel, hidden: Tensor, targets: Tensor, rows: Tensor | None = None) -> Tensor:
    """log p(targets[i] | hidden[rows[i]]) (rows default to 0, 1, ...: one target a row):
    float32 log-softmax, as lm-evaluation-harness computes it, the LM head applied in chunks of
    rows into buffers reused across chunks.

    (torch.logsumexp would be more accurate over a 262k vocabulary, ~1e-6 against ~4e-5 per
    token, but would move every log-likelihood off lm-eval's by that much, systematically.)"""
    import torch

    from evalcore.native import softcap_logits

    head = lm.model.get_output_embeddings()
    w = head.weight
    hidden = hidden.to(w.device)
    rows = torch.arange(len(targets)) if rows is None else rows
    order = torch.argsort(rows, stable=True)  # targets by head row: each chunk reads a contiguous run
    rows, targets = rows[order], targets[order].to(w.device)
    n, V = hidden.shape[0], w.shape[0]
    got = torch.empty(len(targets), dtype=torch.float64)
    chunk = min(max(HEAD_CHUNK_ROWS, HEAD_CHUNK_LOGITS // V), n)
    raw = torch.empty((chunk, V), dtype=w.dtype, device=w.device)
    f32 = raw if w.dtype == torch.float32 else torch.empty((chunk, V), dtype=torch.float32, device=w.device)
    lsm = torch.empty((chunk, V), dtype=torch.float32, device=w.device)
    bounds = torch.searchsorted(rows, torch.arange(0, n + chunk, chunk)).tolist()  # targets of each chunk
    rows = rows.to(w.device)
    for c, s in enumerate(range(0, n, chunk)):
        k = min(chunk, n - s)
        torch.matmul(hidden[s : s + k], w.T, out=raw[:k])
        if f32 is not raw:
            f32[:k].copy_(raw[:k])
        lg = f32[:k]
        if head.bias is not None:
            lg += head.bias.float()
        torch.log_softmax(softcap_logits(lg, lm.model.config, inplace=True), -1, out=lsm[:k])
        i, j = bounds[c], bounds[c + 1]
        got[i:j] = lsm[rows[i:j] - s, targets[i:j]].double().cpu()
    out = torch.empty_like(got)
    out[order] = got
    return out


def _score_batch(lm: LoadedModel, batch: list[_Row]) -> list[list[npt.NDArray[np.float64]]]:
    """One forward pass over packed rows (module docstring); per-token log-probs of each ending."""
    import torch

    ids, real = pad_batch([r.tokens for r in batch])
    pos, _ = pad_batch([r.pos for r in batch])
    end, _ = pad_batch([r.end for r in batch])
    T = ids.shape[1]
    end = torch.where(real.bool(), end, torch.arange(1, T + 1))  # padding: a subtree of itself alone
    heads: dict[int, int] = {}  # flat index b * T + t of each predicting hidden state -> head row
    head_row: list[int] = []  # per target, its head row
    targets: list[int] = []
    for b, r in enumerate(batch):
        for p, c in zip(r.pred, r.targets):
            head_row += [heads.setdefault(b * T + t, len(heads)) for t in p]
            targets += c
    dev = lm.device
    heads_t = torch.tensor(list(heads))  # flat indices into [B, T]
    kw: dict[str, Any] = {}
    if lm.unpadded:  # padding then costs attention only (`keep` in evalcore.native)
        n = real.sum(1)
        kw["keep"] = real.reshape(-1).nonzero()[:, 0].to(dev)
        heads_t = (torch.cumsum(n, 0) - n)[heads_t // T] + heads_t % T  # ... into the kept tokens
    with torch.inference_mode(), lm.forward_settings():
        h = lm.model.base_model(input_ids=ids.to(dev), attention_mask=_packed_masks(lm, pos, end),
                                position_ids=pos.to(dev), use_cache=False, **kw).last_hidden_state  # [B, T, H] or [1, N, H]
        hs = h.reshape(-1, h.shape[-1])[heads_t.to(h.device)]
        lp = _head_logprobs(lm, hs, torch.tensor(targets), torch.tensor(head_row)).numpy()
    out: list[list[npt.NDArray[np.float64]]] = []
    o = 0
    for r in batch:
        res = []
        for p in r.pred:
            res.append(lp[o : o + len(p)].copy())
            o += len(p)
        out.append(res)
    return out


def _packed_masks(lm: LoadedModel, pos: Tensor, end: Tensor) -> Tensor | dict[str, Tensor]:
    """The bool attention mask [B, 1, T, T] of packed rows on the model's device (token i attends
    to j when j <= i < end(j)); for models with sliding-window layers, per layer type, the
    sliding one also limited to the window by position."""
    import torch

    T = pos.shape[1]
    ar = torch.arange(T)
    mask = (ar[None, None, :] <= ar[None, :, None]) & (ar[None, :, None] < end[:, None, :])  # [B, T, T]
    mask = mask[:, None]  # [B, 1, T, T], True = attend
    window = getattr(lm.model.config, "sliding_window", None)
    layer_types = set(getattr(lm.model.config, "layer_types", None) or ())
    attn = mask.to(lm.device)
    if "sliding_attention" in layer_types and window:
        near = (pos[:, :, None] - pos[:, None, :]) < window
        return {"full_attention": attn, "sliding_attention": (mask & near[:, None]).to(lm.device)}
    return attn


def reference_logprobs(lm: LoadedModel, context: Sequence[int], continuation: Sequence[int]) -> npt.NDArray[np.float64]:
    """Plain, unbatched lm-eval-style computation: one forward of ctx+cont, no cache reuse.

    For tests and parity checks: logits of the last len(cont) input positions, float32 softmax.
    """
    import torch

    ids = list(context) + list(continuation)
    inp = torch.tensor([ids[:-1]], device=lm.device)
    with torch.inference_mode():
        logits = lm.model(input_ids=inp, logits_to_keep=len(continuation)).logits[0].float()
        lp = torch.log_softmax(logits, dim=-1)
        t = torch.tensor(list(continuation), device=lp.device)
        return lp.gather(1, t[:, None])[:, 0].double().cpu().numpy()
