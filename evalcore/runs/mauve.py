"""MAUVE of human HellaSwag text vs a model's continuations, with re-sliceable steps.

    human text P  = the gold ending of each context             (the lesson's "correct texts")
    model text Q  = the model's sampled continuation of the same contexts (cached per model, decoding, item)

Only the endings are featurized: the context is shared by both sides, and with it in the
text the features of P and Q look alike whatever the model writes (MAUVE near 1 for any model).
    features      = featurizer(text)                           (cached per featurizer, text)
    MauveLab      = features reduced once; k-means once per k; α, histograms, curve are cheap
"""
from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from evalcore.data import HellaSwag
from evalcore.errors import InputError, require_finite
from evalcore.metrics import mauve as M
from evalcore.metrics.frontier import ESTIMATORS, Divergences, FrontierEstimate, divergences
from evalcore.models import LoadedModel
from evalcore.runs._memo import Batches, Progress, memo_map
from evalcore.store import Store, record_key

if TYPE_CHECKING:
    from evalcore.scoring import Decoding

log = logging.getLogger(__name__)

GENERATE_VERSION = 2  # bump when `scoring.generate` draws other texts for the same inputs
GENERATE_BATCH = 40  # rows generated at once: fuller matmuls than 16 rows (bench/RESULTS.md, Generation)


