"""Perplexity (sliding window, bits per byte), token-level KL, and the divergence toolbox."""
from __future__ import annotations

import copy
import dataclasses
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.stats
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from evalcore import data, scoring
from evalcore.errors import InputError
from evalcore.metrics import kl as K
from evalcore.metrics.perplexity import perplexity
from evalcore.runs import run_perplexity, run_token_kl
from evalcore.scoring.windows import Window

ROOT = Path(__file__).resolve().parents[2]
TEXT = ("The committee met on Tuesday to discuss the budget. After a long debate, the members agreed "
        "to postpone the decision until the next meeting, when more figures would be available.")


# ----------------------------------------------------------------------------- toolbox

def test_kl_hand_checked_and_scipy():
    p, q = np.array([0.5, 0.5, 0.0]), np.array([0.25, 0.25, 0.5])
    assert K.kl(p, q) == pytest.approx(np.log(2))  # 0.5 log 2 + 0.5 log 2
    assert K.kl(p, q, base=2) == pytest.approx(1.0)
    assert K.kl(q, p) == np.inf  # q puts mass where p has none
    assert K.reverse_kl(p, q) == np.inf
    rng = np.random.default_rng(0)
    P, Q = rng.dirichlet(np.ones(5), size=20), rng.dirichlet(np.ones(5), size=20)
    np.testing.assert_allclose(K.kl(P, Q), scipy.stats.entropy(P, Q, axis=1), rtol=1e-12)
    np.testing.assert_allclose(K.entropy(P, base=2), scipy.stats.entropy(P, base=2, axis=1), rtol=1e-12)
    np.testing.assert_allclose(K.js(P, Q), scipy.spatial.distance.jensenshannon(P, Q, axis=1) ** 2, rtol=1e-10)


def test_smoothing_is_explicit():
    p, q = np.array([0.5, 0.5, 0.0]), np.array([0.0, 0.5, 0.5])
    assert K.kl(p, q) == np.inf
    qs = K.smooth(q, method="epsilon", amount=1e-3)
    assert np.isfinite(K.kl(p, qs)) and qs.sum() == pytest.approx(1)
    assert np.isfinite(K.kl(p, K.smooth(q, method="add-k", amount=0.5)))
    with pytest.raises(InputError, match="use 'epsilon' or 'add-k'"):
        K.smooth(q, method="magic")
    with pytest.raises(InputError, match="sum to"):
        K.kl([0.5, 0.6], [0.5, 0.5])


dist = st.integers(2, 6).flatmap(lambda n: st.tuples(
    st.lists(st.floats(0.01, 1), min_size=n, max_size=n), st.lists(st.floats(0.01, 1), min_size=n, max_size=n)))


@settings(max_examples=200, deadline=None)
@given(dist)
def test_kl_properties(pq):
    p, q = (np.array(x) / np.sum(x) for x in pq)
    assert K.kl(p, q) >= 0 and K.kl(p, p) == pytest.approx(0, abs=1e-12)
    assert K.cross_entropy(p, q) == pytest.approx(K.entropy(p) + K.kl(p, q), abs=1e-9)
    assert K.bregman(p, q) == pytest.approx(K.kl(p, q), abs=1e-9)
    assert 0 <= K.js(p, q) <= np.log(2) + 1e-12
    if not np.allclose(p, q, atol=1e-3):
        assert K.kl(p, q) > 0


def test_kl_is_asymmetric():
    p, q = np.array([0.9, 0.1]), np.array([0.5, 0.5])
    assert K.kl(p, q) != pytest.approx(K.kl(q, p))


# ----------------------------------------------------------------------------- perplexity

def test_windows_score_each_token_once():
    for n, m, s in [(10, 6, 3), (10, 4, 4), (5, 8, 2), (100, 16, 1)]:
        ws = scoring.windows(n, max_length=m, stride=s)
        assert sum(w.n_scored for w in ws) == n - 1
        assert all(w.end - w.start <= m and w.n_scored <= w.end - w.start - 1 for w in ws)
    assert scoring.windows(10, max_length=6, stride=3) == [
        Window(0, 6, 5), Window(3, 9, 3), Window(4, 10, 1)]
    with pytest.raises(InputError, match="stride"):
        scoring.windows(10, max_length=4, stride=5)


