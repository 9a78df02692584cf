"""Perplexity throughput and agreement: evalcore vs the Hugging Face guide's strided loop
scored with torchmetrics' Perplexity, same model, same texts, same windows, one run.

    python bench/perplexity_throughput.py [--texts 40] [--max-length 512] [--stride 256]

The peer is the loop from the transformers docs ("Perplexity of fixed-length models"):
one text at a time, one window at a time, full logits, labels masked with -100 outside
the scored part; torchmetrics.text.Perplexity accumulates those logits.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


def peer_perplexity(lm, texts, max_length, stride):
    import torch
    from torchmetrics.text import Perplexity

    metric = Perplexity(ignore_index=-100)
    from evalcore.scoring.sequence import encode_scored

    n_tok = 0
    for text in texts:  # the same token ids as evalcore scores: the prefix token (BOS, else end-of-text), then the text's
        ids = torch.tensor([encode_scored(lm.tokenizer, text)])
        L = ids.shape[1]
        prev_end = 0
        for begin in range(0, L, stride):
            end = min(begin + max_length, L)
            trg_len = end - prev_end
            inp = ids[:, begin:end]
            labels = inp.clone()
            labels[:, :-trg_len] = -100
            with torch.inference_mode():
                logits = lm.model(inp).logits.float()
            metric.update(logits[:, :-1], labels[:, 1:])
            n_tok += int((labels[:, 1:] != -100).sum())
            prev_end = end
            if end == L:
                break
    return float(metric.compute()), n_tok


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--texts", type=int, default=40)
    ap.add_argument("--max-length", type=int, default=512)
    ap.add_argument("--stride", type=int, default=256)
    ap.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    args = ap.parse_args()

    from evalcore.data import corpus
    from evalcore.models import load_model
    from evalcore.runs import run_perplexity
    from evalcore.store import Store

    texts = corpus("wikipedia", limit=args.texts)
    rows = {}
    for dtype in args.dtypes:
        lm = load_model(args.model, device="cpu", dtype=dtype)
        with tempfile.TemporaryDirectory() as tmp:
            run_perplexity(lm, texts[:2], max_length=args.max_length, stride=args.stride, store=Store(f"{tmp}/w.sqlite"))
            res = run_perplexity(lm, texts, max_length=args.max_length, stride=args.stride, store=Store(f"{tmp}/s.sqlite"))
        t0 = time.perf_counter()
        ppl_ref, n_ref = peer_perplexity(lm, texts, args.max_length, args.stride)
        t_ref = time.perf_counter() - t0
        m = res.metrics
        tps, tps_ref = m.tokens / res.seconds, n_ref / t_ref
        rows[dtype] = {"tokens_per_s": round(tps, 1), "peer_tokens_per_s": round(tps_ref, 1), "ratio": round(tps / tps_ref, 2),
                       "perplexity": round(m.perplexity, 4), "peer_perplexity": round(ppl_ref, 4),
                       "rel_diff": abs(m.perplexity - ppl_ref) / ppl_ref, "tokens": m.tokens, "peer_tokens": n_ref,
                       "bits_per_byte": round(m.bits_per_byte, 4)}
        print(f"{args.model} {dtype}: evalcore {tps:.0f} tokens/s, HF loop + torchmetrics {tps_ref:.0f} tokens/s -> "
              f"{tps / tps_ref:.2f}x; perplexity {m.perplexity:.4f} vs {ppl_ref:.4f} "
              f"(rel diff {rows[dtype]['rel_diff']:.1e}); tokens {m.tokens} vs {n_ref}", flush=True)
    print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