def _thash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def model_texts(lm: LoadedModel, indices: Sequence[int], decoding: Decoding, *, dataset: HellaSwag | None = None,
                store: Store | None = None, batch_size: int | None = None, progress: Progress | None = None) -> list[str]:
    """The model's continuation of each item's context; generated once, then read from the store.

    Rows are generated in equal batches of at most `batch_size` (default `GENERATE_BATCH`); a text
    does not depend on its batch.
    """
    from evalcore import scoring

    ds = dataset or HellaSwag()
    store = store or Store()
    items = ds.items(list(indices))
    keys = [record_key(op="generate", model=lm.identity(), decoding=decoding.to_dict(), data=ds.identity(), index=it.index,
                       v=GENERATE_VERSION)
            for it in items]

    def compute(todo: list[int]) -> Batches:
        n_chunks = -(-len(todo) // (batch_size or GENERATE_BATCH))  # equal chunks of at most batch_size: 80 texts run as 2 x 40
        for c in range(n_chunks):
            chunk = todo[c * len(todo) // n_chunks : (c + 1) * len(todo) // n_chunks]
            max_new = [decoding.max_new_tokens or int(np.clip(len(lm.tokenizer(" " + items[i].choices[items[i].label])
                                                                  .input_ids), 8, 64)) for i in chunk]
            gen = scoring.generate(lm, [items[i].query for i in chunk], [str(items[i].index) for i in chunk], max_new,
                                   decoding)
            yield chunk, [{"continuation": g} for g in gen]

    values, cached = memo_map(store, "generate", keys, compute, progress=progress)
    log.info("%s: %d of %d continuations read from the store, %d generated", lm.spec.name, cached, len(items),
             len(items) - cached)
    out = [v["continuation"] for v in values]
    return [t.strip() or t for t in out]


def features(featurizer: LoadedModel, texts: Sequence[str], *, kind: str, store: Store | None = None) -> npt.NDArray[np.float32]:
    """[n, dim] features, each text featurized once per featurizer (cached in the store)."""
    from evalcore import scoring

    store = store or Store()
    keys = [record_key(op="features", model=featurizer.identity(), kind=kind, text=_thash(t)) for t in texts]

    def compute(todo: list[int]) -> Batches:
        f = scoring.featurize(featurizer, [texts[i] for i in todo], kind=kind)
        require_finite(f, f"the features of {featurizer.spec.name} ([text, dim])")
        yield todo, [row.tolist() for row in f]

    values, _ = memo_map(store, "features", keys, compute)
    return np.array(values, dtype=np.float32)


@dataclass
class MauveLab:
    """MAUVE with every intermediate exposed; PCA runs once, k-means once per (k, seed).

    Build with `MauveLab.from_features(p_feats, q_feats, ...)`; then `result(k)`,
    `point(alpha, k)`, `sweep(ks)`, `seeds(k)`, `bootstrap(k)`, `estimate(estimator)` and
    `divergences(k)` are cheap or cached.
    """

    reduced: M.Reduced
    p_texts: list[str] = field(default_factory=list)
    q_texts: list[str] = field(default_factory=list)
    scaling: float = 5.0
    _cache: dict[tuple[int, int], tuple[M.MauveResult, np.ndarray]] = field(default_factory=dict, repr=False)
    _estimates: dict[str, FrontierEstimate] = field(default_factory=dict, repr=False)

    @classmethod
    def from_features(cls, p_features: npt.ArrayLike, q_features: npt.ArrayLike, *, p_texts: Sequence[str] = (),
                      q_texts: Sequence[str] = (), explained_variance: float = 0.9, seed: int = 25, scaling: float = 5.0) -> MauveLab:
        """A lab on precomputed features of P (human) and Q (model) texts, PCA done once here."""
        M.check_scaling(scaling)  # before the PCA, which is the slow step
        red = M.reduce(p_features, q_features, explained_variance=explained_variance, seed=seed)
        return cls(red, list(p_texts), list(q_texts), scaling)

    @property
    def n_texts(self) -> int:
        """How many texts, both sides together."""
        return self.reduced.n_p + self.reduced.n_q

    def k_auto(self) -> int:
        """mauve-text's default cluster count for these sizes."""
        return M.auto_k(self.reduced.n_p, self.reduced.n_q)

    def k_max(self) -> int:
        """The most clusters these texts take (`metrics.mauve.max_k`)."""
        return M.max_k(self.reduced.n_p, self.reduced.n_q)

    def k(self, k: int | str = "auto") -> int:
        """`k` ("auto" or an integer) resolved and checked once (`metrics.mauve.resolve_k`)."""
        return M.resolve_k(k, self.reduced.n_p, self.reduced.n_q)

    def _fit(self, k: int, kmeans_seed: int | None = None) -> tuple[M.MauveResult, np.ndarray]:
        seed = self.reduced.seed + 2 if kmeans_seed is None else kmeans_seed
        if (k, seed) not in self._cache:
            self._cache[(k, seed)] = M.quantize_and_score(self.reduced, k=k, kmeans_seed=seed, scaling=self.scaling)
        return self._cache[(k, seed)]

    def result(self, k: int | str = "auto") -> M.MauveResult:
        """MAUVE with k clusters (histograms, curve, MAUVE and MAUVE*), computed once per k."""
        return self._fit(self.k(k))[0]

    def labels(self, k: int | str = "auto") -> tuple[np.ndarray, np.ndarray]:
        """(p_labels, q_labels): the cluster of each human and each model text."""
        lab = self._fit(self.k(k))[1]
        return lab[self.reduced.n_q :], lab[: self.reduced.n_q]

    def point(self, alpha: float, k: int | str = "auto") -> dict[str, Any]:
        """The α slider: mixture R_α, KL(P||R_α), KL(Q||R_α) and the curve point exp(-c·KL)."""
        r = self.result(k)
        kq, kp = M.mixture_point(r.p_hist, r.q_hist, alpha)
        return {"alpha": alpha, "mixture": M.mixture(r.p_hist, r.q_hist, alpha).tolist(), "kl_p_r": kp, "kl_q_r": kq,
                "x": float(np.exp(-self.scaling * kq)), "y": float(np.exp(-self.scaling * kp))}

    def sweep(self, ks: Sequence[int]) -> list[dict[str, float]]:
        """MAUVE and MAUVE* at each k, one dict per k."""
        return [{"k": int(k), "mauve": self.result(int(k)).mauve, "mauve_star": self.result(int(k)).mauve_star} for k in ks]

    def seeds(self, k: int | str = "auto", seeds: Sequence[int] = (0, 1, 2, 3, 4)) -> dict[str, Any]:
        """MAUVE at k over several k-means seeds: mean, std, the values and the seeds."""
        kk = self.k(k)
        vals = np.array([self._fit(kk, s)[0].mauve for s in seeds])
        return {"mean": float(vals.mean()), "std": float(vals.std(ddof=1)) if len(vals) > 1 else 0.0,
                "values": vals.tolist(), "seeds": list(seeds)}

    def bootstrap(self, k: int | str = "auto", *, n_boot: int = 200, random_state: int = 0) -> tuple[float, float]:
        """A 95% bootstrap interval (low, high) for MAUVE at k, texts resampled with their clusters."""
        kk = self.k(k)
        return M.bootstrap_ci(self._fit(kk)[1], self.reduced.n_q, kk, n_boot=n_boot, random_state=random_state,
                              scaling=self.scaling)

    def estimate(self, estimator: str = "quantized", k: int | str = "auto") -> FrontierEstimate:
        """MAUVE and its frontier by one estimator (`metrics.frontier.ESTIMATORS`) on these
        features, in the lab's normalised PCA space: "quantized" is `result(k)` itself, "knn" and
        "classifier" do not cluster (k is theirs to ignore); computed once per estimator."""
        if estimator == "quantized":
            r = self.result(k)
            return FrontierEstimate(r.mauve, r.divergence_curve, "quantized", {**r.settings, "k": r.num_buckets})
        if estimator not in ESTIMATORS:
            raise InputError(f"estimator={estimator!r}: use one of {', '.join(ESTIMATORS)}")
        if estimator not in self._estimates:
            data = self.reduced.data.astype(np.float64)
            p, q = data[self.reduced.n_q :], data[: self.reduced.n_q]
            self._estimates[estimator] = ESTIMATORS[estimator](p, q, preprocess="none", scaling=self.scaling)
        return self._estimates[estimator]

    def divergences(self, k: int | str = "auto") -> Divergences:
        """KL both ways (add-0.5 counts), Jensen-Shannon and total variation between the human and
        the model histograms at k clusters."""
        r = self.result(k)
        return divergences(np.asarray(r.p_hist) * self.reduced.n_p, np.asarray(r.q_hist) * self.reduced.n_q)


def run_mauve(lm: LoadedModel, featurizer: LoadedModel, indices: Sequence[int], decoding: Decoding, *, kind: str = "minilm",
              dataset: HellaSwag | None = None, store: Store | None = None, seed: int = 25,
              batch_size: int | None = None, progress: Progress | None = None) -> MauveLab:
    """Human HellaSwag texts (P) vs the model's continuations of the same contexts (Q)."""
    if len(indices) < 4:
        raise InputError(f"{len(indices)} items: MAUVE needs at least 4 texts per side (40+ for stable numbers)")
    t0 = time.perf_counter()
    ds = dataset or HellaSwag()
    store = store or Store()
    human = [it.choices[it.label] for it in ds.items(list(indices))]
    model = model_texts(lm, indices, decoding, dataset=ds, store=store, batch_size=batch_size, progress=progress)
    fp = features(featurizer, human, kind=kind, store=store)
    fq = features(featurizer, model, kind=kind, store=store)
    lab = MauveLab.from_features(fp, fq, p_texts=human, q_texts=model, seed=seed)
    log.info("MAUVE inputs for %s ready in %.1fs", lm.spec.name, time.perf_counter() - t0)
    return lab