def test_perplexity_equals_plain_loop(smol, store):
    """SmolLM2's tokenizer adds no BOS: the text starts from the BOS it declares (<|im_start|>),
    lm-eval's prefix token for rolling log-likelihoods, so the first text token is scored too."""
    text_ids = smol.tokenizer(TEXT, add_special_tokens=False).input_ids
    x = torch.tensor([[smol.tokenizer.bos_token_id, *text_ids]])
    with torch.inference_mode():
        logp = torch.log_softmax(smol.model(x).logits[0, :-1].float(), -1)
    plain = -logp.gather(1, x[0, 1:, None])[:, 0].double().numpy()
    res = run_perplexity(smol, [TEXT], store=store)
    np.testing.assert_allclose(res.texts[0].nll, plain, atol=1e-4)
    assert res.metrics.perplexity == pytest.approx(np.exp(plain.mean()), rel=1e-4)
    assert res.metrics.tokens == len(text_ids)  # every text token
    assert res.metrics.bits_per_byte == pytest.approx(plain.sum() / np.log(2) / len(TEXT.encode()), rel=1e-4)
    assert res.texts[0].ids[0] == smol.tokenizer.bos_token_id and "every token" in res.settings["scored"]
    again = run_perplexity(smol, [TEXT], store=store)
    assert again.cached_texts == 1 and again.metrics == res.metrics


def test_gemma_scores_every_text_token(gemma, store):
    res = run_perplexity(gemma, [TEXT], store=store)
    assert res.metrics.tokens == len(gemma.tokenizer(TEXT).input_ids) - 1  # all but <bos>
    assert res.texts[0].ids[0] == gemma.tokenizer.bos_token_id
    assert 1 < res.metrics.perplexity < 200


def test_small_stride_gives_lower_perplexity(smol, store):
    text = " ".join(data.boolq_passages(3))
    n = len(smol.tokenizer(text, add_special_tokens=False).input_ids)
    assert n > 3 * 64
    full = run_perplexity(smol, [text], max_length=64, stride=64, store=store).metrics
    small = run_perplexity(smol, [text], max_length=64, stride=16, store=store).metrics
    assert full.tokens == small.tokens == n  # every text token, after the prefix token
    assert small.perplexity < full.perplexity


def test_perplexity_metric_math():
    m = perplexity([np.array([1.0, 2.0]), np.array([3.0])], n_bytes=10)
    assert m.nll_per_token == pytest.approx(2.0) and m.perplexity == pytest.approx(np.exp(2.0))
    assert m.bits_per_token == pytest.approx(2 / np.log(2)) and m.bits_per_byte == pytest.approx(6 / np.log(2) / 10)
    with pytest.raises(InputError):
        perplexity([np.array([])], n_bytes=3)


def test_bad_texts(smol, store, tmp_path):
    with pytest.raises(InputError, match="empty or whitespace"):
        run_perplexity(smol, ["   \n"], store=store)
    assert run_perplexity(smol, ["Hi"], store=store).metrics.tokens == 1  # one token, scored after the prefix token
    f = tmp_path / "latin1.txt"
    f.write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(InputError, match="not UTF-8"):
        data.read_text_file(f)
    f.write_bytes(b"\x00\x01\x02binary")
    with pytest.raises(InputError, match="binary"):
        data.read_text_file(f)


@pytest.mark.slow  # a CLI process or a fresh interpreter
def test_cli_perplexity_errors_are_one_line(tmp_path):
    f = tmp_path / "empty.txt"
    f.write_text("  ")
    p = subprocess.run([sys.executable, "-m", "evalcore", "perplexity", "--model", "smollm2-135m", "--text-file", str(f),
                        "--out", str(tmp_path / "o.json")], cwd=ROOT, capture_output=True, text=True)
    assert p.returncode == 2 and "empty or whitespace" in p.stderr and len(p.stderr.strip().splitlines()) == 1


# ----------------------------------------------------------------------------- token-level KL

def test_token_kl_self_is_zero_and_perturbed_is_positive(smol):
    same = run_token_kl(smol, smol, TEXT)
    assert max(same.kl_pq) < 1e-6 and max(same.kl_qp) < 1e-6 and all(same.top1_agree)
    noisy = copy.deepcopy(smol.model)
    with torch.no_grad():
        g = torch.Generator().manual_seed(0)
        for p in noisy.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.01)
    other = dataclasses.replace(smol, model=noisy)
    d = run_token_kl(smol, other, TEXT)
    s = d.summary()
    assert s["kl_pq"] > 1e-3 and s["kl_qp"] > 1e-3 and s["kl_pq"] != pytest.approx(s["kl_qp"])
    assert 0 < s["js"] <= np.log(2) and len(d.tokens) == len(d.kl_pq) == len(smol.tokenizer(TEXT).input_ids) - 1
    # agrees with the toolbox on full distributions at one position
    ids = torch.tensor([smol.tokenizer(TEXT).input_ids])
    with torch.inference_mode():
        pa = torch.softmax(smol.model(ids).logits[0, 3].double(), -1).numpy()
        pb = torch.softmax(noisy(ids).logits[0, 3].double(), -1).numpy()
    assert d.kl_pq[3] == pytest.approx(float(K.kl(pa, pb)), rel=1e-3, abs=1e-6)


def test_token_kl_needs_shared_tokenizer(smol, gemma):
    with pytest.raises(InputError, match="shared tokenizer.*'smollm2'.*'gemma3'.*smollm2-360m"):
        run_token_kl(smol, gemma, TEXT)
