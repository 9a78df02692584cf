"""KL between two models whose tokenizers differ (SmolLM2's byte-level BPE and Gemma 3's
SentencePiece with byte fallback): byte round trips, every byte scored, a model against itself
gives exactly 0, the gap equals the bits-per-byte difference, and the estimators' statistics
recover known values on sampled data."""
from __future__ import annotations

import math

import numpy as np
import pytest

from evalcore.data import corpus
from evalcore.errors import InputError
from evalcore.metrics.crosskl import gap_per_byte, mc_kl_per_byte
from evalcore.runs.crosskl import run_gap, text_logprobs
from evalcore.scoring.sequence import encode_scored, prefix_token

HARD = ["  two leading spaces", "double  space and trailing ", "new\nline\r\nand\ttab", "emoji 😀👍🏽 flags 🇫🇷",
        "中文字符 日本語のテキスト 한국어", "e\u0301 combining, ñ precomposed", "\ufffd replacement char", " ", "\n\n",
        "a" * 300, "mixed: naïve café — “quotes” …"]


# ----------------------------------------------------------------------------- statistics, no model

def test_the_gap_is_the_bits_per_byte_difference_and_zero_against_itself():
    rng = np.random.default_rng(0)
    b = rng.integers(50, 500, 40)
    lp = -rng.uniform(0.5, 1.5, 40) * b
    lq = lp - rng.normal(0.1, 0.05, 40) * b
    g = gap_per_byte(lp, lq, b)
    bpb = lambda x: -x.sum() / (b.sum() * math.log(2))  # noqa: E731
    assert g.value == pytest.approx(bpb(lq) - bpb(lp), rel=1e-12)
    assert g.ci95[0] < g.value < g.ci95[1] and g.se > 0
    same = gap_per_byte(lp, lp, b)
    assert same.value == 0.0 and same.ci95 == (0.0, 0.0)
    with pytest.raises(InputError):
        gap_per_byte(lp, lq[:-1], b)
    with pytest.raises(InputError):
        gap_per_byte(lp, lq, np.zeros_like(b))


def test_monte_carlo_kl_recovers_a_known_kl_per_byte():
    """Strings drawn from a known P over six strings of known byte lengths: Σ d / Σ b converges
    to KL(P‖Q) / E_P[bytes], within a few standard errors, and k3 agrees and is never negative."""
    p = np.array([0.3, 0.25, 0.2, 0.1, 0.1, 0.05])
    q = np.array([0.2, 0.2, 0.2, 0.2, 0.1, 0.1])
    nbytes = np.array([3, 5, 8, 4, 6, 10])
    truth = float((p * np.log(p / q)).sum() / (p * nbytes).sum())
    rng = np.random.default_rng(1)
    x = rng.choice(6, size=4000, p=p)
    est = mc_kl_per_byte(np.log(p[x]), np.log(q[x]), nbytes[x])
    assert abs(est.k1.value - truth) < 4 * est.k1.se
    assert est.k3 is not None and est.k3.value >= 0 and abs(est.k3.value - truth) < 4 * est.k3.se
    assert est.needed_for(est.k1.se / 2) == pytest.approx(4 * est.n, rel=0.01)
    zero = mc_kl_per_byte(np.log(p[x]), np.log(p[x]), nbytes[x])
    assert zero.k1.value == 0.0 and zero.k3 is not None and zero.k3.value == 0.0


def test_k3_is_left_out_when_a_likelihood_ratio_overflows():
    est = mc_kl_per_byte([-1000.0, -2.0], [-1.0, -2.0], [10, 10])
    assert est.k3 is None and math.isfinite(est.k1.value)


# ----------------------------------------------------------------------------- the bundled pair

def test_both_tokenizers_round_trip_hard_text_byte_for_byte(smol, gemma):
    for lm in (smol, gemma):
        tok = lm.tokenizer
        for text in HARD:
            ids = encode_scored(tok, text)
            assert ids[0] == prefix_token(tok)
            assert tok.decode(ids[1:]) == text, (lm.spec.name, text)
    assert prefix_token(gemma.tokenizer) == gemma.tokenizer.bos_token_id
    assert smol.tokenizer.bos_token_id is None or prefix_token(smol.tokenizer) == smol.tokenizer.bos_token_id
    assert prefix_token(smol.tokenizer) in (smol.tokenizer.bos_token_id, smol.tokenizer.eos_token_id)


