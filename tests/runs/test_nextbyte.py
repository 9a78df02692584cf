"""Exact next-byte distributions (evalcore.scoring.nextbyte) and the divergences between two
models' (evalcore.metrics.bytekl): an analytic toy with no model, then the bundled pair.

The toy is a byte-level Markov source over "abc" (a row of next-byte and end probabilities per
last byte) written as a token-level model under two tokenizers: single bytes only, or every pair
"ab" plus single bytes. Marginalised over tokenizations, both must give back the source's rows
exactly, which spreading each token's surprisal evenly over its bytes does not.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pytest
import torch

from evalcore.errors import InputError
from evalcore.metrics.bytekl import END, OUTCOMES, byte_divergences
from evalcore.scoring import tokenbytes
from evalcore.scoring.loglik import reference_logprobs
from evalcore.scoring.nextbyte import (
    MAX_TEXT_BYTES,
    LMTokenModel,
    NextByteDists,
    next_byte_distributions,
    next_byte_divergences,
)
from evalcore.scoring.tokenbytes import token_byte_table

ALPHABET = b"abc"
# Markov rows: state 0 = start, 1 + k = last byte ALPHABET[k]; columns a, b, c, then end (each row sums to 1)
SOURCE_P = np.array([[0.80, 0.10, 0.05, 0.05],
                     [0.05, 0.10, 0.75, 0.10],
                     [0.60, 0.05, 0.05, 0.30],
                     [0.10, 0.70, 0.10, 0.10]])
SOURCE_Q = np.array([[0.30, 0.30, 0.30, 0.10],
                     [0.40, 0.20, 0.20, 0.20],
                     [0.10, 0.60, 0.20, 0.10],
                     [0.25, 0.25, 0.25, 0.25]])
TOY_TEXTS = ["abcab", "bbca", "c"]

HARD_TEXTS = [" leading space", "  two leading,  double  spaces ", "lines\nand\n\nbreaks\n", "emoji 🙂👍🏽!",
              "CJK 日本語の文", "combining e\u0301 n\u0303 a\u0308", "\ttab\r\nmix ü ß"]
SENTENCE = "Yes, café au lait."  # 19 bytes: spaces, punctuation, a non-ASCII character
# chain rule minus log P(canonical tokenization, EOS) on SENTENCE, at most (measured: 1.78 and 0.008 nats;
# SmolLM2 prefers " l|ait" to its canonical " la|it" by 1.3 nats)
CHAIN_GAP_NATS = {"smol": 2.0, "gemma": 0.05}


class MarkovTokens:
    """A Markov source (rows [4, 4] as SOURCE_P) as a token-level model; `pairs`: tokenizer B.

    A: tokens a, b, c;       P(a | s) = M(s, a),                     P(EOS | s) = E(s)
    B: tokens ab.., a, b, c; P(ab | s) = M(s, a) M(a, b),  P(a | s) = M(s, a) E(a): a single
       byte ends the text (EOS follows with probability 1);  P(EOS | s) = E(s) after a pair.
    """

    prefix_token, eos_token = 0, 1

    def __init__(self, rows: np.ndarray, pairs: bool):
        self.rows, self.pairs = rows, pairs
        self.token_bytes = [None, None, *(bytes([a]) for a in ALPHABET)]
        if pairs:
            self.token_bytes += [bytes([a, b]) for a in ALPHABET for b in ALPHABET]

    def encode(self, text: str) -> list[int]:
        x = text.encode()
        step = 2 if self.pairs else 1
        return [self.token_bytes.index(x[i:i + step]) for i in range(0, len(x), step)]

    def reset(self) -> None:
        pass

    def next_logprobs(self, seqs: Sequence[tuple[int, ...]]) -> torch.Tensor:
        M, E = self.rows[:, :3], self.rows[:, 3]
        out = np.zeros((len(seqs), len(self.token_bytes)))
        for r, seq in enumerate(seqs):
            last = self.token_bytes[seq[-1]] if len(seq) > 1 else None
            if self.pairs and last is not None and len(last) == 1:
                out[r, self.eos_token] = 1.0
                continue
            s = 0 if last is None else 1 + ALPHABET.index(last[-1])
            out[r, self.eos_token] = E[s]
            for t, b in enumerate(self.token_bytes):
                if b is not None:
                    k = [ALPHABET.index(c) for c in b]
                    out[r, t] = M[s, k[0]] * (M[1 + k[0], k[1]] if len(b) == 2 else E[1 + k[0]] if self.pairs else 1)
        with np.errstate(divide="ignore"):
            return torch.from_numpy(np.log(out))


def markov_rows(rows: np.ndarray, text: str) -> np.ndarray:
    """The source's exact next-byte distributions over `text`: [n + 1, 257]."""
    x = text.encode()
    out = np.zeros((len(x) + 1, OUTCOMES))
    for i in range(len(x) + 1):
        s = 0 if i == 0 else 1 + ALPHABET.index(x[i - 1])
        out[i, list(ALPHABET)] = rows[s, :3]
        out[i, END] = rows[s, 3]
    return out


