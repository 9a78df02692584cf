"""The `kl` command: how far model P is from model Q, by one of four measures (--method).

    token  run_token_kl on each text, pooled over positions (one shared tokenizer)
    gap    run_gap: the cross-entropy gap per byte on the texts                   } any tokenizers,
    mc     run_mc_kl: Monte-Carlo KL per byte, both ways, after a corpus's prompts } per byte
    bytes  run_next_bytes: next-byte distributions over one short text            } (runs.crosskl)

auto picks token when the tokenizers match; otherwise bytes for one --text-file of at most
MAX_TEXT_BYTES UTF-8 bytes, gap for a longer one, and gap then mc for a --corpus.
"""
from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from evalcore.cli.args import DTYPES, MAX_TOP_K, device_args, int_in, out_arg, text_args, texts
from evalcore.cli.output import progress_bar, report

if TYPE_CHECKING:
    from evalcore.models import LoadedModel

MAX_TEXT_BYTES = 200  # = scoring.nextbyte's (a test holds them equal); importing it would load numpy at every start
METHODS = ["auto", "token", "gap", "mc", "bytes"]

MEASURES = f"""\
measures (--method):
  token  KL(P||Q), KL(Q||P) and JS between the two models' next-token
         distributions at each token of the texts, averaged over positions,
         in nats per token; top-1 agreement and top-k overlap too. The
         models must share a tokenizer.
  gap    the cross-entropy gap bpb(Q) - bpb(P) on the texts, in bits per
         byte, with a paired bootstrap 95% interval. Any tokenizers. Not a
         divergence: it is 0 whenever the two models give the texts the same
         total probability, even where they differ.
  mc     Monte-Carlo KL(P||Q) and KL(Q||P) in nats per byte, with standard
         errors: the KL between the two models' distributions over
         continuations of the --corpus prompts, over the continuations' mean
         length in bytes, from one sample of each model per prompt
         (--max-new-tokens, --seed) scored by both. Any tokenizers.
  bytes  exact next-byte distributions of both models along one short text
         (a --text-file of at most {MAX_TEXT_BYTES} UTF-8 bytes, a final newline
         included), each summing over every tokenization of the bytes so
         far; KL both ways and JS at each byte, summed over the text and
         per byte, in nats. Any tokenizers.
  auto   token when the tokenizers match; otherwise bytes for a --text-file
         of at most {MAX_TEXT_BYTES} bytes, gap for a longer one, gap and mc for a
         --corpus.

gap, mc and bytes work per byte, so any two models compare; they are not
comparable with token-level KL (a token spans several bytes), nor with each
other: each answers its own question (the texts' total probability; the
texts each model writes; each position of one text).
"""


def add_kl(p: argparse.ArgumentParser) -> None:
    """Adds the `kl` command's arguments (models P and Q, the texts, the measure and its settings,
    --out) and the measures' explanation under the options in --help."""
    p.formatter_class = argparse.RawDescriptionHelpFormatter  # the measures' table keeps its layout
    p.description = "How far model P is from model Q on text, by one of four measures (--method)."
    p.epilog = MEASURES
    p.add_argument("--model-p", required=True, help="model P (registry name, folder or hub id)")
    p.add_argument("--model-q", required=True, help="model Q (any tokenizer; see --method)")
    device_args(p)
    p.add_argument("--dtype-q", default=None, choices=DTYPES,
                   help="dtype for Q only (e.g. compare a model at float32 with itself at bfloat16)")
    text_args(p)
    p.add_argument("--method", choices=METHODS, default="auto", help="the measure (default auto; see below)")
    p.add_argument("--top-k", type=int_in(1, MAX_TOP_K), default=10, help="token: k for top-k agreement (1..10,000)")
    p.add_argument("--max-length", type=int_in(2), default=1024,
                   help="token: tokens of each text compared; gap: tokens per scoring window")
    p.add_argument("--max-new-tokens", type=int_in(1, 512), default=48, help="mc: tokens sampled per prompt")
    p.add_argument("--seed", type=int_in(0), default=0, help="mc: the sampling seed")
    p.add_argument("--store", default=None, help="results store (default: the cache's results.sqlite)")
    out_arg(p)


def run_kl(args: argparse.Namespace) -> int:
    """KL between two models as JSON, by the measure --method names (auto: module docstring).
    A text too long for bytes is refused before any model loads."""
    from evalcore.models import load_model

    items = texts(args)
    short = args.text_file is not None and len(items[0].encode("utf-8")) <= MAX_TEXT_BYTES
    if args.method == "bytes":
        _check_bytes_input(args, items)
    lm_p = load_model(args.model_p, device=args.device, dtype=args.dtype)
    lm_q = load_model(args.model_q, device=args.device, dtype=args.dtype_q or args.dtype)
    same = lm_p.tokenizer.get_vocab() == lm_q.tokenizer.get_vocab()
    method = args.method if args.method != "auto" else "token" if same else "bytes" if short else "gap"
    if method == "token":
        return _token_kl(args, lm_p, lm_q, items)
    if method == "bytes":
        return _next_bytes(args, lm_p, lm_q, items[0])
    return _byte_kl(args, lm_p, lm_q, items, method)


