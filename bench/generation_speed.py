"""Generation speed: evalcore's batched sampler against transformers' `generate`, one run.

    python bench/generation_speed.py [--n 16] [--new 32] [--models smollm2-135m gemma3-270m]
                                     [--dtypes float32 bfloat16] [--repeats R]

Same weights (the converted safetensors folder), same prompts (the first N HellaSwag contexts,
left-padded into one batch), same settings (temperature 1, top_p 0.95, no top-k, N x NEW new
tokens asked for, a row stopping at EOS), same machine. tokens/s = N x NEW / seconds on both
sides (the work asked for). Columns:

    evalcore    `evalcore.scoring.generate` on evalcore's model (`load_model`)
    generate    transformers' `model.generate(do_sample=True, ...)` on AutoModelForCausalLM,
                in a fresh interpreter, as its users run it (evalcore's process-wide malloc
                settings, `evalcore.runtime.tune_cpu_allocator`, do not reach it)
    forward     the ceiling: the same prefill and NEW - 1 decode steps of evalcore's forward on
                all N rows with the argmax fed back (no sampling, no early stop); evalcore can
                pass it when rows end early (finished rows leave the batch)

--repeats R alternates evalcore and generate R times and takes each side's median.
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

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

PEER = r"""
import json, sys, time, torch
from transformers import AutoModelForCausalLM, AutoTokenizer
folder, dtype, new, prompts_path, out_path = sys.argv[1:6]
prompts = json.load(open(prompts_path))
tok = AutoTokenizer.from_pretrained(folder)
tok.padding_side = "left"
model = AutoModelForCausalLM.from_pretrained(folder, dtype=getattr(torch, dtype)).eval()
pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
kw = dict(do_sample=True, temperature=1.0, top_p=0.95, top_k=0, pad_token_id=pad)
torch.manual_seed(0)
with torch.inference_mode():
    warm = tok(prompts[:2], return_tensors="pt", padding=True)
    model.generate(**warm, max_new_tokens=4, **kw)
    enc = tok(prompts, return_tensors="pt", padding=True)
    t = time.perf_counter()
    out = model.generate(**enc, max_new_tokens=int(new), **kw)
    secs = time.perf_counter() - t
n_new = int((out[:, enc.input_ids.shape[1]:] != pad).sum())
json.dump({"seconds": secs, "new_tokens": n_new}, open(out_path, "w"))
"""


def run_generate(folder: str, dtype: str, prompts: list[str], new: int) -> tuple[float, int]:
    """transformers' generate in a fresh interpreter: (seconds, new tokens it kept)."""
    with tempfile.TemporaryDirectory() as tmp:
        with open(f"{tmp}/prompts.json", "w") as f:
            json.dump(prompts, f)
        out = subprocess.run([sys.executable, "-c", PEER, folder, dtype, str(new), f"{tmp}/prompts.json",
                              f"{tmp}/out.json"], capture_output=True, text=True, check=False)
        if out.returncode:
            raise RuntimeError(f"transformers generate failed:\n{out.stderr[-3000:]}")
        with open(f"{tmp}/out.json") as f:
            r = json.load(f)
    return r["seconds"], r["new_tokens"]


def forward_seconds(lm, prompts: list[str], new: int) -> float:
    """Prefill and `new` - 1 decode steps of all rows, argmax fed back: the forward alone."""
    import torch

    gen_module = sys.modules["evalcore.scoring.generate"]
    tok = lm.tokenizer
    ids = [tok(p).input_ids for p in prompts]
    B, L = len(ids), max(len(x) for x in ids)
    inp = torch.zeros((B, L), dtype=torch.long)
    mask = torch.zeros((B, L + new), dtype=torch.long)
    for b, x in enumerate(ids):
        inp[b, L - len(x):] = torch.tensor(x)
        mask[b, L - len(x):L] = 1
    t = time.perf_counter()
    with torch.inference_mode():
        cache = gen_module._Cache(L + new) if lm.backend == "native" else lm.new_cache()
        pos = (mask[:, :L].cumsum(1) - 1).clamp_min(0)
        logits = lm.model(input_ids=inp, attention_mask=mask[:, :L], position_ids=pos, cache=cache, use_cache=True,
                          logits_to_keep=1).logits[:, -1]
        pos = pos[:, -1:]
        for step in range(new - 1):
            mask[:, L + step] = 1
            pos = pos + 1
            logits = lm.model(input_ids=logits.argmax(-1)[:, None], attention_mask=mask[:, : L + step + 1],
                              position_ids=pos, cache=cache, use_cache=True).logits[:, -1]
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=16, help="prompts (HellaSwag contexts), one batch")
    ap.add_argument("--new", type=int, default=32, help="new tokens asked for per prompt")
    ap.add_argument("--models", nargs="+", default=["smollm2-135m", "gemma3-270m"])
    ap.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    ap.add_argument("--repeats", type=int, default=1, help="alternate evalcore and generate R times; medians")
    args = ap.parse_args()

    from evalcore.data import HellaSwag
    from evalcore.models import ensure_converted, load_model, resolve_spec
    from evalcore.scoring import Decoding, generate

    items = HellaSwag().items(list(range(args.n)))
    prompts = [it.query for it in items]
    keys = [str(it.index) for it in items]
    asked = args.n * args.new
    d = Decoding(temperature=1.0, top_p=0.95)
    rows = []
    for name in args.models:
        folder = str(ensure_converted(resolve_spec(name)))
        for dtype in args.dtypes:
            lm = load_model(name, device="cpu", dtype=dtype)
            generate(lm, prompts[:2], keys[:2], [4, 4], d)  # warm-up
            t_ours, t_peer, made, made_peer = [], [], 0, 0
            for _ in range(args.repeats):
                t = time.perf_counter()
                texts = generate(lm, prompts, keys, [args.new] * args.n, d)
                t_ours.append(time.perf_counter() - t)
                made = sum(len(lm.tokenizer(x, add_special_tokens=False).input_ids) for x in texts)
                s, made_peer = run_generate(folder, dtype, prompts, args.new)
                t_peer.append(s)
            t_fwd = forward_seconds(lm, prompts, args.new)
            ours, peer, fwd = (asked / float(np.median(t)) for t in (t_ours, t_peer, [t_fwd]))
            rows.append((name, dtype, ours, peer, ours / peer, fwd, ours / fwd))
            print(f"{name} {dtype}: evalcore {ours:.1f} tokens/s, generate {peer:.1f} -> {ours / peer:.2f}x; forward "
                  f"ceiling {fwd:.1f} ({ours / fwd:.0%}); new tokens kept before EOS: evalcore ~{made}, "
                  f"generate {made_peer} of {asked}"
                  + (f"; per-repeat ratios {', '.join(f'{b / a:.2f}x' for a, b in zip(t_ours, t_peer))}"
                     if args.repeats > 1 else ""), flush=True)
    print(f"\n{args.n} HellaSwag contexts x {args.new} new tokens, temperature 1, top_p 0.95, "
          f"{__import__('torch').get_num_threads()} threads; tokens/s = {asked} / seconds")
    print("| model | dtype | evalcore tok/s | generate tok/s | ratio | forward ceiling tok/s | of ceiling |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for name, dtype, ours, peer, ratio, fwd, frac in rows:
        print(f"| {name} | {dtype} | {ours:.1f} | {peer:.1f} | {ratio:.2f}x | {fwd:.1f} | {frac:.0%} |")


if __name__ == "__main__":
    main()
