"""Is a MAUVE difference real? Resampling over MAUVE's whole pipeline, and MAUVE against n.

Two models continue the same n contexts; row i of each array belongs to context i:

    P   [n, d]  human endings            Q_A [n, d]  model A's continuations     Q_B [n, d]  model B's

    replicate b   idx = n context draws with replacement, and a k-means seed s_b  (replicate_draw)
                  MAUVE(P[idx], Q_A[idx]) and MAUVE(P[idx], Q_B[idx]), each with PCA and k-means
                  re-run on the resample (refit_mauve): the same idx and s_b on both sides (paired)
    difference    d_b = MAUVE_A,b - MAUVE_B,b; the interval is the percentiles (1 -+ level) / 2 of d_b
    verdict       "A > B" when the interval is above 0, "B > A" when below, else not distinguishable

    curve         MAUVE on the first n contexts for each n, with two bands:
                  seeds  k-means seeds random_state + 2 + j (kmeans_seeds; j = 0 is compute_mauve's fit)
                  boot   a percentile interval over replicates: re-clustered (refit_mauve on each
                         resample) or with the clusters of the j = 0 fit held fixed (fixed_cluster_mauves)

Seeding lives in two functions, `replicate_draw` and `kmeans_seeds`, both from one `random_state`:
replicate b depends only on (random_state, n, b), so more replicates extend a run without
changing the ones before, and the replicates of a curve point and of a paired difference on
the same n contexts are the same draws.

A resample holds about 63% distinct contexts, so its clusters are thinner than those of the
full sample: one model's re-clustered replicates sit below its MAUVE, the more so the larger
k is for n (the drift `metrics.mauve.max_k` guards against). The paired difference cancels
much of that shift, since both models see the same resample, k and seed.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from evalcore.errors import InputError
from evalcore.metrics import mauve as M

NOT_DISTINGUISHABLE = "not distinguishable at this n"


@dataclass(frozen=True)
class FitSettings:
    """Everything but the data, k and the seed that decides one MAUVE fit (mauve-text's defaults)."""

    explained_variance: float = 0.9  # PCA keeps the components explaining this share of variance
    n_init: int = 5  # k-means restarts (best objective kept)
    max_iter: int = 500  # k-means iterations per restart
    scaling: float = 5.0  # c in exp(-c KL)
    discretization: int = 25  # points on the α grid

    def to_dict(self) -> dict[str, Any]:
        """The settings as a JSON-ready dict (also part of a stored fit's key)."""
        return asdict(self)


# ----------------------------------------------------------------------------- seeding: the one place

def replicate_draw(n: int, b: int, *, random_state: int) -> tuple[npt.NDArray[np.int64], int]:
    """(indices [n] drawn from 0..n-1 with replacement, k-means seed) of bootstrap replicate b.

    Both come from `np.random.SeedSequence(random_state, spawn_key=(n, b))`: replicate b at n
    contexts is the same whatever the number of replicates asked for, or the caller.
    """
    if n < 1 or b < 0:
        raise InputError(f"replicate {b} of {n} contexts: need n >= 1 and b >= 0")
    rng = np.random.default_rng(np.random.SeedSequence(random_state, spawn_key=(n, b)))
    idx = rng.integers(0, n, size=n, dtype=np.int64)
    return idx, int(rng.integers(0, 2**31 - 1))


def kmeans_seeds(random_state: int, n_seeds: int) -> list[int]:
    """The k-means seeds of a seed band: random_state + 2 + j for j < n_seeds; the first is the
    seed `compute_mauve(seed=random_state)` uses (mauve-text's seed + 2), so j = 0 is the usual MAUVE."""
    if n_seeds < 1:
        raise InputError(f"n_seeds={n_seeds}: need at least 1 (5 shows the k-means spread)")
    return [random_state + 2 + j for j in range(n_seeds)]


# ----------------------------------------------------------------------------- one fit

def refit_mauve(p_features: npt.ArrayLike, q_features: npt.ArrayLike, *, k: int, kmeans_seed: int,
                settings: FitSettings = FitSettings()) -> tuple[M.MauveResult, npt.NDArray[np.int64]]:
    """(MAUVE of these rows, the cluster of each stacked [Q; P] row): PCA and k-means fitted on
    exactly these rows (duplicates included), as `compute_mauve` does."""
    red = M.reduce(p_features, q_features, explained_variance=settings.explained_variance)
    return M.quantize_and_score(red, k=k, n_init=settings.n_init, max_iter=settings.max_iter, kmeans_seed=kmeans_seed,
                                scaling=settings.scaling, discretization=settings.discretization)


def replicate_mauve(p_features: npt.ArrayLike, q_features: npt.ArrayLike, b: int, *, k: int, random_state: int,
                    settings: FitSettings = FitSettings()) -> float:
    """MAUVE of bootstrap replicate b: the rows `replicate_draw` picks (the same for P and Q, since
    row i of both belongs to context i), re-reduced and re-clustered."""
    p, q = np.asarray(p_features), np.asarray(q_features)
    if len(p) != len(q):
        raise InputError(f"{len(p)} human and {len(q)} model rows: a paired resample needs one of each per context")
    idx, seed = replicate_draw(len(p), b, random_state=random_state)
    return refit_mauve(p[idx], q[idx], k=k, kmeans_seed=seed, settings=settings)[0].mauve


def fixed_cluster_mauves(labels: npt.ArrayLike, n_q: int, k: int, *, n_boot: int, random_state: int,
                         settings: FitSettings = FitSettings()) -> list[float]:
    """MAUVE of n_boot context resamples with each text's cluster held fixed (no refit: a histogram
    and a curve each). `labels` are those of the stacked [Q; P] rows, Q and P paired by row."""
    lab = np.asarray(labels)
    lq, lp = lab[:n_q], lab[n_q:]
    if len(lq) != len(lp):
        raise InputError(f"{len(lp)} human and {len(lq)} model labels: a paired resample needs one of each per context")
    alphas = M.alpha_grid(settings.discretization)
    out = []
    for b in range(n_boot):
        idx, _ = replicate_draw(len(lp), b, random_state=random_state)
        pc, qc = np.bincount(lp[idx], minlength=k), np.bincount(lq[idx], minlength=k)
        out.append(M.mauve_area(M.divergence_curve(pc / pc.sum(), qc / qc.sum(), alphas=alphas,
                                                   scaling=settings.scaling)))
    return out


# ----------------------------------------------------------------------------- intervals and verdicts

def percentile_interval(values: npt.ArrayLike, *, level: float = 0.95) -> tuple[float, float]:
    """(low, high): the (1 - level)/2 and (1 + level)/2 percentiles of the replicate values."""
    if not 0 < level < 1:
        raise InputError(f"level={level}: need a coverage in (0, 1), e.g. 0.95")
    v = np.asarray(values, dtype=np.float64)
    if v.size < 2:
        raise InputError(f"{v.size} replicates: a percentile interval needs at least 2 (200 for a 95% interval)")
    lo, hi = np.percentile(v, [50 * (1 - level), 50 * (1 + level)])
    return float(lo), float(hi)


def verdict(low: float, high: float) -> str:
    """"A > B" when the interval of MAUVE(A) - MAUVE(B) lies above 0, "B > A" when below, else
    "not distinguishable at this n"."""
    if low > 0:
        return "A > B"
    if high < 0:
        return "B > A"
    return NOT_DISTINGUISHABLE


@dataclass(frozen=True)
class MauveDifference:
    """MAUVE(A) - MAUVE(B) on the same contexts, with a paired bootstrap interval."""

    mauve_a: float  # MAUVE of model A on all n contexts (k-means seed random_state + 2)
    mauve_b: float  # the same for model B
    difference: float  # mauve_a - mauve_b
    low: float  # lower end of the `level` percentile interval of the replicate differences
    high: float  # upper end
    verdict: str  # "A > B", "B > A" or "not distinguishable at this n"
    replicates_a: list[float]  # [n_boot] MAUVE of A on each re-clustered resample
    replicates_b: list[float]  # [n_boot] MAUVE of B on the same resamples
    n: int  # contexts (texts per side)
    k: int  # clusters of every fit
    n_boot: int  # replicates
    level: float  # interval coverage, e.g. 0.95
    random_state: int  # the seed every draw and k-means seed derives from
    settings: dict[str, Any] = field(default_factory=dict)  # FitSettings.to_dict()

    @property
    def replicate_differences(self) -> list[float]:
        """[n_boot] MAUVE(A) - MAUVE(B) of each replicate."""
        return [a - b for a, b in zip(self.replicates_a, self.replicates_b)]

    def to_dict(self) -> dict[str, Any]:
        """The result as a JSON-ready dict."""
        return asdict(self)


def mauve_difference(mauve_a: float, mauve_b: float, replicates_a: Sequence[float], replicates_b: Sequence[float], *,
                     n: int, k: int, level: float = 0.95, random_state: int = 25,
                     settings: FitSettings = FitSettings()) -> MauveDifference:
    """The paired result from point estimates and paired replicate values: difference, percentile
    interval of the replicate differences, and the verdict."""
    ra, rb = np.asarray(replicates_a, dtype=np.float64), np.asarray(replicates_b, dtype=np.float64)
    if ra.shape != rb.shape:
        raise InputError(f"{ra.size} and {rb.size} replicates: the paired bootstrap needs the same resamples of both")
    lo, hi = percentile_interval(ra - rb, level=level)
    return MauveDifference(float(mauve_a), float(mauve_b), float(mauve_a - mauve_b), lo, hi, verdict(lo, hi),
                           ra.tolist(), rb.tolist(), n, k, int(ra.size), level, random_state, settings.to_dict())


def check_paired(p: npt.ArrayLike, *qs: npt.ArrayLike) -> int:
    """The number of contexts, after checking that every array has one row per context (n >= 4)."""
    n = len(np.asarray(p))
    for q in qs:
        if len(np.asarray(q)) != n:
            raise InputError(f"{n} human rows but {len(np.asarray(q))} model rows: row i of each must belong "
                             "to context i")
    if n < 4:
        raise InputError(f"{n} contexts: MAUVE needs at least 4 texts per side (40+ for stable numbers)")
    return n


def paired_bootstrap(p_features: npt.ArrayLike, qa_features: npt.ArrayLike, qb_features: npt.ArrayLike, *,
                     k: int | str = "auto", n_boot: int = 200, level: float = 0.95, random_state: int = 25,
                     settings: FitSettings = FitSettings(),
                     progress: Callable[[int, int], None] | None = None) -> MauveDifference:
    """MAUVE(A) - MAUVE(B) with its paired bootstrap interval and verdict, every replicate
    re-clustered (2 + 2 n_boot k-means fits; `runs.mauve_stats.paired_difference` keeps them
    in the store). `progress(done, total)` follows the fits."""
    n = check_paired(p_features, qa_features, qb_features)
    if n_boot < 2:
        raise InputError(f"n_boot={n_boot}: need at least 2 replicates (200 for a 95% interval)")
    kk = M.resolve_k(k, n, n)
    p, qa, qb = (np.asarray(x, dtype=np.float64) for x in (p_features, qa_features, qb_features))
    seed = kmeans_seeds(random_state, 1)[0]
    total = 2 + 2 * n_boot
    pa = refit_mauve(p, qa, k=kk, kmeans_seed=seed, settings=settings)[0].mauve
    pb = refit_mauve(p, qb, k=kk, kmeans_seed=seed, settings=settings)[0].mauve
    ra, rb = [], []
    for b in range(n_boot):
        if progress:
            progress(2 + 2 * b, total)
        ra.append(replicate_mauve(p, qa, b, k=kk, random_state=random_state, settings=settings))
        rb.append(replicate_mauve(p, qb, b, k=kk, random_state=random_state, settings=settings))
    if progress:
        progress(total, total)
    return mauve_difference(pa, pb, ra, rb, n=n, k=kk, level=level, random_state=random_state, settings=settings)


# ----------------------------------------------------------------------------- MAUVE against n

BANDS = ("refit", "fixed")  # bootstrap bands: re-clustered resamples, or clusters held fixed


@dataclass(frozen=True)
class CurveConfig:
    """How a sample-size curve is drawn (built at the edge: CLI flags, a page's widgets)."""

    k_fixed: int | None = None  # the fixed k drawn beside k = auto(n); None: min(10, max_k(smallest n))
    n_seeds: int = 5  # k-means seeds of the seed band (kmeans_seeds)
    band: str = "refit"  # bootstrap band: "refit" (PCA + k-means on each resample) or "fixed" (clusters held)
    n_boot: int = 200  # bootstrap replicates per point
    level: float = 0.95  # coverage of the bootstrap interval
    random_state: int = 25  # every k-means seed and resample derives from it (mauve-text's default seed)

    def to_dict(self) -> dict[str, Any]:
        """The configuration as a JSON-ready dict."""
        return asdict(self)


def check_sizes(ns: Sequence[int], available: int) -> list[int]:
    """The curve's n values, sorted and without repeats, after checking each is in 4..available."""
    if not ns:
        raise InputError("no n values for the curve: give e.g. 25,50,100")
    for n in ns:
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 4:
            raise InputError(f"n={n!r} in the curve: need an integer >= 4 texts per side (25 or more for a useful point)")
        if n > available:
            raise InputError(f"n={n} in the curve: only {available} contexts are available; use n <= {available}")
    return sorted({int(n) for n in ns})


def fixed_k(ns: Sequence[int], k_fixed: int | None) -> int:
    """The fixed k of a curve over these n: `k_fixed` checked against the smallest n (2..max_k),
    or by default min(10, max_k(smallest n))."""
    n0 = min(ns)
    if k_fixed is None:
        return min(10, M.max_k(n0, n0))
    try:
        return M.resolve_k(k_fixed, n0, n0)
    except InputError as e:
        raise InputError(f"fixed {e} (the curve's smallest n); lower the fixed k or drop the small n") from None


def check_curve_config(config: CurveConfig) -> None:
    """Raise InputError naming the first bad field of a CurveConfig."""
    if config.band not in BANDS:
        raise InputError(f"band={config.band!r}: use one of {', '.join(BANDS)}")
    if config.n_boot < 2:
        raise InputError(f"n_boot={config.n_boot}: need at least 2 replicates per point (200 for a 95% interval)")
    kmeans_seeds(config.random_state, config.n_seeds)
    if not 0 < config.level < 1:
        raise InputError(f"level={config.level}: need a coverage in (0, 1), e.g. 0.95")

@dataclass(frozen=True)
class CurvePoint:
    """MAUVE of one model on the first n contexts at k clusters, with its two bands."""

    n: int  # contexts (texts per side)
    k: int  # clusters
    mauve: float  # the fit at the first k-means seed (= compute_mauve's MAUVE)
    seed_mean: float  # mean over the k-means seeds
    seed_std: float  # sample standard deviation over the seeds (0 with one seed)
    seed_min: float
    seed_max: float
    seed_values: list[float]  # [n_seeds]
    boot_low: float  # lower end of the bootstrap percentile interval
    boot_high: float  # upper end
    boot_values: list[float]  # [n_boot] replicate MAUVEs

    def to_dict(self) -> dict[str, Any]:
        """The point as a JSON-ready dict."""
        return asdict(self)


def curve_point(n: int, k: int, seed_values: Sequence[float], boot_values: Sequence[float], *,
                level: float = 0.95) -> CurvePoint:
    """A curve point from its seed fits (the first is the point estimate) and replicate values."""
    s = np.asarray(seed_values, dtype=np.float64)
    if s.size < 1:
        raise InputError("no seed fits: a curve point needs at least one")
    lo, hi = percentile_interval(boot_values, level=level)
    return CurvePoint(n, k, float(s[0]), float(s.mean()), float(s.std(ddof=1)) if s.size > 1 else 0.0,
                      float(s.min()), float(s.max()), s.tolist(), lo, hi, [float(v) for v in boot_values])


def separated(a: CurvePoint, b: CurvePoint) -> bool:
    """True when the bootstrap intervals of two curve points do not overlap."""
    return a.boot_low > b.boot_high or b.boot_low > a.boot_high


def separation_n(a: Sequence[CurvePoint], b: Sequence[CurvePoint]) -> int | None:
    """The smallest n at which the two models' bootstrap intervals do not overlap; None if they
    overlap at every n. Points are matched by n."""
    by_n = {p.n: p for p in b}
    hits = [p.n for p in a if p.n in by_n and separated(p, by_n[p.n])]
    return min(hits) if hits else None