def _check_bytes_input(args: argparse.Namespace, items: list[str]) -> None:
    """--method bytes takes one --text-file of at most MAX_TEXT_BYTES bytes: an InputError that
    says what to do otherwise."""
    from evalcore.errors import InputError

    if args.text_file is None:
        raise InputError(f"--method bytes compares the models along one short text: give --text-file with at most "
                         f"{MAX_TEXT_BYTES} UTF-8 bytes (for a corpus: --method gap or mc)")
    n = len(items[0].encode("utf-8"))
    if n > MAX_TEXT_BYTES:
        raise InputError(f"--text-file {args.text_file} has {n} UTF-8 bytes; --method bytes takes at most "
                         f"{MAX_TEXT_BYTES}: shorten it, or use --method gap for a text of any length")


def _next_bytes(args: argparse.Namespace, lm_p: LoadedModel, lm_q: LoadedModel, text: str) -> int:
    """Next-byte distributions of both models along one short text; KL both ways and JS per position."""
    from evalcore.runs.crosskl import run_next_bytes
    from evalcore.store import Store

    bar, update = progress_bar("bytes: positions, both models")
    res = run_next_bytes(lm_p, lm_q, text, store=Store(args.store), progress=update)
    bar.close()
    out = res.to_dict()
    s, b = out["sums"], out["per_byte"]
    return report(args, out, f"{lm_p.spec.name} vs {lm_q.spec.name}, next-byte distributions over {out['positions']} "
                             f"positions: KL(P||Q) {s['kl_pq']:.4f}, KL(Q||P) {s['kl_qp']:.4f}, JS {s['js']:.4f} nats "
                             f"in all ({b['kl_pq']:.4f} / {b['kl_qp']:.4f} / {b['js']:.4f} per position) -> {args.out}")


def _byte_kl(args: argparse.Namespace, lm_p: LoadedModel, lm_q: LoadedModel, items: list[str], method: str) -> int:
    """The per-byte measures on texts: the gap, and (mc, or auto on a corpus) Monte-Carlo KL."""
    from evalcore.data import prompts
    from evalcore.errors import InputError
    from evalcore.runs.crosskl import run_gap, run_mc_kl
    from evalcore.store import Store

    store = Store(args.store)
    out: dict[str, Any] = {"model_p": lm_p.identity(), "model_q": lm_q.identity(), "measures": []}
    line = []
    if method == "gap" or args.method == "auto":
        bar, update = progress_bar("gap: texts scored, both models")
        gap = run_gap(lm_p, lm_q, items, max_length=args.max_length, store=store, progress=update)
        bar.close()
        out["gap"] = gap.to_dict()
        out["measures"].append("gap")
        line.append(f"gap {gap.gap.value:+.4f} bits/byte [{gap.gap.ci95[0]:+.4f}, {gap.gap.ci95[1]:+.4f}]")
    if method == "mc" or (args.method == "auto" and args.corpus is not None):
        if args.corpus is None:
            raise InputError("--method mc samples after a corpus's prompts: give --corpus hellaswag or wikipedia")
        bar, update = progress_bar("mc: sample, then score both ways")
        mc = run_mc_kl(lm_p, lm_q, prompts(args.corpus, limit=args.limit or 100), max_new_tokens=args.max_new_tokens,
                       seed=args.seed, store=store, progress=update)
        bar.close()
        out["mc"] = mc.to_dict()
        out["measures"].append("mc")
        k = [mc.pq.kl.k1, mc.qp.kl.k1] if mc.qp else [mc.pq.kl.k1]
        line.append("KL(P||Q) " + " / KL(Q||P) ".join(f"{e.value:.4f} ± {e.se:.4f}" for e in k) + " nats/byte")
    return report(args, out, f"{lm_p.spec.name} vs {lm_q.spec.name}: {'; '.join(line)} -> {args.out}")


def _token_kl(args: argparse.Namespace, lm_p: LoadedModel, lm_q: LoadedModel, items: list[str]) -> int:
    """Token-level KL both ways, JS and top-k agreement, pooled over positions."""
    import numpy as np

    from evalcore.runs import run_token_kl

    per_text = [run_token_kl(lm_p, lm_q, t, k=args.top_k, max_length=args.max_length) for t in items]
    pos = np.array([len(r.kl_pq) for r in per_text], dtype=float)
    summ = [r.summary() for r in per_text]
    pooled = {key: float(np.average([s[key] for s in summ], weights=pos))
              for key in ("kl_pq", "kl_qp", "js", "top1_agreement", f"top{args.top_k}_overlap")}
    out = {"model_p": per_text[0].model_p, "model_q": per_text[0].model_q, **pooled, "positions": int(pos.sum()),
           "n_texts": len(items), "units": "nats, mean over positions", "texts": summ}
    return report(args, out, f"KL(P||Q) {pooled['kl_pq']:.4f}, KL(Q||P) {pooled['kl_qp']:.4f}, JS {pooled['js']:.4f} "
                             f"nats over {int(pos.sum())} positions; top-1 agreement {pooled['top1_agreement']:.3f} "
                             f"-> {args.out}")
