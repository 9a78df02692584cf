"""MAUVE differences and curves with the store: fits reused, generations grown, the CLI flags."""
from __future__ import annotations

import json

import numpy as np
import pytest

from evalcore.errors import InputError
from evalcore.metrics import mauve_stats as S
from evalcore.runs import mauve_stats as R
from evalcore.scoring import Decoding
from tests.support.bad_inputs import MODEL, BadInput, _args, _features, _gauss, run_bad_input

DEC = Decoding(seed=25)  # the CLI's default decoding (--seed 25): the CLI test reads these texts back


def _sides(n=32, d=16, shift=1.0, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)), rng.normal(size=(n, d)), rng.normal(size=(n, d)) + shift


def _recorder():
    calls = []
    return calls, lambda done, total: calls.append((done, total))


def test_replicates_come_from_the_store_and_more_compute_only_the_new(store):
    p, qa, qb = _sides()
    calls, progress = _recorder()
    first = R.paired_difference(p, qa, qb, n_boot=10, store=store, progress=progress)
    assert calls[0] == (0, 22) and calls[-1] == (22, 22) and store.count("mauve_fit") == 22
    pure = S.paired_bootstrap(p, qa, qb, n_boot=10)  # the same numbers without a store
    assert (first.mauve_a, first.low, first.high, first.replicates_b) == (pure.mauve_a, pure.low, pure.high,
                                                                          pure.replicates_b)
    calls, progress = _recorder()
    again = R.paired_difference(p, qa, qb, n_boot=10, store=store, progress=progress)
    assert calls == [(22, 22)] and again == first  # nothing computed
    calls, progress = _recorder()
    more = R.paired_difference(p, qa, qb, n_boot=15, store=store, progress=progress)
    assert calls[0] == (22, 32) and store.count("mauve_fit") == 32 and more.replicates_a[:10] == first.replicates_a


def test_a_killed_run_resumes_from_its_stored_fits(store):
    p, qa, qb = _sides(seed=1)

    def die_at_7(done, total):
        if done == 7:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        R.paired_difference(p, qa, qb, n_boot=10, store=store, progress=die_at_7)
    calls, progress = _recorder()
    R.paired_difference(p, qa, qb, n_boot=10, store=store, progress=progress)
    assert calls[0] == (7, 22) and store.count("mauve_fit") == 22


def test_curves_on_features_share_fits_with_the_difference(store):
    p, qa, qb = _sides()
    config = S.CurveConfig(n_seeds=3, n_boot=10)
    cv = R.sample_size_curves(p, {"A": qa, "B": qb}, [32, 8, 16], config=config, store=store)
    assert cv.ns == [8, 16, 32] and cv.k_fixed == 4
    assert [pt.k for pt in cv.curve("A").points] == [2, 2, 3] and [pt.k for pt in cv.curve("B", "fixed").points] == [4] * 3
    assert store.count("mauve_fit") == 2 * 3 * 2 * (3 + 10)  # models x n x (auto k, fixed k) x (seeds + replicates)
    a, b = cv.curve("A").points[-1], cv.curve("B").points[-1]
    assert a.boot_low > b.boot_high and cv.separation_n["auto"] is not None
    assert cv.separation_n["auto"] == S.separation_n(cv.curve("A").points, cv.curve("B").points)
    assert json.loads(json.dumps(cv.to_dict()))["curves"][0]["points"][0]["n"] == 8
    # the difference at n = 32, k = 3 is the curve's seed-27 fits and replicates: nothing new
    calls, progress = _recorder()
    d = R.paired_difference(p, qa, qb, k=3, n_boot=10, store=store, progress=progress)
    assert calls == [(22, 22)] and d.mauve_a == a.mauve and d.replicates_b == b.boot_values
    fixed = R.sample_size_curves(p, {"A": qa, "B": qb}, [8, 16, 32],
                                 config=S.CurveConfig(n_seeds=3, n_boot=50, band="fixed"), store=store)
    assert store.count("mauve_fit") == 156 and fixed.curve("A").points[-1].mauve == a.mauve
    assert len(fixed.curve("A").points[-1].boot_values) == 50
    same = R.sample_size_curves(p, {"A": qa, "A again": qa}, [8, 16], config=config, store=store)
    assert same.separation_n == {"auto": None, "fixed": None}


@pytest.fixture(scope="module")
def shared_store(tmp_path_factory):
    """One store for the model tests of this module: generations made once, then read."""
    from evalcore.store import Store

    s = Store(tmp_path_factory.mktemp("mauve_stats") / "results.sqlite")
    yield s
    s.close()