def naive_spread(model: MarkovTokens, text: str) -> np.ndarray:
    """Per-byte log-probs from the canonical tokenization, each token's log-prob spread evenly
    over its bytes, then the EOS token's: [n + 1] (the alternative this module replaces)."""
    seq = (model.prefix_token, *model.encode(text), model.eos_token)
    out: list[float] = []
    for d in range(1, len(seq)):
        lp = float(model.next_logprobs([seq[:d]])[0, seq[d]])
        k = len(model.token_bytes[seq[d]] or b"x")
        out += [lp / k] * k
    return np.array(out)


# ----------------------------------------------------------------------------- analytic toy

def test_toy_is_exact_under_both_tokenizers_and_gives_closed_form_kl():
    for text in TOY_TEXTS:
        got = {}
        for rows, name in ((SOURCE_P, "P"), (SOURCE_Q, "Q")):
            for pairs in (False, True):
                r = next_byte_distributions(MarkovTokens(rows, pairs), text)
                np.testing.assert_allclose(r.probs, markov_rows(rows, text), atol=1e-9, rtol=0)
                assert r.pruned.max() == 0 and r.special.max() == 0
                got[name, pairs] = r
        for name in "PQ":  # the same source under the two tokenizers: nothing between them
            same = next_byte_divergences(got[name, False], got[name, True], floor=None)
            assert np.abs(same.kl_pq).max() < 1e-12 and np.abs(same.js).max() < 1e-12
        P, Q = markov_rows(SOURCE_P, text), markov_rows(SOURCE_Q, text)
        with np.errstate(divide="ignore", invalid="ignore"):
            closed = np.where(P > 0, P * np.log(P / Q), 0).sum(1)
            closed_back = np.where(Q > 0, Q * np.log(Q / P), 0).sum(1)
        d = next_byte_divergences(got["P", False], got["Q", True], floor=None)  # different sources, different tokenizers
        np.testing.assert_allclose(d.kl_pq, closed, atol=1e-9, rtol=0)
        np.testing.assert_allclose(d.kl_qp, closed_back, atol=1e-9, rtol=0)
        assert d.sums()["kl_pq"] == pytest.approx(closed.sum(), abs=1e-9)


def test_toy_naive_spreading_fails():
    """Spreading a token's surprisal over its bytes misplaces it: a pair's two bytes get the same
    value, and a final single byte takes the end's probability along."""
    text = "abcab"
    exact = next_byte_distributions(MarkovTokens(SOURCE_P, True), text).observed()
    np.testing.assert_allclose(exact, np.log(markov_rows(SOURCE_P, text)[range(6), [*text.encode(), END]]), atol=1e-9)
    naive_b = naive_spread(MarkovTokens(SOURCE_P, True), text)
    naive_a = naive_spread(MarkovTokens(SOURCE_P, False), text)  # single bytes: nothing to spread
    np.testing.assert_allclose(naive_a, exact, atol=1e-9)
    assert np.abs(naive_b - exact).max() > 0.5
    # the "same source" comparison: exact per-position divergence is 0, the naive gap is not
    assert np.abs(naive_b - naive_a).max() > 0.5
    assert math.isclose(naive_b.sum(), exact.sum(), abs_tol=1e-9)  # only the total survives


def test_toy_limits():
    with pytest.raises(InputError):
        next_byte_distributions(MarkovTokens(SOURCE_P, False), "a" * (MAX_TEXT_BYTES + 1))
    with pytest.raises(InputError):
        next_byte_distributions(MarkovTokens(SOURCE_P, False), "abc", max_states=0)
    r = next_byte_distributions(MarkovTokens(SOURCE_P, False), "")
    np.testing.assert_allclose(r.probs, markov_rows(SOURCE_P, ""), atol=1e-12)
    assert r.to_dict()["n_bytes"] == 0


# ----------------------------------------------------------------------------- divergences

