"""Is a MAUVE difference real? `metrics.mauve_stats` with every k-means fit kept in the store.

    P [n, d] human endings, Q_A, Q_B [n, d] continuations    (runs.mauve: generated and featurized once)
    one fit = one store record, op "mauve_fit", keyed by
        sha256 of the fitted rows P[:n] and Q[:n] (features_id), k, FitSettings, FIT_VERSION, and
        either the k-means seed (a fit on all n rows) or (random_state, replicate b)
    paired_difference      2 + 2 n_boot fits                               -> MauveDifference
    sample_size_curves     per model, n and k in (auto(n), fixed):
                           n_seeds fits (+ n_boot re-clustered replicates)  -> SampleSizeCurves

A second call, a larger n_boot, a killed run, or a curve and a difference on the same n
contexts (the same replicate draws) compute only the fits the store does not hold.
"""
from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from evalcore.data import HellaSwag
from evalcore.errors import InputError
from evalcore.metrics import mauve as M
from evalcore.metrics import mauve_stats as S
from evalcore.models import LoadedModel
from evalcore.runs._memo import Batches, Progress, memo_map
from evalcore.runs.mauve import features, model_texts
from evalcore.store import Store, record_key

if TYPE_CHECKING:
    from evalcore.scoring import Decoding

FIT_VERSION = 1  # bump when a stored fit would hold another number for the same key

Features = npt.NDArray[np.float32]


def features_id(p: npt.ArrayLike, q: npt.ArrayLike) -> str:
    """A content hash of the rows a fit sees: shape and float32 bytes of P, then of Q."""
    h = hashlib.sha256()
    for a in (p, q):
        x = np.ascontiguousarray(a, dtype=np.float32)
        h.update(repr(x.shape).encode())
        h.update(x.tobytes())
    return h.hexdigest()


@dataclass(frozen=True)
class _Fit:
    """One k-means fit of one model's texts on the first n contexts."""

    side: str  # which model's Q
    n: int  # contexts
    k: int  # clusters
    seed: int | None = None  # k-means seed of a fit on all n rows ...
    b: int | None = None  # ... or the bootstrap replicate (seed and rows from replicate_draw)


def _fit_all(p: Features, qs: Mapping[str, Features], fits: Sequence[_Fit], *, settings: S.FitSettings,
             random_state: int, store: Store, progress: Progress | None) -> dict[_Fit, dict[str, Any]]:
    """The stored value of each fit ({"mauve", and for a fit on all rows "mauve_star", "labels"}),
    computing and storing one fit at a time those the store lacks."""
    uniq = list(dict.fromkeys(fits))
    ids = {(f.side, f.n): features_id(p[: f.n], qs[f.side][: f.n]) for f in uniq}
    keys = [record_key(op="mauve_fit", features=ids[(f.side, f.n)], k=f.k, settings=settings.to_dict(),
                       kmeans_seed=f.seed, b=f.b, random_state=None if f.b is None else random_state, v=FIT_VERSION)
            for f in uniq]

    def compute(todo: list[int]) -> Batches:
        for i in todo:
            f = uniq[i]
            pn, qn = p[: f.n], qs[f.side][: f.n]
            if f.b is None:
                seed = f.seed if f.seed is not None else 0  # always set on a fit on all rows
                res, labels = S.refit_mauve(pn, qn, k=f.k, kmeans_seed=seed, settings=settings)
                value: dict[str, Any] = {"mauve": res.mauve, "mauve_star": res.mauve_star, "labels": labels.tolist()}
            else:
                value = {"mauve": S.replicate_mauve(pn, qn, f.b, k=f.k, random_state=random_state, settings=settings)}
            yield [i], [value]

    values, _ = memo_map(store, "mauve_fit", keys, compute, progress=progress)
    return dict(zip(uniq, values))


def _as_features(x: npt.ArrayLike, name: str) -> Features:
    a = np.asarray(x, dtype=np.float32)
    if a.ndim != 2:
        raise InputError(f"{name} features must be a 2-D array [n_texts, dim], got shape {a.shape}")
    return a


# ----------------------------------------------------------------------------- the paired difference