def test_every_byte_is_scored_and_byte_counts_come_from_the_text(smol, gemma, store):
    texts = ["The cat sat.", "中文 😀"]
    for lm in (smol, gemma):
        rows = text_logprobs(lm, texts, store=store)
        for t, r in zip(texts, rows):
            assert r["n_tokens"] == len(lm.tokenizer(t, add_special_tokens=False).input_ids)  # the first token too
            assert r["n_bytes"] == len(t.encode("utf-8")) and r["logprob"] < 0 and not r["windowed"]


def test_a_model_against_itself_gives_exactly_zero_and_the_pair_a_real_gap(smol, gemma, store):
    texts = list(corpus("wikipedia", limit=4))
    self_gap = run_gap(smol, smol, texts, store=store)
    assert self_gap.gap.value == 0.0
    g = run_gap(smol, gemma, texts, store=store)
    assert g.gap.value == pytest.approx(g.bpb_q - g.bpb_p, rel=1e-9)
    assert 0.3 < g.bpb_p < 3 and 0.3 < g.bpb_q < 3 and g.gap.ci95[0] <= g.gap.value <= g.gap.ci95[1]
    d = g.to_dict()
    assert d["measure"] == "gap" and "not a divergence" in d["note"] and "token-level KL" in d["note"]
    assert store.count("seqlogprob") == 2 * len(texts)  # one log-probability per text and model, self included
    again = run_gap(smol, gemma, texts, store=store)  # read from the store: the same numbers
    assert again.gap == g.gap and store.count("seqlogprob") == 2 * len(texts)


def test_the_gap_equals_the_difference_of_evalcore_perplexitys_bits_per_byte(smol, gemma, store):
    """Measure 1 is the bits-per-byte difference `evalcore perplexity` reports: both start each
    text from the model's prefix token (SmolLM2's end-of-text, Gemma's BOS) and score every
    text token, with the same sliding windows."""
    from evalcore.runs import run_perplexity

    texts = list(corpus("wikipedia", limit=3))
    g = run_gap(smol, gemma, texts, max_length=128, stride=64, store=store)
    bpb = {lm.spec.name: run_perplexity(lm, texts, max_length=128, stride=64, store=store).metrics.bits_per_byte
           for lm in (smol, gemma)}
    assert g.windowed["p"] >= 1 and g.windowed["q"] >= 1  # texts longer than 128 tokens: windows exercised too
    assert g.bpb_p == pytest.approx(bpb[smol.spec.name], rel=1e-6) and g.bpb_q == pytest.approx(bpb[gemma.spec.name], rel=1e-6)
    assert g.gap.value == pytest.approx(bpb[gemma.spec.name] - bpb[smol.spec.name], rel=1e-6, abs=1e-9)


def test_long_texts_use_sliding_windows_and_say_so(smol, store):
    text = " ".join(corpus("wikipedia", limit=3))
    short = text_logprobs(smol, [text], max_length=64, stride=32, store=store)[0]
    whole = text_logprobs(smol, [text], max_length=2048, stride=1024, store=store)[0]
    assert short["windowed"] and not whole["windowed"]
    assert short["n_tokens"] == whole["n_tokens"]
    assert short["logprob"] < whole["logprob"]  # less context per token: less likely


# ----------------------------------------------------------------------------- Monte-Carlo KL

def test_monte_carlo_kl_of_a_model_against_itself_is_exactly_zero(smol, store):
    from evalcore.runs.crosskl import run_mc_kl

    res = run_mc_kl(smol, smol, data_prompts(8), max_new_tokens=16, store=store)
    for d in (res.pq, res.qp):
        assert d.kl.k1.value == 0.0 and d.kl.k3 is not None and d.kl.k3.value == 0.0
        assert d.samples == 8 and d.n_bytes > 0
    out = res.to_dict()
    assert out["measure"] == "mc" and 0 <= out["kl_pq_nats_per_byte"]["non_canonical_rate"] <= 1


