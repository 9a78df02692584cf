"""MAUVE's divergence frontier without quantization, and more divergences between histograms.

Pillutla et al., JMLR 2023 ("MAUVE Scores for Generative Models: Theory and Practice") estimate
the frontier from samples in three ways; all three give a curve in `mauve.divergence_curve`'s
format, so `mauve.mauve_area` turns any of them into MAUVE:

    quantized    PCA -> k-means -> histograms -> plug-in KLs      (mauve.compute_mauve)
    knn          density ratio r = dP/dQ from neighbour counts    (knn_density_ratio)
    classifier   r from a cross-fitted P-vs-Q classifier          (classifier_density_ratio)

From r at the sample points, with R_λ = λP + (1-λ)Q (frontier_from_ratios):

    KL(P‖R_λ) = E_P[ log( r / (λr + 1 - λ) ) ]     (mean over the P points)
    KL(Q‖R_λ) = E_Q[ -log( λr + 1 - λ ) ]          (mean over the Q points)

Each expectation is taken under its own sample, so its integrand is bounded above (by log 1/λ
and log 1/(1-λ)); the equivalent E_Q form of KL(P‖R_λ), E_Q[r log(r / (λr + 1 - λ))], weights
by r itself and is dominated by the few Q points where r̂ is largest, so it is not used.

`divergences` adds KL both ways, Jensen-Shannon and total variation on a pair of histograms.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from evalcore.errors import InputError
from evalcore.metrics import mauve as M
from evalcore.metrics.kl import js, kl

Array = npt.NDArray[np.float64]


# ----------------------------------------------------------------------------- histograms

@dataclass(frozen=True)
class Divergences:
    """Divergences between two histograms P and Q, in nats."""

    kl_pq: float  # KL(P‖Q) on add-`smoothing` counts, renormalised (finite when smoothing > 0)
    kl_qp: float  # KL(Q‖P) on the same smoothed histograms
    js: float  # Jensen-Shannon ½KL(P‖M) + ½KL(Q‖M), M = (P+Q)/2, natural log, unsmoothed; <= log 2
    tv: float  # total variation ½Σ|p - q| on the unsmoothed histograms; in [0, 1]
    smoothing: float  # what was added to every entry before the two KLs

    def to_dict(self) -> dict[str, Any]:
        """The divergences as a JSON-ready dict."""
        return asdict(self)


def _histogram(x: npt.ArrayLike, name: str) -> Array:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 1 or a.size < 1:
        raise InputError(f"{name} must be a 1-D histogram [k], got shape {a.shape}")
    if not np.all(np.isfinite(a)) or np.any(a < 0):
        raise InputError(f"{name} has negative, NaN or infinite entries; give counts or probabilities >= 0")
    if a.sum() <= 0:
        raise InputError(f"{name} sums to 0: each histogram needs at least one count")
    return a


def divergences(p_hist: npt.ArrayLike, q_hist: npt.ArrayLike, *, smoothing: float = 0.5) -> Divergences:
    """KL(P‖Q), KL(Q‖P), Jensen-Shannon and total variation between two histograms, in nats.

    Parameters
    ----------
    p_hist, q_hist : [k] counts or probabilities (each side is normalised here).
    smoothing : added to every entry before the KLs (0.5 on counts is the Krichevsky-Trofimov
        convention of `mauve.mauve_from_counts`' kl_pq / kl_qp). It is added to the entries as
        given: on probabilities pass a small value, or 0 (a KL is then +inf where one side is 0
        and the other is not).

    Returns
    -------
    Divergences. JS and TV use the unsmoothed histograms (both are finite anyway).
    Matches scipy: `entropy(p_s, q_s)` for the KLs, `jensenshannon(p, q) ** 2` for JS.
    """
    pc, qc = _histogram(p_hist, "p_hist"), _histogram(q_hist, "q_hist")
    if pc.shape != qc.shape:
        raise InputError(f"p_hist has {pc.size} bins and q_hist {qc.size}; both need the same k")
    if not (math.isfinite(smoothing) and smoothing >= 0):
        raise InputError(f"smoothing={smoothing}: must be a finite number >= 0 (0.5 on counts)")
    p, q = pc / pc.sum(), qc / qc.sum()
    ps, qs = (pc + smoothing) / (pc + smoothing).sum(), (qc + smoothing) / (qc + smoothing).sum()
    return Divergences(float(kl(ps, qs)), float(kl(qs, ps)), float(js(p, q)), float(0.5 * np.abs(p - q).sum()),
                       float(smoothing))


# ----------------------------------------------------------------------------- density ratios

def _two_samples(p_feats: npt.ArrayLike, q_feats: npt.ArrayLike, least: int) -> tuple[Array, Array]:
    p, q = M._check_features(p_feats, "P"), M._check_features(q_feats, "Q")
    if p.shape[1] != q.shape[1]:
        raise InputError(f"P and Q features have different dimensions ({p.shape[1]} vs {q.shape[1]}); "
                         "featurize both sides with the same model")
    if min(len(p), len(q)) < least:
        raise InputError(f"{len(p)} P and {len(q)} Q points: need at least {least} on each side")
    return p, q


def default_n_neighbors(n_p: int, n_q: int) -> int:
    """The neighbour count `knn_density_ratio` uses by default: round(√(n_p + n_q)), at least 2.

    It must grow with n for the estimate to converge (a fixed count keeps the variance of r̂, and
    so the Jensen bias of log r̂, from vanishing) but slower than n (or the neighbourhoods stop
    being local).
    """
    return max(2, int(round(math.sqrt(n_p + n_q))))


def knn_density_ratio(p_feats: npt.ArrayLike, q_feats: npt.ArrayLike, *, n_neighbors: int | None = None,
                      zero_count: float = 0.5) -> tuple[Array, Array]:
    """Density ratio r = dP/dQ at every sample point, from neighbour counts.

    For each point of the union, among its `n_neighbors` nearest neighbours in the union (Euclidean,
    the point itself excluded) count k_P points of P and k_Q of Q; then

        r̂ = ((k_P + z) / n_P') / ((k_Q + z) / n_Q'),

    where n_P', n_Q' are the P and Q points the search could return (the point's own side has one
    fewer) and z = `zero_count` is added to both counts (add-½ by default), so r̂ is finite and > 0
    when one side has no neighbour. Set `zero_count=0` only if every neighbourhood holds both.

    Parameters
    ----------
    p_feats [n_p, d], q_feats [n_q, d] : samples of P and Q.
    n_neighbors : neighbours per point; default `default_n_neighbors` (√(n_p + n_q)).

    Returns
    -------
    (r at the P points [n_p], r at the Q points [n_q]).
    """
    p, q = _two_samples(p_feats, q_feats, 2)
    n_p, n_q = len(p), len(q)
    nn = default_n_neighbors(n_p, n_q) if n_neighbors is None else n_neighbors
    if isinstance(nn, bool) or not isinstance(nn, (int, np.integer)) or not 1 <= nn <= n_p + n_q - 1:
        raise InputError(f"n_neighbors={nn}: need 1..{n_p + n_q - 1} for {n_p} + {n_q} points; "
                         f"try {default_n_neighbors(n_p, n_q)}")
    if not (math.isfinite(zero_count) and zero_count >= 0):
        raise InputError(f"zero_count={zero_count}: must be a finite number >= 0 (0.5 is add-half)")
    from sklearn.neighbors import NearestNeighbors

    x = np.vstack([p, q])
    idx = NearestNeighbors(n_neighbors=nn + 1).fit(x).kneighbors(x, return_distance=False)  # [n, nn + 1]
    # Drop each point itself; with duplicate points it need not come first, and if it is missing
    # from its own list (more than nn + 1 copies) drop the farthest neighbour instead.
    self_hit = idx == np.arange(len(x))[:, None]
    self_hit[~self_hit.any(axis=1), -1] = True
    keep = idx[~self_hit].reshape(len(x), nn)  # [n, nn]
    k_p = (keep < n_p).sum(axis=1).astype(np.float64)
    k_q = nn - k_p
    is_p = np.arange(len(x)) < n_p
    avail_p, avail_q = n_p - is_p, n_q - ~is_p  # candidates on each side, the point itself excluded
    r = ((k_p + zero_count) / avail_p) / ((k_q + zero_count) / avail_q)
    return r[:n_p], r[n_p:]


CLASSIFIERS = ("kernel", "linear")  # `classifier_density_ratio`'s models


def _class_probability(model: str, x_fit: Array, y_fit: Array, x_score: Array, *, c_reg: float,
                       n_components: int, random_state: int) -> Array:
    """P(from P | x) at x_score [n] from logistic regression fitted on (x_fit, y_fit), on standardised
    features ("linear") or on RBF features ("kernel": Nystroem, bandwidth by the median heuristic)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(x_fit)
    z_fit, z_score = scaler.transform(x_fit), scaler.transform(x_score)
    if model == "kernel":
        from sklearn.kernel_approximation import Nystroem

        rng = np.random.default_rng(random_state)
        pairs = rng.integers(0, len(z_fit), size=(min(2000, len(z_fit) ** 2), 2))
        sq = ((z_fit[pairs[:, 0]] - z_fit[pairs[:, 1]]) ** 2).sum(axis=1)
        median = float(np.median(sq[sq > 0])) if np.any(sq > 0) else 1.0
        rbf = Nystroem(gamma=1.0 / median, n_components=min(n_components, len(z_fit)), random_state=random_state)
        z_fit, z_score = rbf.fit_transform(z_fit), rbf.transform(z_score)
    clf = LogisticRegression(C=c_reg, solver="newton-cholesky", max_iter=200).fit(z_fit, y_fit)
    prob: Array = clf.predict_proba(z_score)[:, 1]
    return prob


def classifier_density_ratio(p_feats: npt.ArrayLike, q_feats: npt.ArrayLike, *, random_state: int = 0,
                             n_folds: int = 5, model: str = "kernel", C: float = 10.0, n_components: int = 100,
                             clip: float = 1e-6) -> tuple[Array, Array]:
    """Density ratio r = dP/dQ at every sample point, from a cross-fitted P-vs-Q classifier.

    The points are split into `n_folds` stratified folds; each fold is scored by a classifier
    fitted on the other folds only. With c = P(from P | x) and n_P, n_Q the fitting folds' counts,

        r̂ = c / (1 - c) · n_Q / n_P,     c clipped to [clip, 1 - clip].

    Parameters
    ----------
    p_feats [n_p, d], q_feats [n_q, d] : samples of P and Q.
    model : "kernel" (default): logistic regression on `n_components` Nystroem RBF features of the
        standardised data, γ = 1 / median squared distance between points, so log r̂ can bend
        to a mixture's; "linear": logistic regression on the standardised features, right only
        when log dP/dQ is linear in x (one 1-D mixture against a Gaussian gives r̂ ≈ 1).
        An sklearn MLP was no more accurate than "kernel" on the Gaussian-mixture tests and
        an order of magnitude slower; early stopping left it nearly constant on the 1-D pair.
    C : inverse L2 penalty of the logistic regression (sklearn's C; the loss sums over points,
        so the penalty's weight falls as n grows). Solved by Newton-Cholesky: the optimum is
        unique, and with ~100 features it takes a few Newton steps where lbfgs takes ~50.
    random_state : seeds the folds, the Nystroem landmarks and the bandwidth's sample of pairs.

    Returns
    -------
    (r at the P points [n_p], r at the Q points [n_q]).
    """
    if isinstance(n_folds, bool) or not isinstance(n_folds, int) or n_folds < 2:
        raise InputError(f"n_folds={n_folds}: need an integer >= 2 (each point is scored by a model not fit on it)")
    p, q = _two_samples(p_feats, q_feats, n_folds)
    if model not in CLASSIFIERS:
        raise InputError(f"model={model!r}: use one of {', '.join(CLASSIFIERS)}")
    if not 0 < clip < 0.5:
        raise InputError(f"clip={clip}: must be in (0, 0.5), e.g. 1e-6")
    if not (math.isfinite(C) and C > 0) or n_components < 1:
        raise InputError(f"C={C}, n_components={n_components}: need C > 0 and n_components >= 1 (10, 100)")
    from sklearn.model_selection import StratifiedKFold

    x = np.vstack([p, q])
    y = np.r_[np.ones(len(p)), np.zeros(len(q))]
    r = np.empty(len(x))
    folds = StratifiedKFold(n_folds, shuffle=True, random_state=random_state)
    for fold, (fit, score) in enumerate(folds.split(x, y)):
        c = _class_probability(model, x[fit], y[fit], x[score], c_reg=C, n_components=n_components,
                               random_state=random_state + fold)
        c = np.clip(c, clip, 1 - clip)
        n_p_fit = float(y[fit].sum())
        r[score] = c / (1 - c) * (len(fit) - n_p_fit) / n_p_fit
    return r[: len(p)], r[len(p):]


# ----------------------------------------------------------------------------- frontier

def frontier_from_ratios(r_p: npt.ArrayLike, r_q: npt.ArrayLike, *, alphas: npt.ArrayLike | None = None,
                         scaling: float = 5.0, normalize: bool = True) -> Array:
    """The divergence curve from density ratios at the sample points (module docstring formulas).

    Parameters
    ----------
    r_p [n_p], r_q [n_q] : estimates of dP/dQ at the P and at the Q points (finite, > 0).
    alphas : λ values strictly inside (0, 1); default `mauve.alpha_grid()`.
    normalize : rescale r_q so that its mean is 1 and r_p so that the mean of 1/r_p is 1: the
        sample versions of E_Q[r] = 1 and E_P[1/r] = 1, which every true ratio meets. By Jensen
        both KL estimates are then >= 0, and the upward bias of ratios of small counts
        (E[1/X] > 1/E[X]) mostly cancels; without it, equal distributions can give every
        KL(Q‖R_λ) < 0, clipped to 0, a curve stuck at x = 1 and a MAUVE of 0.75.

    Returns
    -------
    [m + 2, 2] points exp(-c·(KL(Q‖R_λ), KL(P‖R_λ))), λ ascending, with the extreme points first
    and last: the format of `mauve.divergence_curve`, so `mauve.mauve_area` gives MAUVE.
    """
    M.check_scaling(scaling)
    rp, rq = np.asarray(r_p, dtype=np.float64), np.asarray(r_q, dtype=np.float64)
    for r, name in ((rp, "r_p"), (rq, "r_q")):
        if r.ndim != 1 or r.size < 1 or not np.all(np.isfinite(r)) or np.any(r <= 0):
            raise InputError(f"{name} must be a non-empty 1-D array of finite ratios > 0 "
                             "(smooth zero counts or clip classifier probabilities first)")
    a = np.sort(M.alpha_grid() if alphas is None else np.asarray(alphas, dtype=np.float64))
    if a.ndim != 1 or a.size < 1 or np.any(a <= 0) or np.any(a >= 1):
        raise InputError("alphas must be a 1-D array strictly inside (0, 1) (at 0 or 1 one KL is infinite)")
    if normalize:
        rp, rq = rp * np.mean(1.0 / rp), rq / np.mean(rq)
    lam = a[:, None]  # [m, 1]
    kl_p = (np.log(rp)[None] - np.log(lam * rp[None] + 1 - lam)).mean(axis=1)  # [m]
    kl_q = (-np.log(lam * rq[None] + 1 - lam)).mean(axis=1)  # [m]
    # Without `normalize` an estimate can dip below 0 where R_λ ≈ the sample's own law; a KL cannot.
    pts = np.vstack([[0.0, np.inf], np.maximum(np.stack([kl_q, kl_p], axis=1), 0.0), [np.inf, 0.0]])
    out: Array = np.exp(-scaling * pts)
    return out


# ----------------------------------------------------------------------------- MAUVE, three ways

@dataclass(frozen=True)
class FrontierEstimate:
    """MAUVE and its divergence curve from one estimator of the frontier."""

    mauve: float  # area under the curve (`mauve.mauve_area`)
    divergence_curve: list[list[float]]  # [m + 2, 2], exp(-c KL) coordinates, as `mauve.divergence_curve`
    estimator: str  # "quantized", "knn" or "classifier"
    settings: dict[str, Any] = field(default_factory=dict)  # the estimator's parameters, preprocessing, n_p, n_q

    def to_dict(self) -> dict[str, Any]:
        """The estimate as a JSON-ready dict."""
        return asdict(self)


PREPROCESS = ("mauve", "none")  # the estimators' `preprocess` choices


def _prepared(p_feats: npt.ArrayLike, q_feats: npt.ArrayLike, preprocess: str, explained_variance: float,
              seed: int = 25) -> tuple[Array, Array, dict[str, Any]]:
    """The features each estimator sees: mauve's L2-normalisation + PCA (`mauve.reduce`), or as given."""
    if preprocess == "mauve":
        red = M.reduce(p_feats, q_feats, explained_variance=explained_variance, seed=seed)
        data = red.data.astype(np.float64)
        return data[red.n_q:], data[: red.n_q], {"preprocess": "mauve", "explained_variance": explained_variance,
                                                  "n_components": red.n_components}
    if preprocess == "none":
        p, q = _two_samples(p_feats, q_feats, 2)
        return p, q, {"preprocess": "none"}
    raise InputError(f"preprocess={preprocess!r}: use 'mauve' (L2-normalise + PCA, as mauve-text) or 'none' (raw)")


def sqrt_k(n_p: int, n_q: int) -> int:
    """k = "sqrt" for `mauve_quantized`: round(√min(n_p, n_q)), at least 2.

    mauve-text's "auto" (n / 10) keeps ~10 points per cluster at every n, so the plug-in KLs keep
    a bias that does not shrink; k ∝ √n lets both the quantization and the histogram error
    fall (bench/frontier_estimators.py measures both).
    """
    return max(2, int(round(math.sqrt(min(n_p, n_q)))))


def mauve_quantized(p_feats: npt.ArrayLike, q_feats: npt.ArrayLike, *, k: int | str = "auto",
                    preprocess: str = "mauve", explained_variance: float = 0.9, seed: int = 25,
                    scaling: float = 5.0, discretization: int = 25) -> FrontierEstimate:
    """MAUVE by quantization: with preprocess="mauve" and an integer or "auto" k, exactly
    `mauve.compute_mauve`; preprocess="none" clusters the raw features; k="sqrt" uses `sqrt_k`."""
    p, q, prep = _prepared(p_feats, q_feats, preprocess, explained_variance, seed)
    k_used: int | str = sqrt_k(len(p), len(q)) if k == "sqrt" else k
    data = np.vstack([q, p]).astype(np.float32)  # mauve's [Q; P] order
    red = M.Reduced(data, len(q), len(p), explained_variance if preprocess == "mauve" else 1.0, seed)
    res, _ = M.quantize_and_score(red, k=k_used, scaling=scaling, discretization=discretization)
    return FrontierEstimate(res.mauve, res.divergence_curve, "quantized",
                            {**prep, "k": res.num_buckets, "k_rule": str(k), "seed": seed, "scaling": scaling,
                             "discretization": discretization, "n_p": len(p), "n_q": len(q)})


def mauve_knn(p_feats: npt.ArrayLike, q_feats: npt.ArrayLike, *, n_neighbors: int | None = None,
              zero_count: float = 0.5, preprocess: str = "mauve", explained_variance: float = 0.9,
              scaling: float = 5.0, discretization: int = 25) -> FrontierEstimate:
    """MAUVE from k-nearest-neighbour density ratios (`knn_density_ratio`). With
    preprocess="mauve" the neighbours are searched in mauve's normalised PCA space (raw
    768-d text features make every neighbourhood nearly equidistant); use "none" for
    low-dimensional features."""
    p, q, prep = _prepared(p_feats, q_feats, preprocess, explained_variance)
    nn = default_n_neighbors(len(p), len(q)) if n_neighbors is None else n_neighbors
    curve = frontier_from_ratios(*knn_density_ratio(p, q, n_neighbors=nn, zero_count=zero_count),
                                 alphas=M.alpha_grid(discretization), scaling=scaling)
    return FrontierEstimate(M.mauve_area(curve), curve.tolist(), "knn",
                            {**prep, "n_neighbors": nn, "zero_count": zero_count, "scaling": scaling,
                             "discretization": discretization, "n_p": len(p), "n_q": len(q)})


def mauve_classifier(p_feats: npt.ArrayLike, q_feats: npt.ArrayLike, *, random_state: int = 0, n_folds: int = 5,
                     model: str = "kernel", preprocess: str = "mauve", explained_variance: float = 0.9,
                     scaling: float = 5.0, discretization: int = 25) -> FrontierEstimate:
    """MAUVE from a cross-fitted classifier's density ratios (`classifier_density_ratio`), on
    mauve's normalised PCA features (preprocess="mauve") or the features as given ("none")."""
    p, q, prep = _prepared(p_feats, q_feats, preprocess, explained_variance)
    ratios = classifier_density_ratio(p, q, random_state=random_state, n_folds=n_folds, model=model)
    curve = frontier_from_ratios(*ratios, alphas=M.alpha_grid(discretization), scaling=scaling)
    return FrontierEstimate(M.mauve_area(curve), curve.tolist(), "classifier",
                            {**prep, "model": model, "n_folds": n_folds, "random_state": random_state,
                             "scaling": scaling, "discretization": discretization, "n_p": len(p), "n_q": len(q)})


ESTIMATORS: dict[str, Callable[..., FrontierEstimate]] = {
    "quantized": mauve_quantized,
    "knn": mauve_knn,
    "classifier": mauve_classifier,
}  # name -> estimator; each takes (p_feats, q_feats, *, preprocess=..., scaling=..., ...)