def test_divergences_symmetric_bounded_nonnegative():
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.full(OUTCOMES, 0.05), size=40)
    q = rng.dirichlet(np.full(OUTCOMES, 0.05), size=40)
    p[0], q[0] = 0, 0
    p[0, 3], q[0, 7] = 1, 1  # disjoint: JS = ln 2, KL infinite
    d, back = byte_divergences(p, q), byte_divergences(q, p)
    np.testing.assert_array_equal(d.js, back.js)
    np.testing.assert_array_equal(d.kl_pq, back.kl_qp)
    assert (d.js >= 0).all() and (d.js <= math.log(2)).all() and d.js[0] == pytest.approx(math.log(2))
    assert (d.kl_pq >= 0).all() and (d.kl_qp >= 0).all() and math.isinf(d.kl_pq[0])
    same = byte_divergences(p, p)
    assert not same.kl_pq.any() and not same.kl_qp.any() and not same.js.any()
    with pytest.raises(InputError):
        byte_divergences(p[:, :256], q[:, :256])
    with pytest.raises(InputError):
        byte_divergences(np.log(p + 1e-9), q)


# ----------------------------------------------------------------------------- bundled models

@pytest.fixture(scope="module")
def dists(smol, gemma) -> dict[str, NextByteDists]:
    """Both models' next-byte distributions over SENTENCE, computed once for this module."""
    return {"smol": next_byte_distributions(smol, SENTENCE), "gemma": next_byte_distributions(gemma, SENTENCE)}


def test_byte_round_trip(smol, gemma):
    for lm in (smol, gemma):
        tok = lm.tokenizer
        table = token_byte_table(tok)
        for text in HARD_TEXTS:
            ids = tok(text, add_special_tokens=False).input_ids
            assert tok.decode(ids) == text
            assert b"".join(table[i] for i in ids) == text.encode("utf-8")
        tm = LMTokenModel(lm)
        assert table[tm.eos_token] is None and table[tm.prefix_token] is None
        wrong = [b if b in (None, b"a") else b"?" for b in table]  # every token but "a" spelled "?"
        with pytest.raises(InputError, match="disagree with the tokenizer's decode"):
            tokenbytes._check_table(tok, wrong)
    with pytest.raises(InputError):  # a special token's text has no bytes to spell it
        next_byte_distributions(gemma, "a<bos>")


def test_distributions_are_normalised(smol, gemma, dists):
    for r in dists.values():
        assert r.logprobs.shape == (len(SENTENCE.encode()) + 1, OUTCOMES)
        assert np.abs(r.probs.sum(1) - 1).max() < 1e-6
    for key, lm in (("smol", smol), ("gemma", gemma)):  # at the start: zero exactly for bytes no token begins with
        table = token_byte_table(lm.tokenizer)
        unspellable = sorted(set(range(256)) - {b[0] for b in table if b})
        assert np.flatnonzero(dists[key].probs[0] == 0).tolist() == unspellable
    assert len(unspellable) == 0  # Gemma's byte fallback spells every byte; SmolLM2's vocabulary does not


def test_chain_rule_bounds_the_canonical_likelihood(smol, gemma, dists):
    for key, lm in (("smol", smol), ("gemma", gemma)):
        r, tm = dists[key], LMTokenModel(lm)
        ref = float(reference_logprobs(lm, [tm.prefix_token], [*tm.encode(SENTENCE), tm.eos_token]).sum())
        assert r.canonical_logprob == pytest.approx(ref, abs=2e-3)  # the trie's forward steps = a plain forward
        assert r.canonical_logprob - 1e-9 <= r.chain_logprob <= ref + CHAIN_GAP_NATS[key]
        assert r.pruned_total[-1] < 1e-2


def test_self_identity_and_divergence_between_models(dists):
    for r in dists.values():
        for floor in (None, 1e-12):
            d = next_byte_divergences(r, r, floor=floor)
            assert not d.kl_pq.any() and not d.kl_qp.any() and not d.js.any()
    raw = next_byte_divergences(dists["smol"], dists["gemma"], floor=None)
    assert math.isinf(raw.kl_qp[0])  # Gemma gives mass to bytes SmolLM2 cannot spell
    d, back = next_byte_divergences(dists["smol"], dists["gemma"]), next_byte_divergences(dists["gemma"], dists["smol"])
    np.testing.assert_allclose(d.js, back.js, rtol=0, atol=1e-15)
    assert (d.js >= 0).all() and (d.js <= math.log(2)).all()
    assert (d.kl_pq >= 0).all() and (d.kl_qp >= 0).all() and np.isfinite(d.kl_pq).all()
    assert d.sums()["kl_pq"] > 0


def test_cost_is_reported(dists, capsys):
    n = len(SENTENCE.encode())
    for key, r in dists.items():
        assert r.forward_steps == int(r.states.sum()) and r.forward_calls <= n + 1
        with capsys.disabled():
            print(f"\n{key}: {n} bytes, {r.seconds:.2f} s, {r.forward_steps} forward steps "
                  f"({r.forward_steps / n:.2f}/byte) in {r.forward_calls} calls, chain - canonical "
                  f"{r.chain_logprob - r.canonical_logprob:.4f} nats, pruned share total {r.pruned_total[-1]:.1e}")