def data_prompts(n: int) -> list[str]:
    from evalcore.data import prompts

    return prompts("hellaswag", limit=n)


def test_monte_carlo_kl_agrees_with_the_exact_token_level_sum_on_the_same_sequences(smol, store):
    """SmolLM2 at float32 against itself at bfloat16 (one tokenizer): on the canonical samples,
    the k1 estimate agrees within 3 standard errors with the Rao-Blackwellised value, the exact
    KL of the next-token distributions summed along the same sequences. Only tokens that are
    kept enter the sum (a stop token, newline or end of text, is drawn but not scored), so at
    each position reached the exact term is Σ over kept tokens x of p(x) log(p(x)/q(x))."""
    import torch

    from evalcore.models import load_model
    from evalcore.runs.crosskl import _newline_tokens, continuations, mc_direction

    bf16 = load_model("smollm2-135m", dtype="bfloat16")
    prompts_ = data_prompts(12)
    max_new = 16
    direction = mc_direction(smol, bf16, prompts_, max_new_tokens=max_new, store=store)
    samples = continuations(smol, prompts_, max_new_tokens=max_new, store=store)
    tok = smol.tokenizer
    gc_eos = smol.model.generation_config.eos_token_id
    stops = set(_newline_tokens(tok)) | {tok.eos_token_id, *(gc_eos if isinstance(gc_eos, list) else [gc_eos])} - {None}
    keep = torch.ones(len(tok.get_vocab()), dtype=torch.bool)
    keep[sorted(i for i in stops if i < keep.numel())] = False
    rb, n_bytes = 0.0, 0
    for prompt, s in zip(prompts_, samples):
        if not (s["text"] and s["canonical"]):
            continue
        head = encode_scored(tok, prompt)
        ids = encode_scored(tok, prompt + s["text"])
        reached = s["n_tokens"] + (s["n_tokens"] < max_new)  # the stop position too, unless cut by length
        with torch.inference_mode():
            x = torch.tensor([ids])
            lp = torch.log_softmax(smol.model(input_ids=x).logits[0].float(), -1)
            lq = torch.log_softmax(bf16.model(input_ids=x).logits[0].float(), -1)
        at = slice(len(head) - 1, len(head) - 1 + reached)
        p, q = lp[at][:, : keep.numel()], lq[at][:, : keep.numel()]
        rb += float((p.exp() * (p - q))[:, keep].sum())
        n_bytes += len(s["text"].encode("utf-8"))
    assert n_bytes == direction.n_bytes
    exact = rb / n_bytes
    assert abs(direction.kl.k1.value - exact) < 3 * direction.kl.k1.se, (direction.kl.k1, exact)
    assert exact > 0


def test_the_cli_compares_models_with_different_tokenizers_per_byte(smol, gemma, tmp_path):
    """`evalcore kl` on SmolLM2 against Gemma 3 no longer refuses: on a corpus it reports the
    gap and Monte-Carlo KL both ways; `--method token` still needs a shared tokenizer."""
    import json

    from tests.support import faults as F

    out, store = tmp_path / "kl.json", tmp_path / "kl.sqlite"
    base = ["kl", "--model-p", "smollm2-135m", "--model-q", "gemma3-270m", "--store", str(store)]
    run = F.cli_in_process([*base, "--corpus", "wikipedia", "--limit", "3", "--max-new-tokens", "8", "--out", str(out)],
                           fresh_models=False)
    assert run.rc == 0, run.err
    d = json.loads(out.read_text())
    assert d["measures"] == ["gap", "mc"] and d["gap"]["measure"] == "gap" and d["mc"]["measure"] == "mc"
    assert "not a divergence" in d["gap"]["note"] and d["mc"]["kl_pq_nats_per_byte"]["samples"] == 3
    refused = F.cli_in_process([*base, "--corpus", "wikipedia", "--limit", "1", "--method", "token", "--out", str(out)],
                               fresh_models=False)
    assert refused.rc == 2 and "shared tokenizer" in refused.err and "Traceback" not in refused.err


# ----------------------------------------------------------------------------- next-byte distributions

