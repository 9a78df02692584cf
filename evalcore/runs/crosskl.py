"""How far model P is from model Q on text when their tokenizers differ: per-byte measures.

    gap   the cross-entropy gap per byte on a corpus: bpb(Q) - bpb(P), with a paired bootstrap
          interval; not a divergence (0 whenever both give the corpus the same probability)
    mc    Monte-Carlo KL(P‖Q) per byte on continuations sampled from P (and KL(Q‖P) from Q)
    bytes exact next-byte distributions over one short text, KL both ways and JS at each byte
          position (`evalcore.scoring.nextbyte`): the teaching view, a heatmap over the characters

gap and mc rest on `evalcore.scoring.sequence`: each model scores its own canonical tokenization of
the same UTF-8 bytes after its BOS (or end-of-text), so a model against itself gives exactly 0,
and the per-text log-probabilities go in the store (op "seqlogprob"), shared by both measures.
"""
from __future__ import annotations

import functools
import hashlib
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from evalcore.data import check_text
from evalcore.errors import require_finite
from evalcore.metrics.crosskl import MonteCarloKL, PerByte, gap_per_byte, mc_kl_per_byte
from evalcore.models import LoadedModel
from evalcore.runs._memo import Progress, memo_map
from evalcore.store import Store, record_key

if TYPE_CHECKING:
    from evalcore.metrics.bytekl import ByteDivergences
    from evalcore.scoring.nextbyte import NextByteDists

SEQ_VERSION = 1  # bump when the scored sequence (prefix token, windows) changes

GAP_NOTE = ("the cross-entropy gap per byte, bpb(Q) - bpb(P): not a divergence (it is 0 whenever both models give "
            "the texts the same total probability, even when they differ) and not comparable with token-level KL")


def text_logprobs(lm: LoadedModel, texts: Sequence[str], *, max_length: int = 1024, stride: int = 512,
                  store: Store | None = None, progress: Progress | None = None) -> list[dict[str, Any]]:
    """log P(text) for each text with every byte scored ({"logprob", "n_tokens", "n_bytes",
    "windowed"}), read from the store or computed and stored."""
    from evalcore.scoring.sequence import sequence_logprobs
    from evalcore.scoring.windows import context_limit

    store = store or Store()
    window = min(max_length, context_limit(lm))
    keys = [record_key(op="seqlogprob", model=lm.identity(), text=hashlib.sha256(t.encode()).hexdigest(),
                       max_length=window, stride=min(stride, window), v=SEQ_VERSION) for t in texts]

    def compute(todo: list[int]) -> Iterator[tuple[list[int], list[dict[str, Any]]]]:
        for start in range(0, len(todo), 16):  # stored in chunks: a killed run resumes from them
            chunk = todo[start : start + 16]
            scores = sequence_logprobs(lm, [texts[i] for i in chunk], max_length=window, stride=stride)
            for i, s in zip(chunk, scores):
                require_finite(s.logprob, f"text {i}: its log-probability under {lm.spec.name}")
            yield chunk, [{"logprob": s.logprob, "n_tokens": s.n_tokens, "n_bytes": s.n_bytes,
                           "windowed": s.windowed} for s in scores]

    values, _ = memo_map(store, "seqlogprob", keys, compute, progress=progress)
    return values


@dataclass(frozen=True)
class GapResult:
    """The cross-entropy gap per byte between two models on a corpus."""

    model_p: dict[str, Any]
    model_q: dict[str, Any]
    gap: PerByte  # bits per byte: bpb(Q) - bpb(P)
    bpb_p: float
    bpb_q: float
    n_texts: int
    n_bytes: int
    windowed: dict[str, int]  # texts longer than each model's window (scored with sliding windows)
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {"measure": "gap", "note": GAP_NOTE, "model_p": self.model_p, "model_q": self.model_q,
                "gap_bits_per_byte": self.gap.to_dict(), "bits_per_byte_p": self.bpb_p, "bits_per_byte_q": self.bpb_q,
                "n_texts": self.n_texts, "n_bytes": self.n_bytes, "windowed_texts": self.windowed,
                "timing": {"seconds": round(self.seconds, 3)}}


