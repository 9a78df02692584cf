"""HellaSwag dialects on real items: each dialect's score of each ending by hand, the
unconditional pass against lm-eval and a direct computation, the store, the CLI flags."""
from __future__ import annotations

import json

import numpy as np
import pytest

from evalcore import scoring
from evalcore.metrics import dialects as dia
from evalcore.runs import hellaswag as rh
from evalcore.store import Store
from tests.support import faults as F

pytestmark = pytest.mark.slow

# lm-evaluation-harness 0.4.13, HF backend, float32, the same converted weights, items 0..2: the
# requests acc_mutual_info adds, ("", " " + ending), scored after the prefix token alone
LM_EVAL_UNCOND = {
    "smollm2-135m": [[-52.8198, -48.1076, -41.3075, -58.5175], [-46.9854, -41.4611, -52.1873, -43.854],
                     [-74.1237, -68.2902, -55.0553, -124.4943]],
    "gemma3-270m": [[-59.5139, -55.321, -44.1534, -56.0355], [-44.5526, -39.2441, -48.5973, -45.7002],
                    [-78.3101, -71.5068, -47.3117, -115.8368]],
}
ITEMS = [0, 1, 2]


def test_each_dialect_matches_a_hand_computation(smol, hellaswag, store):
    """Every dialect's score of every ending of three real items, from unbatched forward passes
    (scoring.reference_logprobs) and lengths counted by hand."""
    res = rh.run_hellaswag(smol, ITEMS, dataset=hellaswag, store=store, unconditional=True)
    tok = smol.tokenizer
    prefix = tok.bos_token_id  # SmolLM2's tokenizer has a BOS (lm-eval's prefix token)
    want: dict[str, list[list[float]]] = {k: [] for k in dia.DIALECTS}
    for it in hellaswag.items(ITEMS):
        g = scoring.encode_pair(tok, it.query, it.continuations)
        rows = {k: [] for k in dia.DIALECTS}
        for choice, cont in zip(it.choices, g.continuations):
            ll = float(scoring.reference_logprobs(smol, g.context, cont).sum())
            alone = tok(" " + choice, add_special_tokens=False).input_ids
            ll_u = float(scoring.reference_logprobs(smol, [prefix], alone).sum())
            rows["acc"].append(ll)
            rows["acc_norm"].append(ll / len(choice))
            rows["acc_bytes"].append(ll / len(choice.encode("utf-8")))
            rows["acc_tokens"].append(ll / len(cont))
            rows["acc_mutual_info"].append(ll - ll_u)
        for k in dia.DIALECTS:
            want[k].append(rows[k])
    its = res.items
    got = dia.dialect_scores(res.loglik(), char_len=[r.char_lengths for r in its],
                             byte_len=[r.byte_lengths for r in its], token_len=[r.n_tokens for r in its],
                             loglik_uncond=[r.logprobs_uncond for r in its])
    for k in dia.DIALECTS:
        np.testing.assert_allclose(got[k], want[k], atol=1e-4, err_msg=k)  # batched vs unbatched float32
    np.testing.assert_allclose([r.logprobs_uncond for r in its], LM_EVAL_UNCOND["smollm2-135m"], atol=2e-4)
    d = res.dialects(calibration=True)
    labels = np.array([r.label for r in its])
    for k in dia.DIALECTS:
        picks = np.argmax(want[k], axis=1)
        assert d.predictions[k] == picks.tolist(), k
        assert d.table[k].value == pytest.approx(np.mean(picks == labels)), k
    assert d.table["acc"] == res.acc and d.table["acc_norm"] == res.acc_norm
    split = [it.index for j, it in enumerate(its) if len({d.predictions[k][j] for k in dia.DIALECTS}) > 1]
    assert d.disagreements == split
    assert d.calibration is not None and set(d.calibration) == set(dia.DIALECTS)
    p = np.exp(want["acc_mutual_info"]) / np.exp(want["acc_mutual_info"]).sum(axis=1, keepdims=True)
    assert d.calibration["acc_mutual_info"].nll == pytest.approx(-np.mean(np.log(p[np.arange(3), labels])), rel=1e-4)


