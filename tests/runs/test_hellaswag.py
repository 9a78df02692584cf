"""HellaSwag: preprocessing, scoring parity with lm-eval, metrics, the store, the CLI."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from evalcore import data, scoring
from evalcore.errors import InputError
from evalcore.metrics import hellaswag as hsm
from evalcore.runs import run_hellaswag
from evalcore.store import Store

ROOT = Path(__file__).resolve().parents[2]

# lm-evaluation-harness 0.4.13, HF backend, float32, same converted weights, items 0..4
# (bench/hellaswag_throughput.py computes these in one run with lm-eval).
# lm-eval's values were computed on another CPU: float32 sums over ~100 tokens round differently
# in another CPU's kernels (up to 5.5e-6 relative seen), so long continuations get a relative
# tolerance beside the absolute one.
GOLDEN_RTOL = 1e-5
LM_EVAL_LOGLIK = {
    "smollm2-135m": [[-39.9296, -31.4256, -22.9075, -31.2697], [-28.6768, -14.9609, -20.0771, -25.6926],
                     [-43.6346, -49.485, -26.1735, -105.8793], [-12.3095, -24.8951, -39.4261, -33.599],
                     [-18.0916, -12.8932, -15.6827, -20.257]],
    "gemma3-270m": [[-46.5436, -32.439, -26.1837, -33.1102], [-24.3151, -11.6607, -19.1254, -21.4349],
                    [-43.5986, -44.4318, -19.9982, -88.937], [-14.7088, -23.0935, -32.5742, -32.3642],
                    [-17.6926, -11.4053, -15.098, -19.4378]],
}


def test_preprocess_like_lm_eval():
    assert data.preprocess(" Wash hands [title] Use soap. [step] Rinse ") == "Wash hands. Use soap. Rinse"
    # one pass of "  " -> " ", as lm-eval: three spaces become two
    assert data.preprocess("a  [x] b") == "a  b"
    doc = {"activity_label": "Roof shingle removal", "ctx_a": "A man is sitting on a roof.", "ctx_b": "he",
           "endings": ["a [header] b", "x", "y", "z"], "label": "3"}
    it = data.process_doc(doc, 0)
    assert it.query == "Roof shingle removal: A man is sitting on a roof. He"
    assert it.choices[0] == "a b" and it.label == 3 and it.continuations[1] == " x"


def test_dataset_is_full_validation(hellaswag):
    assert len(hellaswag) == data.HELLASWAG_SIZE
    it = hellaswag.item(0)
    assert it.query == "Roof shingle removal: A man is sitting on a roof. He" and it.label == 3


def test_select_indices_and_bad_input(tmp_path):
    assert data.select_indices(100, limit=3) == [0, 1, 2]
    s = data.select_indices(100, sample=5, seed=1)
    assert s == data.select_indices(100, sample=5, seed=1) and len(set(s)) == 5
    f = tmp_path / "i.json"
    f.write_text("[4, 2]")
    assert data.select_indices(100, indices=f) == [4, 2]
    for bad, msg in [("[1, 1]", "duplicates"), ("[-1]", "out of range"), ("[100]", "out of range"),
                     ("{]", "unreadable"), ('["a"]', "list of integers")]:
        f.write_text(bad)
        with pytest.raises(InputError, match=msg):
            data.select_indices(100, indices=f)
    with pytest.raises(InputError, match="at least 1"):
        data.select_indices(100, limit=0)


@pytest.mark.parametrize("name,fixture", [("smollm2-135m", "smol"), ("gemma3-270m", "gemma")])
def test_loglik_matches_lm_eval_golden_values(request, name, fixture, hellaswag):
    lm = request.getfixturevalue(fixture)
    items = hellaswag.items([0, 1, 2, 3, 4])
    groups = [scoring.encode_pair(lm.tokenizer, it.query, it.continuations) for it in items]
    got = np.array([[x.sum() for x in r] for r in scoring.score_groups(lm, groups)])
    np.testing.assert_allclose(got, LM_EVAL_LOGLIK[name], atol=2e-4, rtol=GOLDEN_RTOL)


def test_shared_context_equals_unbatched_reference(smol, gemma, hellaswag):
    items = hellaswag.items([10, 11, 12])
    for lm in (smol, gemma):
        groups = [scoring.encode_pair(lm.tokenizer, it.query, it.continuations) for it in items]
        res = scoring.score_groups(lm, groups)
        for g, r in zip(groups, res):
            for cont, lp in zip(g.continuations, r):
                ref = scoring.reference_logprobs(lm, g.context, cont)
                np.testing.assert_allclose(lp, ref, atol=1e-4)


def test_endings_sharing_a_prefix_are_computed_once_and_scored_exactly(smol, gemma):
    """Endings that start alike share trie nodes (and LM-head rows); each one still scores as
    it does alone, on both models (Gemma's row starts with <bos>)."""
    from evalcore.scoring.loglik import _layout

    ends = [" He sits down on the sofa.", " He sits on a chair.", " He stands up.", " She waves at him.", " He sits down."]
    for lm in (smol, gemma):
        g = scoring.encode_pair(lm.tokenizer, "A man walks into the living room.", ends)
        row = _layout(g)
        flat = len(g.context) + sum(len(c) - 1 for c in g.continuations)
        assert len(row.tokens) <= flat - 5  # " He" 3 more times, " sits" twice, " down" once
        assert len({p for ps in row.pred for p in ps}) < sum(len(c) for c in g.continuations)
        for cont, lp in zip(g.continuations, scoring.score_groups(lm, [g])[0]):
            np.testing.assert_allclose(lp, scoring.reference_logprobs(lm, g.context, cont), atol=1e-4)


def test_packed_rows_respect_gemma_sliding_window(gemma, hellaswag):
    """A context longer than Gemma 3's 512-token sliding window: the packed row's sliding-layer
    mask (built from positions) must hide what the model's own mask hides."""
    ctx = " ".join(it.query for it in hellaswag.items(list(range(40, 70))))
    g = scoring.encode_pair(gemma.tokenizer, ctx, [" He smiles.", " The dog runs away from the camera."])
    window = gemma.model.config.sliding_window
    assert len(g.context) > window + 20
    short = scoring.score_groups(gemma, [scoring.encode_pair(gemma.tokenizer, "A man walks.", [" He sits."])])
    res = scoring.score_groups(gemma, [g] + [scoring.encode_pair(gemma.tokenizer, "A man walks.", [" He sits."])])
    for cont, lp in zip(g.continuations, res[0]):
        np.testing.assert_allclose(lp, scoring.reference_logprobs(gemma, g.context, cont), atol=1e-4)
    np.testing.assert_allclose(res[1][0], short[0][0], atol=1e-4)  # padded behind a long row: unchanged


def test_batch_size_does_not_change_results(smol, hellaswag):
    items = hellaswag.items(list(range(20, 32)))
    groups = [scoring.encode_pair(smol.tokenizer, it.query, it.continuations) for it in items]
    big = scoring.score_groups(smol, groups, batch_tokens=100_000)
    one = scoring.score_groups(smol, groups, batch_tokens=1)
    mid = scoring.score_groups(smol, groups, batch_tokens=400)
    for a, b, c in zip(big, one, mid):
        for x, y, z in zip(a, b, c):
            assert abs(x.sum() - y.sum()) < 1e-4 and abs(x.sum() - z.sum()) < 1e-4


def test_encode_pair_boundary(smol, gemma):
    g = scoring.encode_pair(gemma.tokenizer, "A cat", [" sat", " ran"])
    assert g.context[0] == gemma.tokenizer.bos_token_id and len(g.continuations) == 2
    g2 = scoring.encode_pair(smol.tokenizer, "A cat ", ["sat"])  # trailing space moves to the continuation
    assert smol.tokenizer.decode(list(g2.continuations[0])) == " sat"
    assert g2.context == tuple(smol.tokenizer("A cat").input_ids)


def test_metrics_on_hand_checked_values():
    ll = np.array([[-1.0, -2.0, -3.0, -4.0], [-10.0, -4.0, -9.0, -8.0], [-6.0, -5.0, -1.0, -7.0]])
    cl = np.array([[1, 1, 1, 1], [10, 2, 10, 10], [10, 10, 1, 10]])
    pred, pred_norm = hsm.predictions(ll, cl)
    assert pred.tolist() == [0, 1, 2] and pred_norm.tolist() == [0, 3, 1]  # -0.8 > -0.9; -0.5 > -0.6
    acc = hsm.accuracy(pred == np.array([0, 1, 3]))
    assert acc.value == pytest.approx(2 / 3)
    assert acc.stderr == pytest.approx(np.std([1, 1, 0], ddof=1) / np.sqrt(3))
    assert acc.ci95[0] <= acc.value <= acc.ci95[1]
    p = hsm.choice_distribution(ll)
    np.testing.assert_allclose(p.sum(axis=1), 1)
    assert p[0, 0] == pytest.approx(np.exp(-1) / np.exp([-1, -2, -3, -4]).sum())


def test_paired_comparison():
    a = np.array([1, 1, 1, 1, 1, 1, 1, 1, 0, 0])
    b = np.array([0, 0, 0, 0, 0, 0, 0, 1, 0, 0])
    ll = np.log(np.full((10, 4), 0.25))
    cmp = hsm.paired_comparison(a, b, ll, ll)
    assert cmp.acc_diff == pytest.approx(0.7) and cmp.only_a_correct == 7 and cmp.only_b_correct == 0
    assert cmp.mcnemar_p == pytest.approx(2 * 0.5 ** 7)  # exact two-sided binomial
    assert cmp.acc_diff_ci95[0] > 0 and cmp.kl_ab_mean == 0.0


def test_run_caches_items_and_skips_inference(smol, hellaswag, store, monkeypatch):
    idx = [0, 1, 2, 3]
    first = run_hellaswag(smol, idx, dataset=hellaswag, store=store)
    assert first.cached_items == 0 and [r.pred for r in first.items] == [2, 1, 2, 0]
    np.testing.assert_allclose(first.loglik(), LM_EVAL_LOGLIK["smollm2-135m"][:4], atol=2e-4, rtol=GOLDEN_RTOL)
    labels = np.array([3, 3, 2, 2])
    _, golden_norm = hsm.predictions(LM_EVAL_LOGLIK["smollm2-135m"][:4], [r.char_lengths for r in first.items])
    assert first.acc.value == pytest.approx(0.25)  # only item 2 right: [2, 1, 2, 0] vs [3, 3, 2, 2]
    assert first.acc_norm.value == pytest.approx(np.mean(golden_norm == labels))

    def boom(*a, **k):
        raise AssertionError("inference ran for cached items")

    monkeypatch.setattr(scoring, "iter_logprobs", boom)
    again = run_hellaswag(smol, idx, dataset=hellaswag, store=store)
    assert again.cached_items == 4 and again.to_dict()["items"] == first.to_dict()["items"]
    assert store.count("hellaswag") == 4


def _cli(args, env, **kw):
    return subprocess.Popen([sys.executable, "-m", "evalcore", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def test_cli_json_and_resume_after_sigkill(tmp_path, hellaswag_reference):
    """SIGKILL mid-run keeps the committed items; the rerun reads them back and gives the
    per-item results of an uninterrupted run (the session's single-process run of the same 24
    items, conftest.py)."""
    env = os.environ.copy()
    db = tmp_path / "store" / "results.sqlite"
    args = ["hellaswag", "--model", "smollm2-135m", "--limit", "24", "--batch-tokens", "300", "--store", str(db)]
    p = _cli([*args, "--out", str(tmp_path / "killed.json")], env)
    deadline = time.time() + 240
    n = 0
    while time.time() < deadline and p.poll() is None:
        time.sleep(0.2)
        if db.exists():
            try:
                n = Store(db).count("hellaswag")
            except Exception:
                n = 0
            if n >= 3:
                break
    assert p.poll() is None, p.communicate()
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    kept = Store(db).count("hellaswag")
    assert 3 <= kept < 24
    out = _cli([*args, "--out", str(tmp_path / "resumed.json")], env)
    assert out.wait(timeout=300) == 0, out.communicate()
    resumed = json.loads((tmp_path / "resumed.json").read_text())
    assert resumed["timing"]["cached_items"] == kept and resumed["n"] == 24
    assert set(resumed) >= {"model", "n", "results", "items", "timing"}
    assert set(resumed["results"]) == {"acc", "acc_stderr", "acc_ci95", "acc_norm", "acc_norm_stderr", "acc_norm_ci95"}
    assert set(resumed["items"][0]) >= {"index", "label", "logprobs", "char_lengths", "pred", "pred_norm"}
    # an uninterrupted run of the same items gives the same per-item results
    ref = hellaswag_reference
    assert [a["index"] for a in resumed["items"]] == [b["index"] for b in ref["items"]] == list(range(24))
    for a, b in zip(resumed["items"], ref["items"]):
        assert a["pred"] == b["pred"] and a["pred_norm"] == b["pred_norm"]
        np.testing.assert_allclose(a["logprobs"], b["logprobs"], atol=1e-4)
    assert resumed["results"]["acc"] == ref["results"]["acc"]


def test_two_processes_same_work(tmp_path):
    env = os.environ.copy()
    args = ["hellaswag", "--model", "smollm2-135m", "--limit", "10", "--batch-tokens", "400",
            "--store", str(tmp_path / "shared.sqlite")]
    ps = [_cli([*args, "--out", str(tmp_path / f"r{k}.json")], env) for k in range(2)]
    for p in ps:
        assert p.wait(timeout=300) == 0, p.communicate()
    r0, r1 = (json.loads((tmp_path / f"r{k}.json").read_text()) for k in range(2))
    assert Store(tmp_path / "shared.sqlite").count("hellaswag") == 10  # no duplicates
    assert [i["pred"] for i in r0["items"]] == [i["pred"] for i in r1["items"]]
    np.testing.assert_allclose([i["logprobs"] for i in r0["items"]], [i["logprobs"] for i in r1["items"]], atol=1e-4)


@pytest.mark.parametrize("args,msg,child", [
    (["--model", "nope!", "--limit", "2"], "unknown model", True),  # hellaswag's case through `python -m evalcore`
    (["--model", "smollm2-135m", "--limit", "0"], "at least 1", False),
    (["--model", "smollm2-135m", "--indices", "/no/such.json"], "unreadable", False),
])
def test_cli_bad_input_one_line(tmp_path, args, msg, child):
    """Exit 2, one line, no traceback and no model load (bad_inputs.run_bad_input, in a child or
    in this process)."""
    from tests.support.bad_inputs import BadInput, _args, run_bad_input

    case = BadInput(msg, _args("hellaswag", *args, "--out", "{d}/x.json"), msg)
    run, problem = run_bad_input(case, tmp_path, in_process=not child)
    assert problem is None, f"{problem}\nstderr: {run.err}"