def run_gap(lm_p: LoadedModel, lm_q: LoadedModel, texts: Sequence[str], *, max_length: int = 1024, stride: int = 512,
            store: Store | None = None, progress: Progress | None = None) -> GapResult:
    """The cross-entropy gap per byte of two models (any tokenizers) on `texts`, with a paired
    bootstrap interval; each text's log-probability under each model is kept in the store."""
    import numpy as np

    t0 = time.perf_counter()
    texts = [check_text(t, what=f"text {i}") for i, t in enumerate(texts)]
    total = 2 * len(texts)

    def half(offset: int) -> Progress | None:
        return None if progress is None else (lambda done, _n: progress(offset + done, total))

    a = text_logprobs(lm_p, texts, max_length=max_length, stride=stride, store=store, progress=half(0))
    b = text_logprobs(lm_q, texts, max_length=max_length, stride=stride, store=store, progress=half(len(texts)))
    lp_p, lp_q = np.array([v["logprob"] for v in a]), np.array([v["logprob"] for v in b])
    n_bytes = np.array([v["n_bytes"] for v in a])
    ln2_bytes = float(n_bytes.sum() * np.log(2))
    return GapResult(lm_p.identity(), lm_q.identity(), gap_per_byte(lp_p, lp_q, n_bytes),
                     float(-lp_p.sum() / ln2_bytes), float(-lp_q.sum() / ln2_bytes), len(texts), int(n_bytes.sum()),
                     {"p": sum(v["windowed"] for v in a), "q": sum(v["windowed"] for v in b)},
                     time.perf_counter() - t0)


# ----------------------------------------------------------------------------- Monte-Carlo KL

MC_NOTE = ("Monte-Carlo KL per byte on continuations sampled from the first model (temperature 1, no top-p or "
           "top-k), each model scoring its own canonical tokenization of the same bytes: k1 is unbiased, k3 is "
           "never negative; not comparable with token-level KL, which compares next-token distributions")


def continuations(lm: LoadedModel, prompts: Sequence[str], *, max_new_tokens: int = 48, seed: int = 0,
                  store: Store | None = None, progress: Progress | None = None) -> list[dict[str, Any]]:
    """One continuation of each prompt sampled from `lm` by plain ancestral sampling ({"text",
    "n_tokens", "canonical"}), cut at end of text or before the first token whose text holds a
    newline; seeded per prompt, read from the store or sampled and stored.

    "canonical" is False when the sampled tokens are not the model's own tokenization of the
    text (re-encoding prompt + text gives other tokens): such a sample's probability is not
    the one its scoring computes, and the estimators leave it out.
    """
    from evalcore.scoring.generate import Decoding, sample_ids
    from evalcore.scoring.sequence import encode_scored

    store = store or Store()
    tok = lm.tokenizer
    dec = Decoding(temperature=1.0, top_p=1.0, top_k=0, max_new_tokens=max_new_tokens, seed=seed)
    hashes = [hashlib.sha256(p.encode()).hexdigest() for p in prompts]
    keys = [record_key(op="mcsample", model=lm.identity(), prompt=h, decoding=dec.to_dict(), v=SEQ_VERSION)
            for h in hashes]
    stops = _newline_tokens(tok)

    def compute(todo: list[int]) -> Iterator[tuple[list[int], list[dict[str, Any]]]]:
        for start in range(0, len(todo), 16):
            chunk = todo[start : start + 16]
            ids = [encode_scored(tok, prompts[i]) for i in chunk]
            drawn = sample_ids(lm, ids, [hashes[i] for i in chunk], [max_new_tokens] * len(chunk), dec)
            out = []
            for i, x, toks in zip(chunk, ids, drawn):
                cut = next((j for j, t in enumerate(toks) if t in stops), len(toks))
                kept = list(toks[:cut])
                text = tok.decode(kept)
                out.append({"text": text, "n_tokens": len(kept),
                            "canonical": encode_scored(tok, prompts[i] + text) == [*x, *kept]})
            yield chunk, out

    values, _ = memo_map(store, "mcsample", keys, compute, progress=progress)
    return values


@functools.lru_cache(maxsize=8)
def _newline_tokens(tok: Any) -> frozenset[int]:
    """Token ids whose text holds a newline (a continuation stops before them), once per tokenizer."""
    return frozenset(i for i in tok.get_vocab().values() if "\n" in tok.decode([i]))


