"""HellaSwag throughput and agreement: evalcore vs lm-evaluation-harness's HF backend.

Same model (the converted safetensors folder), same items, same machine, one run, like
for like (float32 vs float32, bf16 vs bf16). Prints items/s, ratios, per-item agreement,
start-up time, and the fraction of the model body's token-throughput ceiling achieved.

    python bench/hellaswag_throughput.py [--n 200] [--models smollm2-135m gemma3-270m]
                                         [--dtypes float32 bfloat16] [--lm-eval-batch 32] [--repeats R]
                                         [--peer-tuned-malloc]

lm-eval runs in a fresh interpreter each time, as its users run it: evalcore sets glibc's
malloc thresholds for its own process when it loads a model for CPU
(`evalcore.runtime.tune_cpu_allocator`), and that must not speed up or slow down the peer.
`--peer-tuned-malloc` also times lm-eval with the same settings, for comparison.

lm-eval's own hellaswag task fetches the dataset from the hub; offline we feed its HF
backend the same (context, continuation) requests built with lm-eval's own
`lm_eval.tasks.hellaswag.utils.process_docs`, which also checks our preprocessing.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
from ceiling import body_peak_tokens_per_s  # bench/ceiling.py

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


def lm_eval_requests(ds, indices):
    """(context, continuation) pairs and gold labels from lm-eval's own preprocessing."""
    from lm_eval.tasks.hellaswag.utils import process_docs

    import datasets

    docs = process_docs(datasets.Dataset.from_list([ds._ds[i] for i in indices]))
    reqs, labels, choices = [], [], []
    for d in docs:
        for c in d["choices"]:
            reqs.append((d["query"], " " + c))
        labels.append(int(d["gold"]))
        choices.append(d["choices"])
    return reqs, labels, choices


PEER = r"""
import json, sys, time
from lm_eval.api.instance import Instance
from lm_eval.models.huggingface import HFLM
folder, dtype, batch, reqs_path, out_path = sys.argv[1:6]
reqs = json.load(open(reqs_path))
t0 = time.perf_counter()
lm = HFLM(pretrained=folder, dtype=dtype, batch_size=int(batch), device="cpu")
t_load = time.perf_counter() - t0
inst = [Instance("loglikelihood", {}, tuple(r), i) for i, r in enumerate(reqs)]
t0 = time.perf_counter()
out = lm.loglikelihood(inst, disable_tqdm=True)
json.dump({"loglik": [o[0] for o in out], "seconds": time.perf_counter() - t0, "load": t_load}, open(out_path, "w"))
"""

def run_lm_eval(folder, dtype, reqs, batch, *, tuned_malloc=False):
    """lm-eval's HF backend in a fresh interpreter, as its users run it: evalcore's process-wide
    malloc settings (set when it loads a model for CPU) do not reach it. `tuned_malloc` gives
    it the same settings. Returns ([N, 4] log-likelihoods, scoring seconds, load seconds)."""
    with tempfile.TemporaryDirectory() as tmp:
        with open(f"{tmp}/reqs.json", "w") as f:
            json.dump(reqs, f)
        env = dict(os.environ)
        if tuned_malloc:  # evalcore.runtime.tune_cpu_allocator's thresholds, as glibc's environment variables
            from evalcore.runtime import MALLOC_MMAP_THRESHOLD, MALLOC_TRIM_THRESHOLD

            env.update(MALLOC_MMAP_THRESHOLD_=str(MALLOC_MMAP_THRESHOLD), MALLOC_TRIM_THRESHOLD_=str(MALLOC_TRIM_THRESHOLD))
        out = subprocess.run([sys.executable, "-c", PEER, folder, dtype, str(batch), f"{tmp}/reqs.json",
                              f"{tmp}/out.json"], env=env, capture_output=True, text=True)
        if out.returncode:
            raise RuntimeError(f"lm-eval failed:\n{out.stderr[-3000:]}")
        with open(f"{tmp}/out.json") as f:
            r = json.load(f)
    return np.array(r["loglik"]).reshape(-1, 4), r["seconds"], r["load"]


