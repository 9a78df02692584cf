"""Perplexity of texts for model M, and token-level KL between two models on a text."""
from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from evalcore.errors import require_finite
from evalcore.metrics.perplexity import Perplexity
from evalcore.models import LoadedModel
from evalcore.runs._memo import Batches, Progress, memo_map
from evalcore.scoring.sequence import encode_scored
from evalcore.tokenizer import prefix_token
from evalcore.store import Store, record_key

log = logging.getLogger(__name__)

# 2: each text starts from the model's prefix token (BOS, else end-of-text, as lm-eval's rolling
# log-likelihood does), so every text token is scored; 1 left a BOS-less model's first token unscored
PERPLEXITY_VERSION = 2


# ----------------------------------------------------------------------------- perplexity

@dataclass(frozen=True)
class TextNLL:
    """One text's tokens: the model's prefix token, then the text's, each of those with its NLL."""

    ids: list[int]  # [prefix token (BOS, else end-of-text)] + the text's canonical tokens
    nll: list[float]  # NLL (nats) of ids[1], ids[2], ...: every token of the text
    n_bytes: int  # UTF-8 bytes of the text


@dataclass(frozen=True)
class PerplexityResult:
    """Perplexity of a corpus with per-token surprisal kept for heatmaps."""

    model: dict[str, Any]
    metrics: Perplexity
    texts: list[TextNLL]
    settings: dict[str, Any]  # max_length, stride, what was scored
    seconds: float
    cached_texts: int

    def to_dict(self, *, per_token: bool = False) -> dict[str, Any]:
        """The result as a JSON-ready dict (each text's token ids and NLLs with per_token)."""
        d = {"model": self.model, **self.metrics.to_dict(), "settings": self.settings, "n_texts": len(self.texts),
             "timing": {"seconds": round(self.seconds, 3), "cached_texts": self.cached_texts,
                        "tokens_per_s": round(self.metrics.tokens / self.seconds, 1) if self.seconds else None}}
        if per_token:
            d["texts"] = [asdict(t) for t in self.texts]
        return d


def run_perplexity(lm: LoadedModel, texts: Sequence[str], *, max_length: int = 1024, stride: int = 512,
                   store: Store | None = None, batch_tokens: int | None = None,
                   progress: Progress | None = None) -> PerplexityResult:
    """Sliding-window perplexity of texts (pooled over tokens), per-text results in the store."""
    import hashlib

    from evalcore import scoring
    from evalcore.data import check_text
    from evalcore.errors import InputError
    from evalcore.metrics.perplexity import perplexity
    from evalcore.scoring.loglik import auto_batch_tokens

    t0 = time.perf_counter()
    store = store or Store()
    if not texts:
        raise InputError("no texts given; give at least one text")
    texts = [check_text(t, what=f"text {i}") for i, t in enumerate(texts)]
    from evalcore.scoring.windows import context_limit

    if max_length < 2 or not 1 <= stride <= max_length:
        raise InputError(f"max_length={max_length}, stride={stride}: need 2 <= max_length and 1 <= stride <= max_length")
    max_length = min(max_length, context_limit(lm))  # the windows the model can take, as recorded and keyed
    stride = min(stride, max_length)
    settings: dict[str, Any] = {"max_length": max_length, "stride": stride}
    keys = [record_key(op="perplexity", model=lm.identity(), text=hashlib.sha256(t.encode()).hexdigest(),
                       v=PERPLEXITY_VERSION, **settings) for t in texts]

    def compute(todo: list[int]) -> Batches:
        ids = [encode_scored(lm.tokenizer, texts[i]) for i in todo]
        short = [todo[j] for j, x in enumerate(ids) if len(x) < 2]
        if short:
            raise InputError(f"text {short[0]} encodes to no tokens; give a longer text")
        for chunk in _store_chunks([len(x) for x in ids], budget=batch_tokens or auto_batch_tokens(lm),
                                   max_length=max_length):
            nlls = scoring.token_nlls(lm, [ids[j] for j in chunk], max_length=max_length, stride=stride,
                                      batch_tokens=batch_tokens)
            for j, nll in zip(chunk, nlls):
                require_finite(nll, f"text {todo[j]}: a token's NLL")
            yield [todo[j] for j in chunk], [asdict(TextNLL(list(ids[j]), [float(x) for x in nll],
                                                            len(texts[todo[j]].encode("utf-8"))))
                                             for j, nll in zip(chunk, nlls)]

    values, cached = memo_map(store, "perplexity", keys, compute, progress=progress)
    ordered = [TextNLL(**v) for v in values]
    metrics = perplexity([np.array(t.nll) for t in ordered], sum(t.n_bytes for t in ordered))
    settings["scored"] = ("every token of each text, after the model's prefix token (BOS, else end-of-text: "
                          f"id {prefix_token(lm.tokenizer)})")
    return PerplexityResult(lm.describe(), metrics, ordered, settings,
                            time.perf_counter() - t0, cached)