def test_unconditional_pass_on_gemma_matches_lm_eval(gemma, hellaswag, store):
    """Gemma's tokenizer adds <bos> to a text: the unconditional ending is <bos> + its tokens, once."""
    got, cached = rh.run_unconditional(gemma, ITEMS, dataset=hellaswag, store=store)
    assert cached == 0
    np.testing.assert_allclose(got, LM_EVAL_UNCOND["gemma3-270m"], atol=2e-4)
    answer, _ = rh.run_unconditional(gemma, ITEMS[:1], context="Answer:", dataset=hellaswag, store=store)
    g = scoring.encode_pair(gemma.tokenizer, "Answer:", hellaswag.item(0).continuations)
    direct = [float(scoring.reference_logprobs(gemma, g.context, c).sum()) for c in g.continuations]
    np.testing.assert_allclose(answer[0], direct, atol=2e-5)
    assert store.count("hellaswag_uncond") == 4  # each context its own records


def test_stored_once_and_old_records_still_hit(smol, hellaswag, store, monkeypatch):
    """A rerun reads both passes from the store; a record written before byte lengths and token
    counts were kept is still a hit and gets them from the text and the tokenizer."""
    first = rh.run_hellaswag(smol, ITEMS, dataset=hellaswag, store=store, unconditional=True)
    key = rh._item_key(smol, hellaswag, 0)
    old = {k: v for k, v in store.get_many([key])[key].items() if k not in ("byte_lengths", "n_tokens")}
    store.put_many("hellaswag", {key: old})

    def boom(*a, **k):
        raise AssertionError("inference ran for cached items")

    monkeypatch.setattr(scoring, "iter_logprobs", boom)
    again = rh.run_hellaswag(smol, ITEMS, dataset=hellaswag, store=store, unconditional=True)
    assert (again.cached_items, again.cached_uncond) == (3, 3)
    assert store.count("hellaswag") == store.count("hellaswag_uncond") == 3
    assert again.to_dict(dialects=True) == {**first.to_dict(dialects=True), "timing": again.to_dict()["timing"]}
    plain = rh.run_hellaswag(smol, ITEMS, dataset=hellaswag, store=store)
    assert "logprobs_uncond" not in plain.to_dict()["items"][0] and "dialects" not in plain.to_dict()
    assert set(plain.dialects().table) == {"acc", "acc_norm", "acc_bytes", "acc_tokens"}


def test_cli_dialects_and_calibration(smol, tmp_path):
    out, db = tmp_path / "hs.json", tmp_path / "s.sqlite"
    args = ["hellaswag", "--model", "smollm2-135m", "--limit", "4", "--store", str(db), "--out", str(out)]
    run = F.cli_shared_models([*args, "--dialects", "--calibration", "--bins", "2"])
    assert run.rc == 0, run.err
    d = json.loads(out.read_text())
    assert set(d["dialects"]) == set(dia.DIALECTS) and d["unconditional_context"] == ""
    its = d["items"]
    scores = dia.dialect_scores([r["logprobs"] for r in its], char_len=[r["char_lengths"] for r in its],
                                byte_len=[r["byte_lengths"] for r in its], token_len=[r["n_tokens"] for r in its],
                                loglik_uncond=[r["logprobs_uncond"] for r in its])
    labels = np.array([r["label"] for r in its])
    for k, s in scores.items():
        assert d["dialects"][k]["value"] == pytest.approx(np.mean(np.argmax(s, axis=1) == labels)), k
        assert d["calibration"][k]["n"] == 4 and sum(b["count"] for b in d["calibration"][k]["bins"]) == 4
        assert len(d["calibration"][k]["bins"]) == 2
    assert d["dialects"]["acc"]["value"] == d["results"]["acc"]
    assert d["disagreements"]["n"] == len(d["disagreements"]["indices"])
    assert f"acc_mutual_info {d['dialects']['acc_mutual_info']['value']:.4f}" in run.out and "ECE acc " in run.out
    assert Store(db).count("hellaswag_uncond") == 4
    bad = F.cli_in_process([*args, "--bins", "5"], guard=True)  # before any model load
    assert bad.rc == 2 and "only apply with --calibration" in bad.err and len(bad.err.strip().splitlines()) == 1
    bad = F.cli_in_process([*args, "--calibration", "--bins", "0"], guard=True)
    assert bad.rc == 2 and "out of range" in bad.err and len(bad.err.strip().splitlines()) == 1
