"""MAUVE's frontier estimators against the exact frontier of Gaussian mixtures, one run.

    python -m bench.frontier_estimators [--ns 100,250,500,1000,2000,4000] [--seeds 5] [--pairs 1d,2d]

For each pair of `tests/support/gaussians.PAIRS` (1-D: a two-bump mixture against one wide
Gaussian; 2-D: two against three diagonal components), n points per side drawn with seeds
2s and 2s + 1 for s < --seeds, raw features (preprocess="none"), c = 5, mauve's 25-point λ grid:

    quantized auto   mauve's path, k = max(2, round(n / 10)) (mauve-text's "auto")
    quantized sqrt   the same with k = round(√n)
    knn              neighbour-count ratios, n_neighbors = round(√(2n)), add-½
    classifier       cross-fitted (5 folds) logistic regression on RBF features
    linear           the same with a linear logistic regression (a reference)

Three tables per pair: MAUVE error (estimate - truth, mean ± std over seeds), frontier error
(mean distance between estimated and exact curve points at the same λ, mean over seeds), and
seconds per call (mean, after one warm-up call of each). The truth is exact quadrature on a grid (tests/support/gaussians.py).
"""
from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np

from evalcore.metrics import frontier as F
from evalcore.metrics.mauve import mauve_area
from tests.support.gaussians import PAIRS, frontier_error, true_frontier

ROWS: dict[str, Callable[[np.ndarray, np.ndarray, int], F.FrontierEstimate]] = {
    "quantized auto": lambda p, q, s: F.mauve_quantized(p, q, k="auto", preprocess="none"),
    "quantized sqrt": lambda p, q, s: F.mauve_quantized(p, q, k="sqrt", preprocess="none"),
    "knn": lambda p, q, s: F.mauve_knn(p, q, preprocess="none"),
    "classifier": lambda p, q, s: F.mauve_classifier(p, q, random_state=s, preprocess="none"),
    "linear": lambda p, q, s: F.mauve_classifier(p, q, random_state=s, model="linear", preprocess="none"),
}


def _table(title: str, ns: list[int], cells: dict[str, list[str]]) -> str:
    head = f"| {title} | " + " | ".join(f"n = {n}" for n in ns) + " |"
    rule = "|---|" + "---|" * len(ns)
    return "\n".join([head, rule, *(f"| {name} | " + " | ".join(c) + " |" for name, c in cells.items())])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ns", default="100,250,500,1000,2000,4000")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--pairs", default="1d,2d")
    args = ap.parse_args()
    ns = [int(n) for n in args.ns.split(",")]
    warm = PAIRS["1d"][0].sample(50, random_state=0), PAIRS["1d"][1].sample(50, random_state=1)
    for fn in ROWS.values():  # imports (sklearn, faiss) and first-call costs stay out of the timings
        fn(*warm, 0)
    for pair in args.pairs.split(","):
        p_mix, q_mix = PAIRS[pair]
        truth = true_frontier(p_mix, q_mix)
        mauve_true = mauve_area(truth)
        err: dict[str, list[str]] = {name: [] for name in ROWS}
        front: dict[str, list[str]] = {name: [] for name in ROWS}
        secs: dict[str, list[str]] = {name: [] for name in ROWS}
        for n in ns:
            draws = [(p_mix.sample(n, random_state=2 * s), q_mix.sample(n, random_state=2 * s + 1))
                     for s in range(args.seeds)]
            for name, fn in ROWS.items():
                e, f, t = [], [], []
                for s, (p, q) in enumerate(draws):
                    t0 = time.perf_counter()
                    est = fn(p, q, s)
                    t.append(time.perf_counter() - t0)
                    e.append(est.mauve - mauve_true)
                    f.append(frontier_error(est.divergence_curve, truth))
                err[name].append(f"{np.mean(e):+.3f} ± {np.std(e):.3f}")
                front[name].append(f"{np.mean(f):.3f}")
                secs[name].append(f"{np.mean(t):.3f}")
            print(f"# {pair} n={n} done", flush=True)
        print(f"\n**{pair}** (true MAUVE {mauve_true:.4f}, {args.seeds} seeds)\n")
        print(_table("MAUVE error", ns, err) + "\n")
        print(_table("frontier error", ns, front) + "\n")
        print(_table("seconds / call", ns, secs) + "\n", flush=True)


if __name__ == "__main__":
    main()
