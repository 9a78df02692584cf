"""Cross-tokenizer KL: speed and values of the three per-byte measures of `evalcore.runs.crosskl`
on the bundled pair, P = smollm2-135m and Q = gemma3-270m, float32 on the CPU, one run.

    python bench/crosskl_speed.py [--texts 50] [--max-new-tokens 48] [--sentences 3] [--threads T]

Every measure runs in a fresh temporary store (nothing cached), after a warm-up of each in a
store of its own (a short text, one prompt), so first-call costs are left out:

    gap      run_gap on N BoolQ (wikipedia) passages that have at least 256 SmolLM2 tokens,
             each cut to its first 256 (its text up to the end of token 256; Gemma scores the
             same bytes with its own tokens): seconds, and seconds per 50 texts (scaled
             linearly from N); the gap bpb(Q) - bpb(P) with its paired bootstrap 95% interval
    mc       run_mc_kl both ways after N prompts (the first sentences of the first N passages,
             `data.prompts("wikipedia")`, what `evalcore kl --corpus wikipedia` uses): each model
             samples one continuation of up to --max-new-tokens per prompt, then both models
             score prompts and prompt + continuation; seconds for all of it, both directions, and
             per 50 prompts; KL(P‖Q), KL(Q‖P) per byte (k1 ± SE, 95% interval; k3 too)
    bytes    run_next_bytes on --sentences first sentences of 60-150 UTF-8 bytes: bytes per
             second (text bytes over the wall time of both models' distributions), and per model
    pruning  on the first of those sentences, per model: the default settings against a nearly
             unpruned run (`next_byte_distributions(..., prune_nats=25, max_states=64)`): the
             largest total-variation distance between their next-byte distributions over the
             positions, next to the default run's `pruned_total` (the error estimate it reports)

The defaults take about 6 minutes on 2 quiet cores; the last line is the figures as JSON.
On a machine whose cores are busy with other work, --threads 1 keeps torch's threads from
waiting on each other at every operation (two threads can then be many times slower).
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

TEXT_TOKENS = 256
PER = 50  # speeds are reported per this many texts or prompts


def cut_texts(lm_p, n: int) -> list[str]:
    """The first n BoolQ passages with at least TEXT_TOKENS tokens of P, each cut after its
    TEXT_TOKENS-th token (the bytes those tokens spell; a character split by the cut is dropped)."""
    from evalcore.data import corpus
    from evalcore.scoring.tokenbytes import token_byte_table

    table = token_byte_table(lm_p.tokenizer)
    out = []
    for passage in corpus("wikipedia"):
        ids = lm_p.tokenizer(passage, add_special_tokens=False).input_ids
        if len(ids) >= TEXT_TOKENS:
            raw = b"".join(table[t] or b"" for t in ids[:TEXT_TOKENS])
            out.append(raw.decode("utf-8", errors="ignore"))
            if len(out) == n:
                return out
    raise SystemExit(f"only {len(out)} passages have {TEXT_TOKENS}+ tokens; ask for fewer --texts")


def sentences(k: int) -> list[str]:
    """The first k first-sentences of BoolQ passages with 60 to 150 UTF-8 bytes."""
    from evalcore.data import prompts

    picked = [s for s in prompts("wikipedia", limit=400) if 60 <= len(s.encode("utf-8")) <= 150]
    return picked[:k]


def warm_up(lm_p, lm_q, tmp: Path) -> None:
    """Each measure once on a tiny input, in a store that is then dropped."""
    from evalcore.runs.crosskl import run_gap, run_mc_kl, run_next_bytes
    from evalcore.store import Store

    store = Store(tmp / "warm.sqlite")
    run_gap(lm_p, lm_q, ["A short text to warm up."], store=store)
    run_mc_kl(lm_p, lm_q, ["The weather today is"], max_new_tokens=4, store=store)
    run_next_bytes(lm_p, lm_q, "Hi.", store=store)
    store.close()


def bench_gap(lm_p, lm_q, texts: list[str], tmp: Path) -> dict:
    from evalcore.runs.crosskl import run_gap
    from evalcore.store import Store

    g = run_gap(lm_p, lm_q, texts, store=Store(tmp / "gap.sqlite"))
    q_tokens = np.mean([len(lm_q.tokenizer(t, add_special_tokens=False).input_ids) for t in texts])
    print(f"gap: {len(texts)} passages cut to {TEXT_TOKENS} {lm_p.spec.name} tokens ({q_tokens:.0f} {lm_q.spec.name} "
          f"tokens, {g.n_bytes / len(texts):.0f} bytes on average), both models: {g.seconds:.1f} s -> "
          f"{g.seconds * PER / len(texts):.1f} s per {PER} texts", flush=True)
    lo, hi = g.gap.ci95
    print(f"     gap bpb(Q) - bpb(P) = {g.gap.value:+.4f} bits/byte, 95% CI [{lo:+.4f}, {hi:+.4f}] "
          f"(bpb P {g.bpb_p:.4f}, Q {g.bpb_q:.4f})", flush=True)
    return {"texts": len(texts), "seconds": round(g.seconds, 2),
            f"seconds_per_{PER}": round(g.seconds * PER / len(texts), 2), "gap_bits_per_byte": g.gap.value,
            "ci95": [lo, hi], "bpb_p": g.bpb_p, "bpb_q": g.bpb_q}


def bench_mc(lm_p, lm_q, n: int, max_new: int, tmp: Path) -> dict:
    from evalcore.data import prompts
    from evalcore.runs.crosskl import run_mc_kl
    from evalcore.store import Store

    res = run_mc_kl(lm_p, lm_q, prompts("wikipedia", limit=n), max_new_tokens=max_new, store=Store(tmp / "mc.sqlite"))
    print(f"mc: {n} prompts, one continuation of up to {max_new} new tokens per prompt and model, sampled and scored "
          f"both ways: {res.seconds:.1f} s -> {res.seconds * PER / n:.1f} s per {PER} prompts", flush=True)
    out = {"prompts": n, "max_new_tokens": max_new, "seconds": round(res.seconds, 2),
           f"seconds_per_{PER}": round(res.seconds * PER / n, 2)}
    assert res.qp is not None
    for key, name, d in (("kl_pq", f"KL({lm_p.spec.name}‖{lm_q.spec.name})", res.pq),
                         ("kl_qp", f"KL({lm_q.spec.name}‖{lm_p.spec.name})", res.qp)):
        k1, k3 = d.kl.k1, d.kl.k3
        used = d.samples - d.empty - d.non_canonical
        print(f"     {name} = {k1.value:.4f} ± {k1.se:.4f} nats/byte (k1, 95% [{k1.ci95[0]:.4f}, {k1.ci95[1]:.4f}]"
              + (f"; k3 {k3.value:.4f} ± {k3.se:.4f}" if k3 else "")
              + f") from {used} of {d.samples} samples, {d.n_bytes} bytes ({d.empty} empty, "
              f"{d.non_canonical} non-canonical)", flush=True)
        out[key] = {"k1": k1.value, "se": k1.se, "ci95": list(k1.ci95), "k3": k3.value if k3 else None,
                    "used": used, "n_bytes": d.n_bytes}
    return out


def bench_bytes(lm_p, lm_q, texts: list[str], tmp: Path) -> tuple[dict, list]:
    """bytes per second of run_next_bytes, and its results (for the pruning check)."""
    from evalcore.runs.crosskl import run_next_bytes
    from evalcore.store import Store

    store = Store(tmp / "bytes.sqlite")
    results, wall = [], 0.0
    for t in texts:
        t0 = time.perf_counter()
        results.append(run_next_bytes(lm_p, lm_q, t, store=store))
        wall += time.perf_counter() - t0
    n = sum(len(t.encode("utf-8")) for t in texts)
    sides = ((lm_p, "p"), (lm_q, "q"))
    per_model = {lm.spec.name: n / sum(getattr(r, side).seconds for r in results) for lm, side in sides}
    calls = {lm.spec.name: sum(getattr(r, side).forward_calls for r in results) for lm, side in sides}
    sizes = [len(t.encode("utf-8")) for t in texts]
    print(f"bytes: {len(texts)} sentences, {n} bytes ({min(sizes)}-{max(sizes)} each), both models: {wall:.1f} s -> "
          f"{n / wall:.2f} bytes/s; "
          + ", ".join(f"{k} alone {v:.2f} bytes/s ({calls[k]} forward calls)" for k, v in per_model.items()), flush=True)
    for size, r in zip(sizes, results):
        s, m = r.div.sums(), r.div.n
        print(f"     {size} bytes: KL(P‖Q) {s['kl_pq']:.2f}, KL(Q‖P) {s['kl_qp']:.2f}, JS {s['js']:.2f} nats summed "
              f"({s['kl_pq'] / m:.3f} / {s['kl_qp'] / m:.3f} / {s['js'] / m:.3f} per position)", flush=True)
    return {"sentences": len(texts), "bytes": n, "seconds": round(wall, 2), "bytes_per_s": n / wall,
            "bytes_per_s_per_model": per_model, "forward_calls": calls}, results


def pruning_check(lm_p, lm_q, res) -> dict:
    """The default run's distributions against a nearly unpruned run's, per model, on one sentence."""
    from evalcore.scoring.nextbyte import next_byte_distributions

    out = {}
    for lm, dflt in ((lm_p, res.p), (lm_q, res.q)):
        full = next_byte_distributions(lm, dflt.text, prune_nats=25, max_states=64)
        tv = 0.5 * np.abs(dflt.probs - full.probs).sum(1)
        at = int(tv.argmax())
        print(f"pruning, {lm.spec.name}, {dflt.n_bytes} bytes: max TV {tv.max():.2e} (at byte {at}), "
              f"pruned_total {dflt.pruned_total[-1]:.2e} (at that byte {dflt.pruned_total[at]:.2e}); "
              f"states/position {dflt.states.mean():.1f} vs {full.states.mean():.1f}, "
              f"forward calls {dflt.forward_calls} vs {full.forward_calls}, "
              f"{dflt.seconds:.1f} s vs {full.seconds:.1f} s", flush=True)
        out[lm.spec.name] = {"max_tv": float(tv.max()), "at": at, "pruned_total": float(dflt.pruned_total[-1]),
                             "pruned_total_at": float(dflt.pruned_total[at]),
                             "unpruned_pruned_total": float(full.pruned_total[-1]),
                             "seconds": [dflt.seconds, full.seconds]}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--texts", type=int, default=PER, help="gap texts and mc prompts (default 50)")
    ap.add_argument("--max-new-tokens", type=int, default=48, help="mc: new tokens per continuation, at most")
    ap.add_argument("--sentences", type=int, default=3, help="bytes: sentences of 60-150 bytes")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    args = ap.parse_args()

    import torch

    from evalcore.models import load_model

    if args.threads:
        torch.set_num_threads(args.threads)
    lm_p = load_model("smollm2-135m", device="cpu", dtype="float32")
    lm_q = load_model("gemma3-270m", device="cpu", dtype="float32")
    texts, sents = cut_texts(lm_p, args.texts), sentences(args.sentences)
    print(f"P = {lm_p.spec.name}, Q = {lm_q.spec.name}, float32, cpu, {torch.get_num_threads()} threads", flush=True)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        warm_up(lm_p, lm_q, Path(tmp))
        rows = {"gap": bench_gap(lm_p, lm_q, texts, Path(tmp)),
                "mc": bench_mc(lm_p, lm_q, args.texts, args.max_new_tokens, Path(tmp))}
        rows["bytes"], results = bench_bytes(lm_p, lm_q, sents, Path(tmp))
        rows["pruning"] = pruning_check(lm_p, lm_q, results[0])
    rows["settings"] = {**vars(args), "threads": torch.get_num_threads(), "wall_s": round(time.perf_counter() - t0, 1)}
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
