"""MAUVE speed against mauve-text on the same inputs, one run.

    python bench/mauve_speed.py [--n 2000] [--dim 768]

Synthetic features (N per side, dim 768) for the curve steps; the bundled smollm2-135m for
featurization (last-token hidden state, 500 texts) against mauve-text's own
`featurize_tokens_from_model` at its default batch size (1), on the decoder without its LM head
(AutoModel, as its `get_model` loads it).
"""
from __future__ import annotations

import argparse
import contextlib
import io
import os
import subprocess
import sys
import time

import numpy as np
from ceiling import body_peak_tokens_per_s  # bench/ceiling.py

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


PEER_ALONE = """
import time, numpy as np, mauve
rng = np.random.default_rng(0)
p = rng.normal(size=({n}, {dim})).astype(np.float32); q = (rng.normal(size=({n}, {dim})) + 0.05).astype(np.float32)
t = time.perf_counter(); mauve.compute_mauve(p_features=p, q_features=q, verbose=False); print(time.perf_counter() - t)
"""


def main() -> None:
    # evalcore imports faiss with its bundled OpenBLAS on this CPU's kernels (see
    # evalcore.runtime.import_faiss); importing it first gives mauve-text, in this
    # process, the same faiss: like for like. The last curve line shows mauve-text on its own.
    from evalcore.runtime import import_faiss

    import_faiss()
    import mauve

    from evalcore.runs.mauve import MauveLab

    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--texts", type=int, default=500)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    p = rng.normal(size=(args.n, args.dim)).astype(np.float32)
    q = (rng.normal(size=(args.n, args.dim)) + 0.05).astype(np.float32)

    t = time.perf_counter(); ref = mauve.compute_mauve(p_features=p, q_features=q, verbose=False); t_ref = time.perf_counter() - t
    t = time.perf_counter(); lab = MauveLab.from_features(p, q); t_pca = time.perf_counter() - t
    t = time.perf_counter(); ours = lab.result("auto"); t_k = time.perf_counter() - t
    t = time.perf_counter()
    for a in np.linspace(0.01, 0.99, 100):
        lab.point(float(a))
    t_alpha = (time.perf_counter() - t) / 100
    ks = [10, 25, 50, 75, 100, 150, 200, 300]
    t = time.perf_counter(); lab.sweep(ks); t_sweep = time.perf_counter() - t + t_pca
    t = time.perf_counter()
    for k in ks:
        mauve.compute_mauve(p_features=p, q_features=q, num_buckets=k, verbose=False)
    t_sweep_ref = time.perf_counter() - t
    print(f"compute_mauve {t_ref:.2f}s (MAUVE {ref.mauve:.4f}) vs evalcore PCA {t_pca:.2f}s + k-means {t_k:.2f}s "
          f"(MAUVE {ours.mauve:.4f}, |diff| {abs(ours.mauve - ref.mauve):.1e})")
    print(f"new alpha: {1000 * t_alpha:.3f} ms; new k: {t_k:.2f}s vs one compute_mauve {t_ref:.2f}s")
    print(f"sweep over {len(ks)} k: evalcore {t_sweep:.2f}s vs {len(ks)} compute_mauve calls {t_sweep_ref:.2f}s "
          f"-> {t_sweep_ref / t_sweep:.2f}x")
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_CORETYPE"}
    alone = subprocess.run([sys.executable, "-c", PEER_ALONE.format(n=args.n, dim=args.dim)], env=env,
                           capture_output=True, text=True, check=True)
    t_alone = float(alone.stdout.split()[-1])
    print(f"mauve-text alone in a fresh process (faiss's bundled OpenBLAS on its own CPU detection): compute_mauve "
          f"{t_alone:.2f}s; evalcore's new k is {t_alone / t_k:.1f}x faster than that, its sweep "
          f"{len(ks) * t_alone / t_sweep:.1f}x faster than {len(ks)} such calls")

    import torch
    from mauve.utils import featurize_tokens_from_model

    from evalcore.data import HellaSwag
    from evalcore.models import load_model
    from evalcore.scoring import featurize

    lm = load_model("smollm2-135m", device="cpu", dtype="float32")
    texts = [it.gold_text for it in HellaSwag().items(list(range(args.texts)))]
    t = time.perf_counter(); f_ours = featurize(lm, texts, kind="causal", max_length=1024); t_ours = time.perf_counter() - t
    toks = [torch.tensor(lm.tokenizer(x, truncation=True, max_length=1024).input_ids)[None] for x in texts]
    # mauve-text's get_model loads AutoModel (the decoder without its LM head): the same here,
    # transformers' LlamaModel on the same weights
    peer = load_model("smollm2-135m", device="cpu", dtype="float32", backend="transformers").model.base_model
    with contextlib.redirect_stderr(io.StringIO()):  # mauve-text's progress bar
        t = time.perf_counter(); f_ref = featurize_tokens_from_model(peer, toks, batch_size=1).numpy(); t_ref = time.perf_counter() - t
    print(f"featurize {args.texts} texts: evalcore {t_ours:.1f}s vs mauve-text {t_ref:.1f}s -> {t_ref / t_ours:.2f}x; "
          f"max |Δ feature| {np.abs(f_ours - f_ref).max():.1e}")
    n_tok = sum(t.shape[1] for t in toks)
    peak = body_peak_tokens_per_s(lm)  # the float32 ceiling, measured in this run
    print(f"  tokens/s: evalcore {n_tok / t_ours:.0f}, mauve-text {n_tok / t_ref:.0f} ({n_tok} tokens); the float32 "
          f"body's peak on 4 x 512-token rows is {peak:.0f} tokens/s: evalcore reaches {n_tok / t_ours / peak:.0%} "
          f"of it, and 3x mauve-text would need {3 * n_tok / t_ref / peak:.0%}")

    # not like for like: the opt-in bfloat16 featurizer (--featurizer-dtype bfloat16) against the float32 peer
    b16 = load_model("smollm2-135m", device="cpu", dtype="bfloat16")
    featurize(b16, texts[:16], kind="causal", max_length=1024)
    t = time.perf_counter(); f_b16 = featurize(b16, texts, kind="causal", max_length=1024); t_b16 = time.perf_counter() - t
    half = len(texts) // 2
    m32 = MauveLab.from_features(f_ours[:half], f_ours[half:]).result(25).mauve
    m16 = MauveLab.from_features(f_b16[:half], f_b16[half:]).result(25).mauve
    print(f"featurize bfloat16 (opt-in, not like for like): {t_b16:.1f}s -> {t_ref / t_b16:.2f}x mauve-text's float32; "
          f"max rel |Δ feature| {np.abs(f_b16 - f_ours).max() / np.abs(f_ours).max():.1e}; "
          f"MAUVE(first half, second half, k=25) {m16:.4f} vs float32 {m32:.4f}")


if __name__ == "__main__":
    main()
