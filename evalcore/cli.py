"""`python -m evalcore ...` (or `evalcore ...`): batch runs with JSON out.

    evalcore models [--json]
    evalcore hellaswag --model NAME [--limit N | --indices FILE | --sample N --seed S]
                       [--device auto] [--dtype auto] [--batch-tokens T] --out FILE.json

Errors a user can act on print one line on stderr and exit with status 2.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from evalcore.errors import EvalcoreError


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="evalcore", description="Measure how far a language model's text is from human text.")
    p.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = p.add_subparsers(dest="cmd", required=True)

    m = sub.add_parser("models", help="list the model registry with availability here")
    m.add_argument("--json", action="store_true", help="print JSON instead of a table")

    h = sub.add_parser("hellaswag", help="HellaSwag accuracy (acc, acc_norm) with per-item results")
    _model_args(h)
    sel = h.add_mutually_exclusive_group()
    sel.add_argument("--limit", type=int, help="first N items")
    sel.add_argument("--indices", type=Path, help="JSON file with a list of row indices")
    sel.add_argument("--sample", type=int, help="N items sampled at random (with --seed)")
    h.add_argument("--seed", type=int, default=0, help="seed for --sample (default 0)")
    h.add_argument("--out", type=Path, required=True, help="where to write the JSON result")
    return p


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="registry name (see `evalcore models`), local folder or hub id")
    p.add_argument("--device", default="auto", help="auto (cuda > mps > cpu), cpu, cuda, mps")
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16"],
                   help="auto: bfloat16 on CUDA, float32 on CPU")
    p.add_argument("--batch-tokens", type=int, default=None, help="tokens per forward pass (default: automatic)")
    p.add_argument("--batch-size", type=int, default=None, dest="batch_items",
                   help="items per batch (alternative to --batch-tokens; ~110 tokens per HellaSwag item)")
    p.add_argument("--store", type=Path, default=None,
                   help="results store file (default: <cache>/results.sqlite; cache = $EVALCORE_CACHE or ~/.cache/evalcore)")


def cmd_models(args: argparse.Namespace) -> int:
    from evalcore.models import REGISTRY, availability

    rows = []
    for spec in REGISTRY.values():
        a = availability(spec)
        rows.append({**spec.to_dict(), "available": a.ok, "source": a.source, "detail": a.detail})
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    print(f"{'name':<14} {'params':>7} {'tokenizer':<9} {'available':<9} {'source':<16} detail")
    for r in rows:
        print(f"{r['name']:<14} {r['params_m']:>6.0f}M {r['tokenizer_family']:<9} {'yes' if r['available'] else 'no':<9} "
              f"{r['source']:<16} {r['detail']}")
    return 0


def _progress_bar(desc: str):
    from tqdm import tqdm

    bar = tqdm(total=0, desc=desc, unit="item", file=sys.stderr, disable=None)

    def update(done: int, total: int) -> None:
        bar.total = total
        bar.n = done
        bar.refresh()

    return bar, update


def _write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=1))
    os.replace(tmp, path)


def cmd_hellaswag(args: argparse.Namespace) -> int:
    from evalcore.data import HellaSwag, select_indices
    from evalcore.models import load_model
    from evalcore.runs import run_hellaswag
    from evalcore.store import Store

    if args.sample is None and args.seed != 0:
        raise EvalcoreError("--seed only applies with --sample N")
    ds = HellaSwag()
    idx = select_indices(len(ds), limit=args.limit, indices=args.indices, sample=args.sample, seed=args.seed)
    lm = load_model(args.model, device=args.device, dtype=args.dtype)
    bt = args.batch_tokens or (args.batch_items * 110 * 2 if args.batch_items else None)
    bar, update = _progress_bar(f"hellaswag {lm.spec.name}")
    res = run_hellaswag(lm, idx, dataset=ds, store=Store(args.store), batch_tokens=bt, progress=update)
    bar.close()
    out = res.to_dict()
    out["model"]["load_seconds"] = round(lm.load_seconds, 3)
    _write_json(args.out, out)
    r = out["results"]
    print(f"{lm.spec.name}: acc {r['acc']:.4f} ± {r['acc_stderr']:.4f}, acc_norm {r['acc_norm']:.4f} ± "
          f"{r['acc_norm_stderr']:.4f} on {res.n} items ({res.cached_items} cached) -> {args.out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.cmd == "models":
            return cmd_models(args)
        if args.cmd == "hellaswag":
            return cmd_hellaswag(args)
    except EvalcoreError as e:
        print(f"evalcore: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("evalcore: interrupted; finished batches are in the store and a rerun resumes", file=sys.stderr)
        return 130
    return 1