def paired_difference(p_features: npt.ArrayLike, qa_features: npt.ArrayLike, qb_features: npt.ArrayLike, *,
                      k: int | str = "auto", n_boot: int = 200, level: float = 0.95, random_state: int = 25,
                      settings: S.FitSettings = S.FitSettings(), store: Store | None = None,
                      progress: Progress | None = None) -> S.MauveDifference:
    """MAUVE(A) - MAUVE(B) on the same contexts, with its paired, re-clustered bootstrap interval
    and verdict (`metrics.mauve_stats.paired_bootstrap`), each fit read from or written to the
    store. `progress(done, total)` counts fits, 2 + 2 n_boot; those in the store count as done."""
    n = S.check_paired(p_features, qa_features, qb_features)
    if n_boot < 2:
        raise InputError(f"n_boot={n_boot}: need at least 2 replicates (200 for a 95% interval)")
    S.percentile_interval([0.0, 0.0], level=level)  # checks the level before any fit
    kk = M.resolve_k(k, n, n)
    p = _as_features(p_features, "P")
    qs = {"a": _as_features(qa_features, "Q_A"), "b": _as_features(qb_features, "Q_B")}
    seed = S.kmeans_seeds(random_state, 1)[0]
    fits = [_Fit("a", n, kk, seed=seed), _Fit("b", n, kk, seed=seed)]
    fits += [_Fit(side, n, kk, b=b) for b in range(n_boot) for side in "ab"]
    got = _fit_all(p, qs, fits, settings=settings, random_state=random_state, store=store or Store(),
                   progress=progress)
    reps = {side: [got[_Fit(side, n, kk, b=b)]["mauve"] for b in range(n_boot)] for side in "ab"}
    return S.mauve_difference(got[fits[0]]["mauve"], got[fits[1]]["mauve"], reps["a"], reps["b"], n=n, k=kk,
                              level=level, random_state=random_state, settings=settings)


# ----------------------------------------------------------------------------- MAUVE against n

@dataclass(frozen=True)
class MauveCurve:
    """MAUVE of one model against n at one way of choosing k."""

    model: str  # the model's name
    k_mode: str  # "auto" (k = auto_k(n) at each n) or "fixed" (SampleSizeCurves.k_fixed at every n)
    points: list[S.CurvePoint]  # one per n, in increasing n

    def to_dict(self) -> dict[str, Any]:
        """The curve as a JSON-ready dict."""
        return {"model": self.model, "k_mode": self.k_mode, "points": [p.to_dict() for p in self.points]}


@dataclass(frozen=True)
class SampleSizeCurves:
    """MAUVE against n for one or more models, at k = auto(n) and at a fixed k, with bands."""

    curves: list[MauveCurve]  # per model, "auto" then "fixed"
    ns: list[int]  # the n values, increasing
    k_fixed: int  # the k of the "fixed" curves
    separation_n: dict[str, int | None]  # k mode -> smallest n where the first two models' intervals separate
    config: dict[str, Any] = field(default_factory=dict)  # CurveConfig.to_dict()
    settings: dict[str, Any] = field(default_factory=dict)  # FitSettings.to_dict()

    def curve(self, model: str, k_mode: str = "auto") -> MauveCurve:
        """The curve of `model` at k mode "auto" or "fixed"."""
        for c in self.curves:
            if c.model == model and c.k_mode == k_mode:
                return c
        raise InputError(f"no curve for model {model!r} at k {k_mode!r}; have "
                         + ", ".join(f"{c.model}/{c.k_mode}" for c in self.curves))

    def to_dict(self) -> dict[str, Any]:
        """The curves as a JSON-ready dict."""
        return {**asdict(self), "curves": [c.to_dict() for c in self.curves]}


def _curve_fits(names: Sequence[str], ns: Sequence[int], k_fixed: int, config: S.CurveConfig) -> list[_Fit]:
    seeds = S.kmeans_seeds(config.random_state, config.n_seeds)
    boots = range(config.n_boot) if config.band == "refit" else range(0)
    return [_Fit(m, n, k, seed=s) for m in names for n in ns for k in (M.auto_k(n, n), k_fixed) for s in seeds] + \
           [_Fit(m, n, k, b=b) for m in names for n in ns for k in (M.auto_k(n, n), k_fixed) for b in boots]


def _point(got: Mapping[_Fit, dict[str, Any]], m: str, n: int, k: int, config: S.CurveConfig,
           settings: S.FitSettings) -> S.CurvePoint:
    seeds = S.kmeans_seeds(config.random_state, config.n_seeds)
    seed_fits = [got[_Fit(m, n, k, seed=s)] for s in seeds]
    if config.band == "refit":
        boot = [got[_Fit(m, n, k, b=b)]["mauve"] for b in range(config.n_boot)]
    else:
        boot = S.fixed_cluster_mauves(seed_fits[0]["labels"], n, k, n_boot=config.n_boot,
                                      random_state=config.random_state, settings=settings)
    return S.curve_point(n, k, [f["mauve"] for f in seed_fits], boot, level=config.level)


