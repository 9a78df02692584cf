"""MAUVE: parity with mauve-text, the re-sliceable steps, bad input, end to end on the bundle."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from evalcore import runtime

from evalcore.errors import InputError
from evalcore.metrics import mauve as M
from evalcore.runs.mauve import MauveLab, run_mauve
from evalcore.scoring import Decoding

ROOT = Path(__file__).resolve().parents[2]


def _feats(seed=0, n_p=300, n_q=250, d=48, shift=0.4):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n_p, d)), rng.normal(size=(n_q, d)) + shift


@pytest.mark.parametrize("k", ["auto", 7, 30])
def test_parity_with_mauve_text(k):
    import mauve

    p, q = _feats()
    ref = mauve.compute_mauve(p_features=p, q_features=q, num_buckets=k, verbose=False)
    ours = M.compute_mauve(p, q, k=k)
    assert ours.mauve == pytest.approx(ref.mauve, abs=1e-3)
    assert ours.frontier_integral == pytest.approx(ref.frontier_integral, abs=1e-3)
    assert ours.mauve_star == pytest.approx(ref.mauve_star, abs=1e-3)
    # histograms equal up to cluster relabelling: compare as sorted (p, q) pairs
    a = np.array(sorted(zip(ours.p_hist, ours.q_hist)))
    b = np.array(sorted(zip(ref.p_hist, ref.q_hist)))
    np.testing.assert_allclose(a, b, atol=1e-9)
    assert ours.num_buckets == ref.num_buckets


@pytest.mark.parametrize("n,d", [(600, 64), (30, 64)])
def test_reduce_equals_sklearn_full_svd_pca(n, d):
    """reduce() solves the PCA through the covariance when texts >= dimensions; the projection
    equals sklearn's default (LAPACK SVD) PCA, as mauve-text runs it."""
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import normalize

    p, q = _feats(seed=3, n_p=n, n_q=n, d=d)
    red = M.reduce(p, q)
    data = normalize(np.vstack([q, p]), norm="l2", axis=1)
    pca = PCA(n_components=None, whiten=False, random_state=26, svd_solver="full").fit(data)
    k = int(np.argmax(np.cumsum(pca.explained_variance_ratio_) >= 0.9)) + 1
    assert red.n_components == k
    np.testing.assert_allclose(red.data, pca.transform(data)[:, :k], atol=1e-6)


def test_curve_math_hand_checked():
    p, q = np.array([0.5, 0.5]), np.array([0.501, 0.499])
    assert M.mauve_area(M.divergence_curve(p, q)) > 0.99
    far = M.mauve_area(M.divergence_curve(np.array([1.0, 0.0]), np.array([0.0, 1.0])))
    assert far < 0.05
    kq, kp = M.mixture_point([1.0, 0.0], [0.0, 1.0], 0.5)
    assert kq == pytest.approx(np.log(2)) and kp == pytest.approx(np.log(2))
    assert M.auto_k(2000, 500) == 50 and M.max_k(2000, 500) == 250


def test_lab_reuses_steps_and_alpha_is_cheap():
    p, q = _feats(1)
    lab = MauveLab.from_features(p, q)
    r = lab.result(10)
    assert lab.result(10) is r  # k-means ran once for this k
    pt = lab.point(0.3, 10)
    assert np.isclose(sum(pt["mixture"]), 1) and pt["kl_p_r"] >= 0 and 0 < pt["x"] <= 1
    sw = lab.sweep([5, 10, 20])
    assert [s["k"] for s in sw] == [5, 10, 20] and sw[1]["mauve"] == r.mauve
    spread = lab.seeds(10, seeds=[0, 1, 2])
    assert len(spread["values"]) == 3 and spread["std"] >= 0
    lo, hi = lab.bootstrap(10, n_boot=100)
    assert 0 <= lo <= hi <= 1
    pl, ql = lab.labels(10)
    assert len(pl) == 300 and len(ql) == 250 and pl.max() < 10


def test_bad_input():
    p, q = _feats()
    with pytest.raises(InputError, match="need 2..125 clusters"):
        M.compute_mauve(p, q, k=1)
    with pytest.raises(InputError, match="need 2..2 clusters for 5 \\+ 5 texts"):
        M.compute_mauve(p[:5], q[:5], k=50)
    bad = p.copy()
    bad[3, 2] = np.nan
    with pytest.raises(InputError, match="NaN or inf"):
        M.compute_mauve(bad, q)
    with pytest.raises(InputError, match="different dimensions"):
        M.compute_mauve(p, q[:, :10])
    with pytest.raises(InputError, match="strictly between 0 and 1"):
        M.mixture([0.5, 0.5], [0.5, 0.5], 1.0)
    with pytest.raises(InputError, match="2-D"):
        M.compute_mauve(np.zeros(5), q)