@dataclass(frozen=True)
class MonteCarloDirection:
    """KL(A‖B) per byte from samples of A."""

    kl: MonteCarloKL
    samples: int  # continuations sampled
    empty: int  # ... that ended at once (no byte to score)
    non_canonical: int  # ... whose tokens were not A's tokenization of their text (left out)
    n_bytes: int

    def to_dict(self) -> dict[str, Any]:
        used = self.samples - self.empty - self.non_canonical
        return {**self.kl.to_dict(), "samples": self.samples, "used": used, "empty": self.empty,
                "non_canonical": self.non_canonical,
                "non_canonical_rate": self.non_canonical / max(1, self.samples - self.empty),
                "n_bytes": self.n_bytes,
                "samples_for_se_0.01": self.kl.needed_for(0.01) if used >= 2 else None}


@dataclass(frozen=True)
class MonteCarloResult:
    """KL(P‖Q) and KL(Q‖P) per byte between two models, by sampling."""

    model_p: dict[str, Any]
    model_q: dict[str, Any]
    pq: MonteCarloDirection
    qp: MonteCarloDirection | None
    settings: dict[str, Any]
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {"measure": "mc", "note": MC_NOTE, "model_p": self.model_p, "model_q": self.model_q,
                "kl_pq_nats_per_byte": self.pq.to_dict(), "kl_qp_nats_per_byte": self.qp.to_dict() if self.qp else None,
                "settings": self.settings, "timing": {"seconds": round(self.seconds, 3)}}


def mc_direction(lm_a: LoadedModel, lm_b: LoadedModel, prompts: Sequence[str], *, max_new_tokens: int = 48,
                 seed: int = 0, store: Store | None = None, progress: Progress | None = None) -> MonteCarloDirection:
    """KL(A‖B) per byte from one continuation of A per prompt (module docstring)."""
    import numpy as np

    store = store or Store()
    n = len(prompts)

    def part(k: int) -> Progress | None:  # five passes of n: sample, then A and B on prompts and full texts
        return None if progress is None else (lambda done, _t: progress(k * n + done, 5 * n))

    samples = continuations(lm_a, prompts, max_new_tokens=max_new_tokens, seed=seed, store=store, progress=part(0))
    use = [i for i, s in enumerate(samples) if s["text"] and s["canonical"]]
    empty = sum(not s["text"] for s in samples)
    full = [prompts[i] + samples[i]["text"] for i in use]
    heads = [prompts[i] for i in use]
    lp = {}
    for k, (name, lm) in enumerate((("a", lm_a), ("b", lm_b))):
        a_full = text_logprobs(lm, full, store=store, progress=part(1 + 2 * k))
        a_head = text_logprobs(lm, heads, store=store, progress=part(2 + 2 * k))
        lp[name] = np.array([f["logprob"] - h["logprob"] for f, h in zip(a_full, a_head)])
    n_bytes = np.array([len(samples[i]["text"].encode("utf-8")) for i in use])
    if not use:
        from evalcore.errors import InputError

        raise InputError(f"none of the {n} continuations of {lm_a.spec.name} could be scored (all empty or "
                         "non-canonical); give more or longer prompts")
    return MonteCarloDirection(mc_kl_per_byte(lp["a"], lp["b"], n_bytes), n, empty,
                               n - empty - len(use), int(n_bytes.sum()))


def run_mc_kl(lm_p: LoadedModel, lm_q: LoadedModel, prompts: Sequence[str], *, max_new_tokens: int = 48,
              seed: int = 0, both: bool = True, store: Store | None = None,
              progress: Progress | None = None) -> MonteCarloResult:
    """Monte-Carlo KL(P‖Q) per byte, and KL(Q‖P) with `both`, from one continuation per prompt
    sampled from each model; samples and scores go in the store."""
    t0 = time.perf_counter()
    prompts = [check_text(p, what=f"prompt {i}") for i, p in enumerate(prompts)]
    store = store or Store()
    legs = 2 if both else 1

    def leg(k: int) -> Progress | None:  # one bar over both directions
        return None if progress is None else (lambda done, total: progress(k * total + done, legs * total))

    pq = mc_direction(lm_p, lm_q, prompts, max_new_tokens=max_new_tokens, seed=seed, store=store, progress=leg(0))
    qp = (mc_direction(lm_q, lm_p, prompts, max_new_tokens=max_new_tokens, seed=seed, store=store, progress=leg(1))
          if both else None)
    return MonteCarloResult(lm_p.identity(), lm_q.identity(), pq, qp,
                            {"max_new_tokens": max_new_tokens, "seed": seed, "prompts": len(prompts),
                             "sampling": "ancestral, temperature 1, no top-p or top-k",
                             "stop": "end of text, or before the first token whose text holds a newline"},
                            time.perf_counter() - t0)