def sample_size_curves(p_features: npt.ArrayLike, q_features: Mapping[str, npt.ArrayLike], ns: Sequence[int], *,
                       config: S.CurveConfig = S.CurveConfig(), settings: S.FitSettings = S.FitSettings(),
                       store: Store | None = None, progress: Progress | None = None) -> SampleSizeCurves:
    """MAUVE against n (the first n rows, row i = context i) for each named model's features, at
    k = auto(n) and at a fixed k, with a k-means seed band and a bootstrap band; with two or more
    models, the smallest n at which the first two separate. `progress(done, total)` counts fits."""
    S.check_curve_config(config)
    if not q_features:
        raise InputError("no model features for the curve: give at least one model")
    p = _as_features(p_features, "P")
    qs = {m: _as_features(q, f"Q ({m})") for m, q in q_features.items()}
    sizes = S.check_sizes(ns, min([len(p)] + [len(q) for q in qs.values()]))
    k_fixed = S.fixed_k(sizes, config.k_fixed)
    got = _fit_all(p, qs, _curve_fits(list(qs), sizes, k_fixed, config), settings=settings,
                   random_state=config.random_state, store=store or Store(), progress=progress)
    curves = {(m, mode): MauveCurve(m, mode, [_point(got, m, n, M.auto_k(n, n) if mode == "auto" else k_fixed, config,
                                                     settings) for n in sizes])
              for m in qs for mode in ("auto", "fixed")}
    names = list(qs)
    sep = {mode: S.separation_n(curves[names[0], mode].points, curves[names[1], mode].points) if len(names) > 1
           else None for mode in ("auto", "fixed")}
    return SampleSizeCurves(list(curves.values()), sizes, k_fixed, sep, config.to_dict(), settings.to_dict())


# ----------------------------------------------------------------------------- from loaded models

def _human_and_model_features(lms: Sequence[LoadedModel], featurizer: LoadedModel, indices: Sequence[int],
                              decoding: Decoding, *, kind: str, dataset: HellaSwag, store: Store,
                              batch_size: int | None, progress: Progress | None) -> tuple[Features, list[Features]]:
    """P features of the gold endings and each model's Q features, generating and featurizing
    only what the store lacks (`runs.mauve.model_texts`, `runs.mauve.features`)."""
    human = [it.choices[it.label] for it in dataset.items(list(indices))]
    qs = []
    for lm in lms:
        texts = model_texts(lm, indices, decoding, dataset=dataset, store=store, batch_size=batch_size,
                            progress=progress)
        qs.append(features(featurizer, texts, kind=kind, store=store))
    return features(featurizer, human, kind=kind, store=store), qs


def run_mauve_difference(lm_a: LoadedModel, lm_b: LoadedModel, featurizer: LoadedModel, indices: Sequence[int],
                         decoding: Decoding, *, kind: str = "minilm", k: int | str = "auto", n_boot: int = 200,
                         level: float = 0.95, random_state: int = 25, dataset: HellaSwag | None = None,
                         store: Store | None = None, batch_size: int | None = None,
                         progress: Progress | None = None) -> S.MauveDifference:
    """MAUVE(A) - MAUVE(B) against the same human endings of these HellaSwag contexts, with its
    paired bootstrap interval and verdict (`paired_difference`). `progress(done, total)` follows
    each step in turn: A's generation, B's, then the k-means fits."""
    if lm_a.identity() == lm_b.identity():
        raise InputError(f"--compare {lm_b.spec.name} is the model itself; compare two different models")
    if len(indices) < 4:
        raise InputError(f"{len(indices)} items: MAUVE needs at least 4 texts per side (40+ for stable numbers)")
    store = store or Store()
    p, qs = _human_and_model_features([lm_a, lm_b], featurizer, indices, decoding, kind=kind,
                                      dataset=dataset or HellaSwag(), store=store, batch_size=batch_size,
                                      progress=progress)
    return paired_difference(p, qs[0], qs[1], k=k, n_boot=n_boot, level=level,
                             random_state=random_state, store=store, progress=progress)


def run_mauve_curves(lms: Sequence[LoadedModel], featurizer: LoadedModel, ns: Sequence[int], decoding: Decoding, *,
                     kind: str = "minilm", config: S.CurveConfig = S.CurveConfig(), dataset: HellaSwag | None = None,
                     store: Store | None = None, batch_size: int | None = None,
                     progress: Progress | None = None) -> SampleSizeCurves:
    """MAUVE against n, on the first n HellaSwag contexts, for each model (`sample_size_curves`).
    Only the continuations and features the store lacks are computed: a larger n generates
    just the new contexts. `progress(done, total)` follows each model's generation, then the fits."""
    ds = dataset or HellaSwag()
    sizes = S.check_sizes(ns, len(ds))
    S.check_curve_config(config)
    S.fixed_k(sizes, config.k_fixed)
    if len({lm.spec.name for lm in lms}) != len(lms):
        raise InputError("the same model twice: give each model once")
    store = store or Store()
    p, qs = _human_and_model_features(lms, featurizer, range(max(sizes)), decoding, kind=kind, dataset=ds,
                                      store=store, batch_size=batch_size, progress=progress)
    return sample_size_curves(p, {lm.spec.name: q for lm, q in zip(lms, qs)}, sizes, config=config, store=store,
                              progress=progress)
