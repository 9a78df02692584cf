"""Importing lm-eval `--log_samples` HellaSwag files: parity with our own run, both response
shapes, malformed files, the CLI.

The fixture tests/fixtures/lm_eval/samples_hellaswag_smollm2.jsonl (with results_smollm2.json
beside it) was written by lm-evaluation-harness 0.4.13 (`--model hf`, float32, CPU, batch size 4)
on the bundled SmolLM2 converted folder, validation rows 0..7, with the task in
tests/fixtures/lm_eval/task/ (see tests/runs/test_lmeval_live.py to redo it).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from evalcore.errors import InputError
from evalcore.runs import run_hellaswag
from evalcore.runs.lmeval import compare_runs, import_lm_eval
from evalcore.store import Store
from tests.support.clirun import cli, cli_in_process

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "lm_eval"
SAMPLES = FIXTURES / "samples_hellaswag_smollm2.jsonl"
# lm-eval's HF backend and ours, both float32 on CPU, same weights: 2.6e-5 nats at most on the
# fixture's 32 endings; the bound leaves room for another CPU's kernels.
LOGLIK_ATOL = 2e-4


def _lines() -> list[dict]:
    return [json.loads(line) for line in SAMPLES.read_text().splitlines()]


def _write(path: Path, recs: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in recs))
    return path


def test_fixture_matches_our_run(smol, hellaswag, tmp_path):
    imp = import_lm_eval(SAMPLES, dataset=hellaswag)
    lm_eval_results = json.loads((FIXTURES / "results_smollm2.json").read_text())["results"]["hellaswag_local"]
    assert imp.n == 8 and [it.index for it in imp.items] == list(range(8))
    assert (imp.acc.value, imp.acc_norm.value) == (lm_eval_results["acc,none"], lm_eval_results["acc_norm,none"])
    assert imp.acc.stderr == pytest.approx(lm_eval_results["acc_stderr,none"])
    assert imp.model["source"] == "lm-eval" and imp.model["lm_eval_version"] == "0.4.13"
    assert imp.model["name"].startswith("lm-eval:") and "smollm2" in imp.model["name"]

    ours = run_hellaswag(smol, [it.index for it in imp.items], dataset=hellaswag, store=Store(tmp_path / "s.sqlite"))
    assert [r.pred for r in imp.items] == [r.pred for r in ours.items]
    assert [r.pred_norm for r in imp.items] == [r.pred_norm for r in ours.items]
    assert [r.char_lengths for r in imp.items] == [r.char_lengths for r in ours.items]
    np.testing.assert_allclose(imp.loglik(), ours.loglik(), rtol=0, atol=LOGLIK_ATOL)
    cmp = compare_runs(imp, ours)
    assert cmp.same_pred == cmp.same_pred_norm == 8 and max(cmp.max_abs_loglik_diff) <= LOGLIK_ATOL
    assert cmp.paired_comparison.acc_diff == 0 and cmp.paired_comparison.kl_ab_mean < 1e-8


def test_resps_and_filtered_resps_read_the_same(hellaswag, tmp_path):
    recs = _lines()
    only_resps = [{k: v for k, v in r.items() if k != "filtered_resps"} for r in recs]
    numbers = [{**{k: v for k, v in r.items() if k != "resps"},
                "filtered_resps": [[float(x[0]), False] for x in r["filtered_resps"]]} for r in recs]
    want = import_lm_eval(SAMPLES, dataset=hellaswag)
    for recs_ in (only_resps, numbers):
        got = import_lm_eval(_write(tmp_path / "samples_hellaswag_x.jsonl", recs_), dataset=hellaswag)
        np.testing.assert_array_equal(got.loglik(), want.loglik())
        assert [r.pred_norm for r in got.items] == [r.pred_norm for r in want.items]
    # the file's lines in another order, and lines without lm-eval's preprocessed fields: same items
    raw_docs = [{**r, "doc": {k: v for k, v in r["doc"].items() if k not in ("query", "choices", "gold")}}
                for r in reversed(recs)]
    got = import_lm_eval(_write(tmp_path / "samples_hellaswag_y.jsonl", raw_docs), dataset=hellaswag, name="mine")
    assert got.model["name"] == "mine" and got.to_dict()["items"] == want.to_dict()["items"]


def _bad_cases() -> list[tuple[str, object, str]]:
    """(case, how line 3 (index 2) of the fixture is changed, or the whole file, expected message)."""
    def doc(**kw):
        return lambda r: {**r, "doc": {**r["doc"], **kw}}
    return [
        ("not JSON", lambda r: '{"doc_id": 2,', "line 3: not JSON"),
        ("a list", lambda r: "[1, 2]", "line 3: a JSON list, not an object"),
        ("another task", doc(choices=["yes", "no"]), "line 3: the doc .* no four HellaSwag endings"),
        ("no doc", lambda r: {k: v for k, v in r.items() if k != "doc"}, "line 3: no doc field"),
        ("no acc_norm", lambda r: {k: v for k, v in r.items() if k != "acc_norm"}, "line 3: no acc_norm field"),
        ("no responses", lambda r: {k: v for k, v in r.items() if k not in ("resps", "filtered_resps")},
         "line 3: no filtered_resps field"),
        ("doc_id past the split", lambda r: {**r, "doc_id": 10042}, r"line 3: doc_id 10042 is not a validation row"),
        ("doc_id a string", lambda r: {**r, "doc_id": "2"}, "line 3: doc_id '2' is not"),
        ("doc_id twice", lambda r: _lines()[1], "line 3: doc_id 1 appears twice"),
        ("an ending changed", doc(choices=["x", "y", "z", "w"]), "line 3: doc_id 2's query, choices or gold differ"),
        ("another gold", doc(gold=0), "line 3: .* differ"),
        ("another target", lambda r: {**r, "target": "0"}, "line 3: .* differ"),
        ("raw ctx changed", lambda r: {**r, "doc": {**{k: v for k, v in r["doc"].items() if k != "query"},
                                                    "ctx_a": "Someone else."}}, "line 3: .* ctx, endings or label differ"),
        ("NaN loglik", lambda r: {**r, "filtered_resps": [["nan", "False"]] + r["filtered_resps"][1:]},
         r"line 3: filtered_resps\[0\] has log-likelihood 'nan', not a finite number"),
        ("-inf loglik in resps", lambda r: {**{k: v for k, v in r.items() if k != "filtered_resps"},
                                            "resps": r["resps"][:3] + [[["-inf", "False"]]]},
         r"line 3: resps\[3\] has log-likelihood '-inf'"),
        ("3 responses", lambda r: {**r, "filtered_resps": r["filtered_resps"][:3]}, "line 3: filtered_resps holds 3"),
        ("acc flipped", lambda r: {**r, "acc": 1.0 - r["acc"]}, "line 3: acc is .* do not give its own acc"),
        ("acc_norm not 0/1", lambda r: {**r, "acc_norm": 0.5}, "line 3: acc_norm is 0.5"),
    ]


@pytest.mark.parametrize("case,change,message", _bad_cases(), ids=[c[0] for c in _bad_cases()])
def test_malformed_line_is_an_input_error_naming_it(hellaswag, tmp_path, case, change, message):
    recs: list = _lines()
    recs[2] = change(recs[2])
    with pytest.raises(InputError, match=message) as e:
        import_lm_eval(_write(tmp_path / "samples_hellaswag_bad.jsonl", recs), dataset=hellaswag)
    assert "\n" not in str(e.value)


def test_empty_unreadable_and_odd_files(hellaswag, tmp_path):
    for body, message in [(b"", "is empty"), (b"\n\n", "is empty"), (b"\xff\xfe{}\n", "line 1: not UTF-8"),
                          (SAMPLES.read_bytes() + b"x" * ((1 << 20) + 1), "line 9: longer than")]:
        (tmp_path / "s.jsonl").write_bytes(body)
        with pytest.raises(InputError, match=message):
            import_lm_eval(tmp_path / "s.jsonl", dataset=hellaswag)
    for p in (tmp_path / "missing.jsonl", tmp_path):
        with pytest.raises(InputError, match="cannot read lm-eval samples"):
            import_lm_eval(p, dataset=hellaswag)


def test_cli_import_and_compare(smol, tmp_path):
    # the real entry point, JSON on stdout by default
    run = cli(["import-lm-eval", str(SAMPLES)])
    assert run.rc == 0, run.err
    out = json.loads(run.out)
    assert out["n"] == 8 and out["results"]["acc"] == 0.25 and "compare" not in out
    assert out["model"]["sha256"] and len(out["items"]) == 8 and "acc 0.2500" in run.err
    # --compare in this process, with the session's SmolLM2 (no second load)
    run = cli_in_process(["import-lm-eval", str(SAMPLES), "--compare", "smollm2-135m", "--device", "cpu",
                          "--dtype", "float32", "--store", str(tmp_path / "s.sqlite"), "--out",
                          str(tmp_path / "o.json")], fresh_models=False)
    assert run.rc == 0, run.err
    c = json.loads((tmp_path / "o.json").read_text())["compare"]
    assert c["model"]["model"]["name"] == "smollm2-135m" and c["same_pred"] == 8
    assert c["max_abs_loglik_diff_all"] <= LOGLIK_ATOL and len(c["max_abs_loglik_diff"]) == 8
    assert set(c["paired_comparison"]) >= {"acc_diff_ci95", "mcnemar_p", "kl_ab"}
    # bad input: exit 2, one line
    (tmp_path / "bad.jsonl").write_text("{}\n")
    run = cli_in_process(["import-lm-eval", str(tmp_path / "bad.jsonl")], fresh_models=False)
    assert run.rc == 2 and run.err.count("\n") == 1 and "bad.jsonl line 1: no doc_id" in run.err