def test_curve_grows_only_the_missing_generations(smol, hellaswag, shared_store):
    from evalcore.models import load_embedder

    emb, store = load_embedder(device="cpu"), shared_store
    config = S.CurveConfig(n_seeds=2, n_boot=5)
    small = R.run_mauve_curves([smol], emb, [8, 12], DEC, config=config, dataset=hellaswag, store=store)
    assert store.count("generate") == 12 and store.count("features") == 24  # 12 human + 12 model texts
    calls, progress = _recorder()
    big = R.run_mauve_curves([smol], emb, [8, 12, 16], DEC, config=config, dataset=hellaswag, store=store,
                             progress=progress)
    assert store.count("generate") == 16 and store.count("features") == 32
    assert calls[0] == (12, 16)  # generation: 12 read back, 4 generated
    assert big.curve(smol.spec.name).points[:2] == small.curve(smol.spec.name).points
    assert all(0 < pt.boot_low <= pt.boot_high <= 1 for pt in big.curve(smol.spec.name, "fixed").points)


def test_difference_of_two_loaded_models(smol, hellaswag, shared_store):
    """SmolLM2 at float32 against itself at bfloat16 (two identities, so two sets of texts)."""
    from evalcore.models import load_embedder, load_model
    from evalcore.runs.mauve import run_mauve

    emb, b16 = load_embedder(device="cpu"), load_model("smollm2-135m", device="cpu", dtype="bfloat16")
    d = R.run_mauve_difference(smol, b16, emb, range(12), DEC, n_boot=10, dataset=hellaswag, store=shared_store)
    assert d.n == 12 and d.k == 2 and len(d.replicates_a) == len(d.replicates_b) == 10 and d.low <= d.high
    assert d.verdict == S.verdict(d.low, d.high)
    assert d.mauve_a == run_mauve(smol, emb, range(12), DEC, dataset=hellaswag, store=shared_store).result(2).mauve
    with pytest.raises(InputError, match="compare two different models"):
        R.run_mauve_difference(smol, smol, emb, range(12), DEC, store=shared_store)


@pytest.mark.slow  # a CLI run
def test_cli_n_curve(smol, shared_store, tmp_path):
    """--n-curve in this process with the session's model, on the store the texts are already in."""
    from tests.support.clirun import cli_in_process

    out = tmp_path / "m.json"
    r = cli_in_process(["mauve", "--model", MODEL, "--limit", "16", "--n-curve", "8,16", "--n-boot", "5",
                        "--store", str(shared_store.path), "--out", str(out)], fresh_models=False)
    assert r.rc == 0, r.err
    d = json.loads(out.read_text())
    assert "MAUVE against n for n in 8,16" in r.out and "difference" not in d
    cv = d["n_curve"]
    assert cv["ns"] == [8, 16] and cv["k_fixed"] == 4 and [c["k_mode"] for c in cv["curves"]] == ["auto", "fixed"]
    assert cv["curves"][0]["points"][1]["mauve"] == pytest.approx(d["mauve"])  # n = 16, k = auto: the main MAUVE


BAD = [
    BadInput("--n-curve 2,50", _args("mauve", "--model", MODEL, "--n-curve", "2,50", "--out", "{d}/o.json"),
             "need an integer >= 4"),
    BadInput("--n-curve past the data", _args("mauve", "--model", MODEL, "--n-curve", "25,20000", "--out",
                                              "{d}/o.json"), "only 10042 contexts"),
    BadInput("--n-curve a,b", _args("mauve", "--model", MODEL, "--n-curve", "a,b", "--out", "{d}/o.json"),
             "comma-separated integers"),
    BadInput("--n-boot 1", _args("mauve", "--model", MODEL, "--compare", "gemma3-270m", "--n-boot", "1", "--out",
                                 "{d}/o.json"), "out of range"),
    BadInput("--n-boot alone", _args("mauve", "--model", MODEL, "--n-boot", "50", "--out", "{d}/o.json"),
             "only applies with --compare"),
    BadInput("--curve-band alone", _args("mauve", "--model", MODEL, "--compare", "gemma3-270m", "--curve-band",
                                         "fixed", "--out", "{d}/o.json"), "only apply with --n-curve"),
    BadInput("--compare itself", _args("mauve", "--model", MODEL, "--compare", MODEL, "--out", "{d}/o.json"),
             "compare two different models"),
    BadInput("--compare unknown", _args("mauve", "--model", MODEL, "--compare", "no-such-model", "--out",
                                        "{d}/o.json"), "unknown model"),
    BadInput("--curve-k 13 for n 25", _args("mauve", "--model", MODEL, "--n-curve", "25,100", "--curve-k", "13",
                                            "--out", "{d}/o.json"), "fixed k=13: need 2..12"),
    BadInput("--compare on features", _features(_gauss(40, 8), _gauss(40, 8, seed=1), "--compare", "gemma3-270m"),
             "need --model"),
]


@pytest.mark.slow  # CLI runs (in this process, no model)
@pytest.mark.parametrize("case", BAD, ids=[c.name for c in BAD])
def test_bad_stats_flags_are_one_line_exit_2(case, tmp_path):
    run, problem = run_bad_input(case, tmp_path, in_process=True)
    assert problem is None, f"{case.name}: {problem}\nstderr: {run.err}"
