"""Gaussian mixtures with a known MAUVE: samples for the estimators, the exact frontier for the truth.

Shared by tests/metrics/test_frontier.py and bench/frontier_estimators.py
(`from tests.support.gaussians import PAIRS, true_frontier` from the repository root).

The truth is computed by deterministic quadrature on a dense grid (1-D or 2-D mixtures with
diagonal covariances), never by Monte Carlo: for each λ of the grid,

    KL(P‖R_λ) = ∫ p log(p / r_λ),   KL(Q‖R_λ) = ∫ q log(q / r_λ),   r_λ = λp + (1-λ)q,

with log r_λ = logaddexp(log λ + log p, log(1-λ) + log q), so the tails stay finite. The grid
reaches 12 standard deviations past every component, where the densities are below e^-72;
`test_truth_matches_closed_form_kl` checks the quadrature against the closed-form KL of two
Gaussians to 1e-9.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy.special import logsumexp

from evalcore.metrics.mauve import alpha_grid, check_scaling, mauve_area

Array = npt.NDArray[np.float64]


@dataclass(frozen=True)
class GaussianMixture:
    """A mixture of Gaussians with diagonal covariances in d dimensions."""

    weights: tuple[float, ...]  # [c], sum to 1
    means: tuple[tuple[float, ...], ...]  # [c][d]
    sds: tuple[tuple[float, ...], ...]  # [c][d], standard deviations per coordinate

    @property
    def dim(self) -> int:
        """d, the dimension of a sample."""
        return len(self.means[0])

    def logpdf(self, x: npt.ArrayLike) -> Array:
        """log density at each row of x [n, d] -> [n]."""
        x = np.asarray(x, dtype=np.float64).reshape(-1, self.dim)
        mu, sd = np.asarray(self.means), np.asarray(self.sds)  # [c, d]
        z = (x[:, None, :] - mu[None]) / sd[None]  # [n, c, d]
        comp = -0.5 * (z**2).sum(-1) - np.log(sd).sum(-1)[None] - 0.5 * self.dim * np.log(2 * np.pi)  # [n, c]
        out: Array = logsumexp(comp + np.log(np.asarray(self.weights))[None], axis=1)
        return out

    def sample(self, n: int, *, random_state: int) -> Array:
        """n draws [n, d]."""
        rng = np.random.default_rng(random_state)
        c = rng.choice(len(self.weights), size=n, p=np.asarray(self.weights))
        out: Array = np.asarray(self.means)[c] + np.asarray(self.sds)[c] * rng.standard_normal((n, self.dim))
        return out


def _grid(p: GaussianMixture, q: GaussianMixture, points: int) -> tuple[Array, float]:
    """Grid points [g, d] and the volume of one cell, covering both mixtures to 12 sd."""
    mu = np.vstack([p.means, q.means])
    sd = np.vstack([p.sds, q.sds])
    lo, hi = (mu - 12 * sd).min(0), (mu + 12 * sd).max(0)
    axes = [np.linspace(a, b, points) for a, b in zip(lo, hi)]
    cell = float(np.prod([ax[1] - ax[0] for ax in axes]))
    mesh = np.meshgrid(*axes, indexing="ij")
    return np.stack([m.ravel() for m in mesh], axis=1), cell


def true_kl_points(p: GaussianMixture, q: GaussianMixture, *, alphas: npt.ArrayLike | None = None,
                   points: int | None = None) -> Array:
    """[m, 2] exact (KL(Q‖R_λ), KL(P‖R_λ)) in nats for λ on `alphas` (default mauve's grid).

    Riemann sum on a uniform grid of `points` per axis (default 4001 in 1-D, 301 in 2-D: these agree with
    8x finer grids to 1e-13 nats), which
    for these smooth, rapidly decaying integrands is as accurate as the trapezoid rule.
    """
    if p.dim != q.dim or p.dim not in (1, 2):
        raise ValueError(f"dims {p.dim} and {q.dim}: the grid quadrature handles equal dims 1 or 2")
    a = np.sort(alpha_grid() if alphas is None else np.asarray(alphas, dtype=np.float64))
    x, cell = _grid(p, q, points or (4001 if p.dim == 1 else 301))
    lp, lq = p.logpdf(x), q.logpdf(x)
    dp, dq = np.exp(lp) * cell, np.exp(lq) * cell  # probability mass of each cell
    out = np.empty((len(a), 2))
    for i, lam in enumerate(a):
        lr = np.logaddexp(np.log(lam) + lp, np.log1p(-lam) + lq)
        out[i] = (dq * (lq - lr)).sum(), (dp * (lp - lr)).sum()
    return out


def true_frontier(p: GaussianMixture, q: GaussianMixture, *, alphas: npt.ArrayLike | None = None,
                  scaling: float = 5.0, points: int | None = None) -> Array:
    """[m + 2, 2] exact divergence curve, in `mauve.divergence_curve`'s format and order."""
    pts = true_kl_points(p, q, alphas=alphas, points=points)
    pts = np.vstack([[0.0, np.inf], pts, [np.inf, 0.0]])
    out: Array = np.exp(-check_scaling(scaling) * pts)
    return out


def true_mauve(p: GaussianMixture, q: GaussianMixture, *, alphas: npt.ArrayLike | None = None,
               scaling: float = 5.0) -> float:
    """Exact MAUVE: `mauve.mauve_area` of the exact curve on the same λ grid."""
    return mauve_area(true_frontier(p, q, alphas=alphas, scaling=scaling))


def frontier_error(curve: npt.ArrayLike, truth: npt.ArrayLike) -> float:
    """Mean Euclidean distance between two curves' points at the same λ (extreme points excluded)."""
    a, b = np.asarray(curve, dtype=np.float64)[1:-1], np.asarray(truth, dtype=np.float64)[1:-1]
    return float(np.linalg.norm(a - b, axis=1).mean())


# Two pairs that are neither close nor separated (true MAUVE of about 0.6-0.8 at c = 5), so that
# estimator errors of a few hundredths are visible.
PAIRS: dict[str, tuple[GaussianMixture, GaussianMixture]] = {
    "1d": (GaussianMixture((0.5, 0.5), ((-1.5,), (1.5,)), ((0.6,), (0.6,))),
           GaussianMixture((1.0,), ((0.0,),), ((1.5,),))),
    "2d": (GaussianMixture((0.6, 0.4), ((-1.0, 0.0), (1.0, 0.5)), ((0.7, 0.5), (0.5, 0.8))),
           GaussianMixture((0.3, 0.3, 0.4), ((-0.8, 0.3), (0.9, 0.2), (0.0, -0.4)),
                           ((0.6, 0.6), (0.7, 0.5), (0.9, 0.6)))),
}