def test_end_to_end_on_bundle(smol, hellaswag, store):
    from evalcore.models import load_embedder
    from evalcore.runs.mauve import features

    emb = load_embedder(device="cpu")
    dec = Decoding(seed=0)
    idx = list(range(40, 80))
    lab = run_mauve(smol, emb, idx, dec, dataset=hellaswag, store=store)
    res = lab.result("auto")
    assert 0 < res.mauve <= 1 and len(lab.q_texts) == 40 and res.num_buckets == 4  # "auto": n / 10
    # human text split in two halves (A: items 0-39, B: items 40-79) is closer to itself than
    # A is to the model's continuations of B's contexts (same contexts as B, so topics match)
    gold = [it.choices[it.label] for it in hellaswag.items(list(range(80)))]
    fa, fb = features(emb, gold[:40], kind="minilm", store=store), features(emb, gold[40:], kind="minilm", store=store)
    fq = features(emb, lab.q_texts, kind="minilm", store=store)
    human = MauveLab.from_features(fa, fb).seeds(4, seeds=[0, 1, 2, 3, 4])["mean"]
    model = MauveLab.from_features(fa, fq).seeds(4, seeds=[0, 1, 2, 3, 4])["mean"]
    print("human halves", human, "human vs model", model)
    assert human > model, (human, model)
    n = store.count("generate")
    again = run_mauve(smol, emb, idx, dec, dataset=hellaswag, store=store)
    assert store.count("generate") == n == 40 and again.q_texts == lab.q_texts
    assert again.result("auto").mauve == res.mauve


@pytest.mark.slow  # a CLI run
def test_cli_from_features(tmp_path):
    """The CLI's JSON from features and its k check, run in this process (clirun.cli_in_process:
    exit status, stdout and stderr as a child's; no model is involved)."""
    from tests.support.clirun import cli_in_process

    p, q = _feats(2)
    np.save(tmp_path / "p.npy", p)
    np.save(tmp_path / "q.npy", q)
    out = tmp_path / "m.json"
    r = cli_in_process(["mauve", "--p-features", str(tmp_path / "p.npy"), "--q-features", str(tmp_path / "q.npy"),
                        "--k", "12", "--estimators", "--out", str(out)])
    assert r.rc == 0, r.err
    d = json.loads(out.read_text())
    for key in ("mauve", "mauve_star", "frontier_integral", "num_buckets", "p_hist", "q_hist", "divergence_curve",
                "kl_pq", "kl_qp", "settings"):
        assert key in d
    assert d["num_buckets"] == 12 and d["mauve"] == pytest.approx(M.compute_mauve(p, q, k=12).mauve)
    # --estimators: the quantized one is MAUVE itself; kNN and the classifier as metrics.frontier computes them
    from evalcore.metrics import frontier

    est = d["estimators"]
    assert est["quantized"]["mauve"] == d["mauve"]
    assert est["knn"]["mauve"] == pytest.approx(frontier.mauve_knn(p, q).mauve)
    assert est["classifier"]["mauve"] == pytest.approx(frontier.mauve_classifier(p, q).mauve)
    assert d["divergences"]["kl_pq"] == pytest.approx(d["kl_pq"]) and 0 <= d["divergences"]["tv"] <= 1
    r = cli_in_process(["mauve", "--p-features", str(tmp_path / "p.npy"), "--q-features", str(tmp_path / "q.npy"),
                        "--k", "1", "--out", str(out)])
    assert r.rc == 2 and "need 2.." in r.err


def test_bf16_featurizer_stays_close_to_float32(smol, hellaswag):
    """--featurizer-dtype bfloat16: last-token features within a few percent of float32's, and
    stored under a different identity (dtype), so the two never mix in the cache."""
    from evalcore.models import load_model
    from evalcore.scoring import featurize

    b16 = load_model("smollm2-135m", device="cpu", dtype="bfloat16")
    texts = [it.gold_text for it in hellaswag.items(list(range(8)))]
    f32, fb = featurize(smol, texts, kind="causal"), featurize(b16, texts, kind="causal")
    rel = np.abs(f32 - fb).max() / np.abs(f32).max()
    assert 0 < rel < 0.05
    assert b16.identity() != smol.identity()


def test_faiss_blas_runs_this_cpus_kernels_and_env_is_restored():
    """faiss's bundled OpenBLAS is imported with this CPU's kernel family (it falls back to a
    generic one on CPUs it does not know), only for that import, and clusters the same."""
    code = (
        "import os, numpy as np\n"
        "from evalcore.metrics import mauve as M\n"
        "before = dict(os.environ)\n"
        "from evalcore.runtime import import_faiss; import_faiss()\n"
        "assert dict(os.environ) == before\n"
        "x = np.random.default_rng(0).normal(size=(600, 32)).astype(np.float32)\n"
        "np.save(os.environ['OUT'], M.Quantizer(12, random_state=3).fit(x).labels_)\n"
    )
    runs = {}
    for name, extra in [("ours", {}), ("generic", {"OPENBLAS_CORETYPE": "Prescott"})]:
        env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_CORETYPE"}
        env.update(extra, OPENBLAS_VERBOSE="2", OUT=f"/tmp/evalcore-faiss-{os.getpid()}-{name}.npy")
        r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        runs[name] = (r.stdout + r.stderr, np.load(env["OUT"]))
        os.unlink(env["OUT"])
    core = runtime._openblas_coretype()
    if core is not None:  # every OpenBLAS loaded in that process ran a named kernel family, none the generic one
        cores = [ln for ln in runs["ours"][0].splitlines() if ln.startswith("Core")]
        assert cores and all("not found" not in c and "Prescott" not in c for c in cores), cores
    assert "Prescott" in runs["generic"][0]  # the user's own setting is respected
    assert (runs["ours"][1] == runs["generic"][1]).all()