def _store_chunks(lengths: Sequence[int], *, budget: int, max_length: int, most: int = 64) -> list[list[int]]:
    """Positions in `lengths` cut into chunks of about one forward batch, each stored when done.

    A run killed mid-way then loses at most the chunk in flight. Longest texts go first (as
    `token_nlls` batches windows), and ties keep their order, so a resumed run, whose texts
    are the ones left, cuts the same chunks as the run it resumes.
    """
    order = sorted(range(len(lengths)), key=lambda j: -min(lengths[j], max_length))
    chunks: list[list[int]] = []
    for j in order:
        c = chunks[-1] if chunks else None
        if c is None or len(c) >= most or (len(c) + 1) * min(lengths[c[0]], max_length) > budget:
            chunks.append([j])
        else:
            c.append(j)
    return chunks


# ----------------------------------------------------------------------------- token-level KL

LADDER_HINT = "e.g. smollm2-135m vs smollm2-360m, gpt2 vs gpt2-medium, pythia-70m vs pythia-410m"


def check_same_tokenizer(a: LoadedModel, b: LoadedModel) -> None:
    """Token-level KL compares distributions over the same vocabulary: require the same tokenizer."""
    from evalcore.errors import InputError

    if a.tokenizer.get_vocab() != b.tokenizer.get_vocab():
        raise InputError(
            f"token-level KL needs a shared tokenizer: {a.spec.name} uses {a.spec.tokenizer_family!r}, "
            f"{b.spec.name} uses {b.spec.tokenizer_family!r}; pick two sizes of one ladder ({LADDER_HINT}), "
            "or compare them on HellaSwag choices, which works across tokenizers")


@dataclass(frozen=True)
class TokenKLResult:
    """Token-level divergences between two models on one text."""

    model_p: dict[str, Any]
    model_q: dict[str, Any]
    tokens: list[str]  # the predicted tokens (ids[1:]) as strings, for heatmaps
    kl_pq: list[float]  # per position, nats
    kl_qp: list[float]
    js: list[float]
    top1_agree: list[bool]
    topk_overlap: list[float]
    k: int

    def summary(self) -> dict[str, Any]:
        """Means over positions (KL both ways, JS, top-1 and top-k agreement), KL quantiles and the count."""
        arr = {n: np.array(getattr(self, n), dtype=float) for n in ("kl_pq", "kl_qp", "js")}
        return {"kl_pq": float(arr["kl_pq"].mean()), "kl_qp": float(arr["kl_qp"].mean()), "js": float(arr["js"].mean()),
                "kl_pq_quantiles": {q: float(np.quantile(arr["kl_pq"], q / 100)) for q in (10, 50, 90)},
                "top1_agreement": float(np.mean(self.top1_agree)), f"top{self.k}_overlap": float(np.mean(self.topk_overlap)),
                "positions": len(self.kl_pq)}

    def to_dict(self) -> dict[str, Any]:
        """The models, the summary and the per-position values, as a JSON-ready dict."""
        return {"model_p": self.model_p, "model_q": self.model_q, **self.summary(), "per_position": asdict(self)}


def run_token_kl(lm_p: LoadedModel, lm_q: LoadedModel, text: str, *, k: int = 10, max_length: int = 1024) -> TokenKLResult:
    """KL(P||Q), KL(Q||P), JS and top-k agreement of two models' next-token distributions on a text."""
    from evalcore import scoring
    from evalcore.data import check_text

    check_same_tokenizer(lm_p, lm_q)
    vocab = len(lm_p.tokenizer.get_vocab())
    if not 1 <= k <= vocab:
        from evalcore.errors import InputError

        raise InputError(f"top-k {k}: need 1 <= k <= the vocabulary ({vocab:,} tokens); the usual is 10")
    ids = lm_p.tokenizer(check_text(text)).input_ids
    d = scoring.token_divergences(lm_p, lm_q, ids, k=k, max_length=max_length)
    for name in ("kl_pq", "kl_qp", "js"):
        require_finite(getattr(d, name), f"token-level {name}")
    toks = [lm_p.tokenizer.decode([t]) for t in ids[1 : len(d.kl_pq) + 1]]
    return TokenKLResult({**lm_p.identity()}, {**lm_q.identity()}, toks, d.kl_pq.tolist(), d.kl_qp.tolist(),
                         d.js.tolist(), d.top1_agree.tolist(), d.topk_overlap.tolist(), k)