def test_next_byte_divergences_are_stored_and_zero_against_itself(smol, gemma, store):
    import json

    from evalcore.runs.crosskl import run_next_bytes

    text = "The cat sat."
    seen: list[tuple[int, int]] = []
    r = run_next_bytes(smol, gemma, text, store=store, progress=lambda d, t: seen.append((d, t)))
    n = len(text.encode()) + 1
    assert seen[-1] == (2 * n, 2 * n) and r.div.n == n and store.count("nextbyte") == 2
    d = json.loads(json.dumps(r.to_dict(), allow_nan=False))  # finite: a floor keeps KL finite where a byte is impossible
    assert d["measure"] == "bytes" and "token-level KL" in d["note"] and len(d["per_position"]["js"]) == n
    assert all(v > 0 for v in d["sums"].values())
    again = run_next_bytes(smol, gemma, text, store=store)  # from the store: no forward pass, the same numbers
    assert store.count("nextbyte") == 2 and np.array_equal(again.p.logprobs, r.p.logprobs)
    assert np.array_equal(again.div.kl_pq, r.div.kl_pq) and again.q.forward_calls == r.q.forward_calls
    self_ = run_next_bytes(smol, smol, text, store=store)
    assert not self_.div.kl_pq.any() and not self_.div.js.any()
    with pytest.raises(InputError, match="at most 200"):
        run_next_bytes(smol, gemma, "x" * 201, store=store)


def test_the_cli_compares_next_byte_distributions_on_a_short_text(smol, gemma, tmp_path):
    """`evalcore kl --method bytes` writes `run_next_bytes`'s JSON; `auto` picks it for one
    --text-file of at most 200 bytes across tokenizers; it works with one tokenizer too (read
    back from the store here: next-byte distributions are kept per model and text)."""
    import json

    from tests.support import faults as F

    text, out, store = tmp_path / "t.txt", tmp_path / "kl.json", tmp_path / "kl.sqlite"
    text.write_text("Hi.")
    base = ["kl", "--model-p", "smollm2-135m", "--text-file", str(text), "--store", str(store), "--out", str(out)]
    run = F.cli_in_process([*base, "--model-q", "gemma3-270m", "--method", "bytes"], fresh_models=False)
    assert run.rc == 0, run.err
    d = json.loads(out.read_text())
    assert d["measure"] == "bytes" and d["positions"] == 4 and len(d["per_position"]["kl_pq"]) == 4
    assert all(math.isfinite(v) and v > 0 for v in d["sums"].values())
    assert "next-byte distributions over 4 positions" in run.out and f"{d['sums']['kl_pq']:.4f}" in run.out
    auto = F.cli_in_process([*base, "--model-q", "gemma3-270m"], fresh_models=False)
    assert auto.rc == 0, auto.err
    assert json.loads(out.read_text())["sums"] == d["sums"]
    same = F.cli_in_process([*base, "--model-q", "smollm2-135m", "--method", "bytes"], fresh_models=False)
    assert same.rc == 0, same.err
    assert json.loads(out.read_text())["sums"] == {"kl_pq": 0.0, "kl_qp": 0.0, "js": 0.0}


def test_the_cli_refuses_a_text_too_long_for_next_bytes_before_loading_a_model(tmp_path):
    from evalcore.cli.kl import MAX_TEXT_BYTES
    from evalcore.scoring.nextbyte import MAX_TEXT_BYTES as ENGINE_LIMIT
    from tests.support import faults as F

    assert MAX_TEXT_BYTES == ENGINE_LIMIT == 200
    text = tmp_path / "t.txt"
    text.write_text("é" * 100 + "x")  # 201 UTF-8 bytes in 101 characters
    run = F.cli_in_process(["kl", "--model-p", "smollm2-135m", "--model-q", "gemma3-270m", "--text-file", str(text),
                            "--method", "bytes", "--out", str(tmp_path / "kl.json")], guard=True)
    assert run.rc == 2 and "Traceback" not in run.err and len(run.err.strip().splitlines()) == 1, run.err
    assert "201 UTF-8 bytes" in run.err and "at most 200" in run.err and "--method gap" in run.err