def startup_seconds(code: str) -> float:
    """Process start to first scored item, in a fresh interpreter (weights already cached)."""
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--models", nargs="+", default=["smollm2-135m", "gemma3-270m"])
    ap.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    ap.add_argument("--lm-eval-batch", type=int, default=32)
    ap.add_argument("--skip-startup", action="store_true")
    ap.add_argument("--repeats", type=int, default=1, help="alternate evalcore and lm-eval R times; medians")
    ap.add_argument("--peer-tuned-malloc", action="store_true",
                    help="also time lm-eval with evalcore's malloc settings (a third run per repeat)")
    args = ap.parse_args()

    from evalcore.data import HellaSwag
    from evalcore.metrics.hellaswag import predictions
    from evalcore.models import ensure_converted, load_model, resolve_spec
    from evalcore.runs import run_hellaswag
    from evalcore.store import Store

    ds = HellaSwag()
    idx = list(range(args.n))
    reqs, labels, choices = lm_eval_requests(ds, idx)
    ours_items = ds.items(idx)
    same_pre = all(list(it.choices) == list(c) and it.query == reqs[4 * k][0]
                   for k, (it, c) in enumerate(zip(ours_items, choices)))
    print(f"preprocessing identical to lm-eval's process_docs on {args.n} items: {same_pre}")
    labels = np.array(labels)
    cl = np.array([[len(c) for c in cs] for cs in choices], dtype=float)
    summary = {}
    f32_acc: dict[str, tuple[float, float]] = {}
    for name in args.models:
        folder = str(ensure_converted(resolve_spec(name)))
        for dtype in args.dtypes:
            lm = load_model(name, device="cpu", dtype=dtype)
            # --repeats R: evalcore and lm-eval alternate R times (this VM's speed drifts by tens of
            # percent over minutes); each side's median time is used
            t_ours: list[float] = []
            t_refs: list[float] = []
            t_tuned: list[float] = []
            for _ in range(args.repeats):
                with tempfile.TemporaryDirectory() as tmp:  # fresh store: no cached items
                    run_hellaswag(lm, idx[:8], dataset=ds, store=Store(f"{tmp}/w.sqlite"))  # warm-up
                    res = run_hellaswag(lm, idx, dataset=ds, store=Store(f"{tmp}/s.sqlite"))
                t_ours.append(res.seconds)
                ref, t_ref, _ = run_lm_eval(folder, dtype, reqs, args.lm_eval_batch)
                t_refs.append(t_ref)
                if args.peer_tuned_malloc:
                    t_tuned.append(run_lm_eval(folder, dtype, reqs, args.lm_eval_batch, tuned_malloc=True)[1])
            ours = res.loglik()
            secs, t_ref = float(np.median(t_ours)), float(np.median(t_refs))
            if args.repeats > 1:
                print(f"  {name} {dtype} per-repeat ratios: "
                      + ", ".join(f"{b / a:.2f}x" for a, b in zip(t_ours, t_refs)), flush=True)
            if t_tuned:
                print(f"  {name} {dtype} lm-eval with evalcore's malloc settings: {args.n / np.median(t_tuned):.2f} "
                      f"items/s (as shipped {args.n / t_ref:.2f}); evalcore is {np.median(t_tuned) / secs:.2f}x it; "
                      "per repeat " + ", ".join(f"{b / a:.2f}x" for a, b in zip(t_ours, t_tuned)), flush=True)
            p1, n1 = predictions(ours, cl)
            p2, n2 = predictions(ref, cl)
            acc = ((p1 == labels).mean(), (n1 == labels).mean())
            acc_ref = ((p2 == labels).mean(), (n2 == labels).mean())
            if dtype == "float32":
                f32_acc[name] = acc
            ips, ips_ref = args.n / secs, args.n / t_ref
            toks = sum(sum(r.n_tokens) for r in res.items)
            ctx_tokens = sum(len(lm.tokenizer(it.query).input_ids) for it in ours_items)
            row = {
                "items_per_s": round(ips, 2), "lm_eval_items_per_s": round(ips_ref, 2),
                "ratio": round(ips / ips_ref, 2),
                "agree_pred": float((p1 == p2).mean()), "agree_pred_norm": float((n1 == n2).mean()),
                "max_abs_loglik_diff": float(np.abs(ours - ref).max()),
                "acc": round(acc[0], 4), "acc_norm": round(acc[1], 4),
                "lm_eval_acc": round(acc_ref[0], 4), "lm_eval_acc_norm": round(acc_ref[1], 4),
                "tokens_per_item": round((toks + ctx_tokens) / args.n, 1),
                "tokens_per_s": round((toks + ctx_tokens) / secs, 1),
            }
            peak = body_peak_tokens_per_s(lm)
            ceiling = peak / ((toks + ctx_tokens) / args.n)
            row.update(body_peak_tokens_per_s=round(peak, 1), ceiling_items_per_s=round(ceiling, 2),
                       fraction_of_ceiling=round(ips / ceiling, 3),
                       three_x_lm_eval_is_fraction_of_ceiling=round(3 * ips_ref / ceiling, 3))
            if dtype != "float32" and name in f32_acc:
                row["acc_vs_float32_points"] = round(100 * (acc[0] - f32_acc[name][0]), 2)
                row["acc_norm_vs_float32_points"] = round(100 * (acc[1] - f32_acc[name][1]), 2)
            summary[f"{name}/{dtype}"] = row
            print(f"{name} {dtype}: evalcore {ips:.2f} items/s, lm-eval {ips_ref:.2f} items/s -> {ips / ips_ref:.2f}x; "
                  f"predictions agree {row['agree_pred']:.3f} (norm {row['agree_pred_norm']:.3f}); "
                  f"max |Δ loglik| {row['max_abs_loglik_diff']:.2e}; acc {acc[0]:.3f}/{acc_ref[0]:.3f}, "
                  f"acc_norm {acc[1]:.3f}/{acc_ref[1]:.3f}; {row['tokens_per_s']:.0f} tokens/s", flush=True)
            print(f"  ceiling: body peak {peak:.0f} tokens/s on 4 x 512-token causal rows / {row['tokens_per_item']} "
                  f"tokens an item = {ceiling:.1f} items/s; evalcore reaches {ips / ceiling:.0%} of it "
                  f"(3x lm-eval would be {3 * ips_ref / ceiling:.0%})", flush=True)
        if not args.skip_startup:
            ours_code = (f"from evalcore.models import load_model; from evalcore import scoring, data; "
                         f"lm = load_model('{name}', device='cpu', dtype='float32'); it = data.HellaSwag().item(0); "
                         f"scoring.score_groups(lm, [scoring.encode_pair(lm.tokenizer, it.query, it.continuations)])")
            ref_code = (f"from lm_eval.models.huggingface import HFLM; from lm_eval.api.instance import Instance; "
                        f"lm = HFLM(pretrained='{folder}', dtype='float32', batch_size=1, device='cpu'); "
                        f"lm.loglikelihood([Instance('loglikelihood', {{}}, ('Hello there', ' world'), 0)], disable_tqdm=True)")
            s_ours, s_ref = startup_seconds(ours_code), startup_seconds(ref_code)
            summary[f"{name}/startup_s"] = {"evalcore": round(s_ours, 2), "lm_eval": round(s_ref, 2)}
            print(f"{name} start-up to first scored item: evalcore {s_ours:.1f}s, lm-eval {s_ref:.1f}s", flush=True)
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
