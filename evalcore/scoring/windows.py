"""Sliding-window token NLLs (perplexity) and token-level divergences between two models.

Windows over one encoded text of L tokens (max_length M, stride S), as in the Hugging Face
perplexity guide: every token is scored exactly once, with as much left context as the
window allows.

    ids:       t0 t1 t2 t3 t4 t5 t6 t7 t8 t9            (M = 6, S = 3)
    window 1: [t0 t1 t2 t3 t4 t5]         scores t1..t5   (t0 has no context: it is never scored;
    window 2:          [t3 t4 t5 t6 t7 t8] scores t6..t8   callers put the model's prefix token,
    window 3:             [t4 t5 t6 t7 t8 t9] scores t9    BOS or end-of-text, there, so every
                                                            token of the text is scored)

Each window ends S tokens after the previous one and reaches back M tokens; it scores the
tokens after the previous window's end. A window needs at least one token of context, so
S is capped at M - 1 (S = M would leave each window's first token unpredicted). The hidden
state at position j predicts token j+1, so only those hidden states go through the LM head.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from evalcore.errors import InputError
from evalcore.models import LoadedModel
from evalcore.scoring.batch import pad_batch

if TYPE_CHECKING:
    from torch import Tensor

log = logging.getLogger(__name__)

POSITION_CHUNK = 256  # positions per chunk when comparing full distributions (262k vocabularies)


@dataclass(frozen=True)
class Window:
    """One forward pass over ids[start:end], scoring its last `n_scored` tokens."""

    start: int
    end: int
    n_scored: int


def windows(n_tokens: int, *, max_length: int, stride: int) -> list[Window]:
    """Sliding windows that score tokens 1..n_tokens-1 exactly once (module docstring)."""
    if max_length < 2:
        raise InputError(f"max_length={max_length}: need at least 2 tokens per window")
    if not 1 <= stride <= max_length:
        raise InputError(f"stride={stride}: need 1 <= stride <= max_length ({max_length})")
    step = min(stride, max_length - 1)
    out: list[Window] = []
    prev_end = 1  # token 0 is context only
    end = min(max_length, n_tokens)
    while prev_end < n_tokens:
        start = max(0, end - max_length)
        out.append(Window(start, end, end - prev_end))
        prev_end = end
        end = min(end + step, n_tokens)
    return out


def token_nlls(
    lm: LoadedModel,
    texts_ids: Sequence[Sequence[int]],
    *,
    max_length: int = 1024,
    stride: int = 512,
    batch_tokens: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> list[npt.NDArray[np.float64]]:
    """Per-token negative log-likelihood (nats) of tokens 1..L-1 of each text.

    Windows of all texts are sorted by length and batched under a token budget.
    """
    import torch

    from evalcore.scoring.loglik import _head_logprobs, auto_batch_tokens

    max_length = min(max_length, context_limit(lm))
    stride = min(stride, max_length)
    jobs = [(t, w) for t, ids in enumerate(texts_ids) for w in windows(len(ids), max_length=max_length, stride=stride)]
    jobs.sort(key=lambda j: -(j[1].end - j[1].start))
    budget = batch_tokens or auto_batch_tokens(lm)
    per_text: list[dict[int, npt.NDArray[np.float64]]] = [{} for _ in texts_ids]
    body = lm.model.base_model
    i = 0
    while i < len(jobs):
        width = jobs[i][1].end - jobs[i][1].start
        n = 1  # windows are sorted by length: extend while padding stays under 20%
        while (i + n < len(jobs) and (n + 1) * width <= budget
               and jobs[i + n][1].end - jobs[i + n][1].start >= 0.8 * width):
            n += 1
        batch = jobs[i : i + n]
        i += len(batch)
        inp, mask = pad_batch([texts_ids[t][w.start : w.end] for t, w in batch])
        with torch.inference_mode():
            h = body(input_ids=inp.to(lm.device), attention_mask=mask.to(lm.device)).last_hidden_state
            rows, targets = [], []
            for b, (t, w) in enumerate(batch):
                L = w.end - w.start
                rows.append(h[b, L - w.n_scored - 1 : L - 1])  # these positions predict the scored tokens
                targets.append(inp[b, L - w.n_scored : L])
            lp = _head_logprobs(lm, torch.cat(rows), torch.cat(targets)).numpy()
        o = 0
        for t, w in batch:
            per_text[t][w.start] = -lp[o : o + w.n_scored]
            o += w.n_scored
        if progress:
            progress(len(batch))
    return [np.concatenate([d[k] for k in sorted(d)]) if d else np.empty(0) for d in per_text]


def context_limit(lm: LoadedModel) -> int:
    """The most positions the model takes (its config's max_position_embeddings; 2048 if unset)."""
    cfg = lm.model.config
    return int(getattr(cfg, "max_position_embeddings", None) or getattr(cfg, "n_positions", None) or 2048)


@dataclass(frozen=True)
class TokenDivergences:
    """Per-position comparison of two models' next-token distributions on the same tokens."""

    kl_pq: npt.NDArray[np.float64]  # [T] KL(P_a || P_b), nats
    kl_qp: npt.NDArray[np.float64]  # [T] KL(P_b || P_a)
    js: npt.NDArray[np.float64]  # [T] Jensen-Shannon
    top1_agree: npt.NDArray[np.bool_]  # [T] same argmax
    topk_overlap: npt.NDArray[np.float64]  # [T] |top-k(a) ∩ top-k(b)| / k
    k: int


def token_divergences(lm_a: LoadedModel, lm_b: LoadedModel, ids: Sequence[int], *, k: int = 10,
                      max_length: int = 1024) -> TokenDivergences:
    """KL both ways, JS and top-k agreement at each position of one text (positions 0..T-2
    predict tokens 1..T-1). The LM heads run in chunks of positions, so memory stays bounded
    for 262k-token vocabularies. The caller checks that the tokenizers are the same.
    """
    import torch

    from evalcore.scoring.loglik import head_log_probs

    ids = list(ids)[: min(max_length, context_limit(lm_a), context_limit(lm_b))]
    if len(ids) < 2:
        raise InputError("text is shorter than two tokens; give a longer text")
    out: dict[str, list[Tensor]] = {"kl_pq": [], "kl_qp": [], "js": [], "top1": [], "topk": []}
    with torch.inference_mode():
        hs = []
        for lm in (lm_a, lm_b):
            x = torch.tensor([ids[:-1]], device=lm.device)
            hs.append(lm.model.base_model(input_ids=x).last_hidden_state[0])
        V = min(_vocab(lm_a), _vocab(lm_b))
        for s in range(0, hs[0].shape[0], POSITION_CHUNK):
            la = head_log_probs(lm_a, hs[0][s : s + POSITION_CHUNK], V)
            lb = head_log_probs(lm_b, hs[1][s : s + POSITION_CHUNK], V).to(la.device)
            pa, pb = la.exp(), lb.exp()
            kl_ab = (pa * (la - lb)).sum(-1).clamp_min(0)
            kl_ba = (pb * (lb - la)).sum(-1).clamp_min(0)
            lm_ = torch.logaddexp(la, lb) - np.log(2.0)
            js = 0.5 * (pa * (la - lm_)).sum(-1) + 0.5 * (pb * (lb - lm_)).sum(-1)
            ta, tb = la.topk(k, dim=-1).indices, lb.topk(k, dim=-1).indices
            overlap = (ta[:, :, None] == tb[:, None, :]).any(-1).float().mean(-1)
            out["kl_pq"].append(kl_ab.double().cpu())
            out["kl_qp"].append(kl_ba.double().cpu())
            out["js"].append(js.clamp_min(0).double().cpu())
            out["top1"].append((ta[:, 0] == tb[:, 0]).cpu())
            out["topk"].append(overlap.double().cpu())
    cat = {key: torch.cat(v).numpy() for key, v in out.items()}
    return TokenDivergences(cat["kl_pq"], cat["kl_qp"], cat["js"], cat["top1"], cat["topk"], k)


def _vocab(lm: LoadedModel) -> int:
    return int(lm.model.get_output_embeddings().weight.shape[0])