# ----------------------------------------------------------------------------- next-byte distributions

NEXTBYTE_VERSION = 1  # bump when the marginalisation (states, pruning, prefix and end tokens) changes
BYTES_NOTE = ("exact next-byte distributions: each model's next-token distribution summed over every tokenization "
              "that covers the bytes so far (pruned below e^-prune_nats of the prefix's probability; the canonical "
              "one is always kept), then KL both ways and JS per byte position, in nats; not comparable with "
              "token-level KL, and the sums are not the sequence KL (they compare the models at each position of "
              "this one text, not over texts the models would write)")


def next_bytes(lm: LoadedModel, text: str, *, store: Store | None = None,
               progress: Progress | None = None) -> NextByteDists:
    """The next-byte distributions of `lm` over `text` (at most 200 bytes), read from the store or
    computed and stored (op "nextbyte")."""
    from evalcore.scoring.nextbyte import MAX_STATES, PRUNE_NATS, NextByteDists, next_byte_distributions

    store = store or Store()
    text = check_text(text, what="text")
    key = record_key(op="nextbyte", model=lm.identity(), text=hashlib.sha256(text.encode()).hexdigest(),
                     prune_nats=PRUNE_NATS, max_states=MAX_STATES, v=NEXTBYTE_VERSION)

    def compute(todo: list[int]) -> Iterator[tuple[list[int], list[dict[str, Any]]]]:
        d = next_byte_distributions(lm, text, progress=progress)
        require_finite(d.observed(), f"the next-byte log-probabilities of the text under {lm.spec.name}")
        yield [0], [d.to_record()]

    (value,), _ = memo_map(store, "nextbyte", [key], compute)
    return NextByteDists.from_record(value)


@dataclass(frozen=True)
class NextBytesResult:
    """Two models' next-byte distributions over one text and their per-position divergences."""

    model_p: dict[str, Any]
    model_q: dict[str, Any]
    p: NextByteDists
    q: NextByteDists
    div: ByteDivergences
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        n = self.div.n
        return {"measure": "bytes", "note": BYTES_NOTE, "model_p": self.model_p, "model_q": self.model_q,
                "text": self.p.text, "positions": n, "units": "nats",
                "sums": self.div.sums(), "per_byte": {k: v / n for k, v in self.div.sums().items()},
                "per_position": {"kl_pq": self.div.kl_pq.tolist(), "kl_qp": self.div.kl_qp.tolist(),
                                 "js": self.div.js.tolist()},
                "p": self.p.to_dict(), "q": self.q.to_dict(), "timing": {"seconds": round(self.seconds, 3)}}


def run_next_bytes(lm_p: LoadedModel, lm_q: LoadedModel, text: str, *, store: Store | None = None,
                   progress: Progress | None = None) -> NextBytesResult:
    """Per-byte KL(P‖Q), KL(Q‖P) and JS between two models (any tokenizers) at every byte position
    of a short text, from their exact next-byte distributions (module `evalcore.scoring.nextbyte`)."""
    from evalcore.scoring.nextbyte import next_byte_divergences

    t0 = time.perf_counter()
    n = len(check_text(text, what="text").encode("utf-8")) + 1

    def half(offset: int) -> Progress | None:
        return None if progress is None else (lambda done, _t: progress(offset + done, 2 * n))

    p = next_bytes(lm_p, text, store=store, progress=half(0))
    q = next_bytes(lm_q, text, store=store, progress=half(n))
    return NextBytesResult(lm_p.identity(), lm_q.identity(), p, q, next_byte_divergences(p, q),
                           time.perf_counter() - t0)
