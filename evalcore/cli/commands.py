"""The subcommands: each is its arguments and one call into `evalcore.runs` (or the store).

    models       the registry, with availability here
    hellaswag    run_hellaswag over selected items          } data-parallel under torchrun
    perplexity   run_perplexity over a corpus or a file     } (parallel.data_parallel)
    kl           run_token_kl pooled over texts; per byte run_gap, run_mc_kl or run_next_bytes (cli.kl)
    mauve        run_mauve (or MauveLab on your features), then MAUVE at k
    import-lm-eval  runs.lmeval.import_lm_eval: an lm-eval --log_samples HellaSwag file (cli.lmeval)
    store-merge  store.merge
"""
from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from evalcore.cli.args import (DTYPES, backend_arg, device_args, device_map_arg, float_in, int_in, model_args, out_arg,
                               text_args, texts)
from evalcore.cli.kl import add_kl, run_kl
from evalcore.cli.lmeval import add_import, run_import
from evalcore.cli.mauve_stats import add_stats_args, check_stats_args, run_stats
from evalcore.cli.output import progress_bar, report
from evalcore.errors import EvalcoreError

if TYPE_CHECKING:
    from evalcore.models import LoadedModel
    from evalcore.parallel import Dist
    from evalcore.runs.mauve import MauveLab


@dataclass(frozen=True)
class Command:
    """One subcommand: its name and help, the arguments it adds, and what it runs (exit status)."""

    name: str
    help: str
    add: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


# ----------------------------------------------------------------------------- models

def add_models(p: argparse.ArgumentParser) -> None:
    """Adds the `models` command's arguments (--json)."""
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


def run_models(args: argparse.Namespace) -> int:
    """The registry with availability here, as a table or JSON."""
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


# ----------------------------------------------------------------------------- hellaswag, perplexity

def load_lm(args: argparse.Namespace, d: Dist) -> LoadedModel:
    """This rank's copy of --model on its device (cuda:LOCAL_RANK or cpu under torchrun)."""
    from evalcore.models import load_model

    if args.device_map and d.local_world > 1:
        raise EvalcoreError(f"--device-map auto spreads one model over all of a node's GPUs, but {d.local_world} "
                            "ranks run on this node; launch one rank per node (torchrun --nproc_per_node 1)")
    return load_model(args.model, device=d.device, dtype=args.dtype, device_map=args.device_map, backend=args.backend)


def _scored_run(args: argparse.Namespace, what: str, items: list[Any], run: Callable[..., Any], *, cached: str,
                load: Callable[[Dist], tuple[Any, dict[str, Any]]] | None = None) -> tuple[Any, Any, dict[str, Any]] | None:
    """Load --model, then `run(lm, items, store=, progress=, **kw)` spread over torchrun's ranks
    (`parallel.data_parallel`); (model, result, {"parallel": ...} under torchrun) on rank 0,
    None on the others."""
    from evalcore import parallel
    from evalcore.store import Store

    with parallel.from_env(args.device) as d:
        lm, kw = load(d) if load is not None else (load_lm(args, d), {})
        bar, update = progress_bar(f"{what} {lm.spec.name}", enabled=d.is_main)
        store = Store(args.store)
        res = parallel.data_parallel(d, lambda sub: run(lm, sub, store=store, progress=update, **kw), items,
                                     cached=cached)
        bar.close()
        if not d.is_main:
            return None
        return lm, res, ({"parallel": {"world": d.world, "backend": d.backend}} if d.enabled else {})


def add_hellaswag(p: argparse.ArgumentParser) -> None:
    """Adds the `hellaswag` command's arguments: the model, which items (--limit, --indices or --sample), --out."""
    model_args(p, vllm=True)
    sel = p.add_mutually_exclusive_group()
    sel.add_argument("--limit", type=int, help="first N items")
    sel.add_argument("--indices", type=Path, help="JSON file with a list of row indices")
    sel.add_argument("--sample", type=int, help="N items sampled at random (with --seed)")
    p.add_argument("--seed", type=int, default=0, help="seed for --sample (default 0)")
    p.add_argument("--dialects", action="store_true",
                   help="add acc_bytes, acc_tokens and acc_mutual_info (accuracy and 95%% CI each) and the items "
                        "where dialects pick different endings; acc_mutual_info costs a second, shorter forward "
                        "pass per item (the four endings after the prefix token alone; stored, computed once)")
    p.add_argument("--calibration", action="store_true",
                   help="add ECE, Brier score, NLL and reliability bins of each dialect's four-choice softmax "
                        "(acc_mutual_info's only with --dialects)")
    p.add_argument("--bins", type=int_in(1, 1000), default=None,
                   help="calibration bins (default 10, equal counts; with --calibration)")
    p.add_argument("--equal-width", action="store_true", help="calibration bins of equal width instead of equal count")
    out_arg(p)


def run_hellaswag(args: argparse.Namespace) -> int:
    """acc and acc_norm with per-item results, as JSON."""
    from evalcore import runs
    from evalcore.data import HellaSwag, select_indices

    if args.sample is None and args.seed != 0:
        raise EvalcoreError("--seed only applies with --sample N")
    if not args.calibration and (args.bins is not None or args.equal_width):
        raise EvalcoreError("--bins and --equal-width only apply with --calibration")
    ds = HellaSwag()
    idx = select_indices(len(ds), limit=args.limit, indices=args.indices, sample=args.sample, seed=args.seed)
    bt = args.batch_tokens or (args.batch_items * 110 if args.batch_items else None)  # one packed row an item
    got = _scored_run(args, "hellaswag", idx, lambda lm, sub, **kw: runs.run_hellaswag(
        lm, sub, dataset=ds, batch_tokens=bt, unconditional=args.dialects, **kw), cached="cached_items",
        load=_vllm_loader(args) if args.backend == "vllm" else None)
    if got is None:
        return 0
    lm, res, extra = got
    out = {**res.to_dict(dialects=args.dialects, calibration=args.calibration, n_bins=args.bins or 10,
                         binning="width" if args.equal_width else "mass"), **extra}
    out["model"]["load_seconds"] = round(lm.load_seconds, 3)
    r = out["results"]
    return report(args, out, f"{lm.spec.name}: acc {r['acc']:.4f} ± {r['acc_stderr']:.4f}, acc_norm "
                             f"{r['acc_norm']:.4f} ± {r['acc_norm_stderr']:.4f} on {res.n} items ({res.cached_items} "
                             f"cached){_dialect_summary(out)} -> {args.out}")


def _dialect_summary(out: dict[str, Any]) -> str:
    """The summary line's part for --dialects (other dialects, disagreements) and --calibration (ECE)."""
    parts = []
    if "dialects" in out:
        parts += [f"{k} {v['value']:.4f}" for k, v in out["dialects"].items() if k not in ("acc", "acc_norm")]
        parts.append(f"dialects disagree on {out['disagreements']['n']} items")
    if "calibration" in out:
        parts.append("ECE " + ", ".join(f"{k} {c['ece']:.3f}" for k, c in out["calibration"].items()))
    return "; " + "; ".join(parts) if parts else ""


def _vllm_loader(args: argparse.Namespace) -> Callable[[Dist], tuple[Any, dict[str, Any]]]:
    from evalcore.scoring import vllm_backend

    vllm_backend.require_vllm()  # one line when vLLM is missing, before any loading

    def load(d: Dist) -> tuple[Any, dict[str, Any]]:
        if d.enabled:
            raise EvalcoreError("--backend vllm runs as one process (vLLM batches and splits a model over GPUs "
                                "itself); launch it without torchrun")
        # run_hellaswag(scorer=): the same contract as scoring.iter_logprobs
        return vllm_backend.load_vllm(args.model, dtype=args.dtype), {"scorer": vllm_backend.iter_logprobs}
    return load


def add_perplexity(p: argparse.ArgumentParser) -> None:
    """Adds the `perplexity` command's arguments: the model, the texts, window length and stride, --out."""
    model_args(p)
    text_args(p)
    p.add_argument("--max-length", type=int_in(2), default=1024,
                   help="tokens per window (capped at the model's context; the JSON records the value used)")
    p.add_argument("--stride", type=int_in(1), default=None,
                   help="tokens between window starts, <= max length (default: 512, or the max length if smaller)")
    p.add_argument("--per-token", action="store_true", help="include each text's token ids and NLLs in the JSON")
    out_arg(p)


def run_perplexity(args: argparse.Namespace) -> int:
    """Perplexity, bits per token and bits per byte (and per-token NLLs with --per-token), as JSON."""
    from evalcore import runs

    items = texts(args)
    bt = args.batch_tokens or (args.batch_items * args.max_length if args.batch_items else None)  # one window a text
    got = _scored_run(args, "perplexity", items, lambda lm, sub, **kw: runs.run_perplexity(
        lm, sub, max_length=args.max_length, stride=args.stride, batch_tokens=bt, **kw), cached="cached_texts")
    if got is None:
        return 0
    lm, res, extra = got
    out = {**res.to_dict(per_token=args.per_token), **extra}
    m = res.metrics
    return report(args, out, f"{lm.spec.name}: perplexity {m.perplexity:.3f}, {m.bits_per_token:.3f} bits/token, "
                             f"{m.bits_per_byte:.4f} bits/byte over {m.tokens} tokens of {len(items)} texts -> {args.out}")


# ----------------------------------------------------------------------------- mauve

def add_mauve(p: argparse.ArgumentParser) -> None:
    """Adds the `mauve` command's arguments: features or a model, featurizer, k, decoding, --out."""
    p.add_argument("--p-features", type=Path, help="P (human) features, .npy [n, dim]")
    p.add_argument("--q-features", type=Path, help="Q (model) features, .npy [n, dim]")
    p.add_argument("--model", help="model whose continuations of HellaSwag contexts form Q")
    p.add_argument("--featurizer", default="minilm", help="minilm (bundled) or a causal LM name (last hidden state)")
    p.add_argument("--featurizer-dtype", default="float32", choices=DTYPES[1:],
                   help="dtype of a causal-LM featurizer (default float32; bfloat16 is faster on CPUs with AMX, "
                        "features move ~2%%: see bench/RESULTS.md)")
    p.add_argument("--limit", type=int, default=100, help="HellaSwag contexts (default 100)")
    p.add_argument("-k", "--k", "--clusters", dest="k", default="auto",
                   help="cluster count: an integer in 2..half the texts per side, or auto (= n/10, as mauve-text)")
    p.add_argument("--scaling", type=float_in(0, 1e6, lo_open=True), default=5.0, help="c in exp(-c KL) (default 5)")
    p.add_argument("--seed", type=int, default=25, help="PCA/k-means seed (mauve-text's default 25)")
    p.add_argument("--temperature", type=float_in(0, 100), default=1.0, help="sampling temperature, 0 = greedy")
    p.add_argument("--top-p", type=float_in(0, 1, lo_open=True), default=0.95, help="nucleus mass in (0, 1]; 1 = off")
    p.add_argument("--top-k", type=int_in(0), default=0, help="sample from the k most likely tokens; 0 = off")
    p.add_argument("--max-new-tokens", type=int_in(1, 4096), default=None, help="default: the gold ending's length")
    p.add_argument("--batch-size", type=int_in(1), default=None,
                   help="rows generated at once (default 40; a text does not depend on its batch)")
    device_args(p)
    device_map_arg(p)
    backend_arg(p)
    p.add_argument("--store", type=Path, default=None)
    p.add_argument("--estimators", action="store_true",
                   help="add MAUVE by the k-nearest-neighbour and classifier estimators of the frontier (no "
                        "clustering), and KL both ways, JS and total variation of the k-cluster histograms")
    add_stats_args(p)
    out_arg(p)


def _lab_from_features(args: argparse.Namespace) -> tuple[MauveLab, dict[str, Any]]:
    from evalcore.data import read_features
    from evalcore.runs.mauve import MauveLab

    if not (args.p_features and args.q_features):
        raise EvalcoreError("give both --p-features and --q-features")
    fp, fq = read_features(args.p_features, side="P"), read_features(args.q_features, side="Q")
    return MauveLab.from_features(fp, fq, seed=args.seed, scaling=args.scaling), {"source": "features"}


def _lab_from_model(args: argparse.Namespace) -> tuple[MauveLab, dict[str, Any]] | None:
    """Human HellaSwag endings vs --model's continuations; generation is sharded under torchrun
    (each text has its own random stream, so the split does not change it), featurizing and
    MAUVE run on rank 0. None on the other ranks."""
    from evalcore import parallel
    from evalcore.data import HellaSwag, select_indices
    from evalcore.models import load_embedder, load_model
    from evalcore.runs.mauve import model_texts, run_mauve
    from evalcore.scoring import Decoding
    from evalcore.store import Store

    ds = HellaSwag()
    idx = select_indices(len(ds), limit=args.limit)
    with parallel.from_env(args.device) as d:
        lm = load_lm(args, d)
        dec = Decoding(temperature=args.temperature, top_p=args.top_p, top_k=args.top_k,
                       max_new_tokens=args.max_new_tokens, seed=args.seed)
        store = Store(args.store)
        if d.enabled:
            bar, update = progress_bar(f"generate {lm.spec.name} (rank 0's shard)", enabled=d.is_main)
            model_texts(lm, d.shard(idx), dec, dataset=ds, store=store, batch_size=args.batch_size,
                        progress=update)
            bar.close()
            d.barrier()
            if not d.is_main:
                return None
        if args.featurizer == "minilm":
            feat, kind = load_embedder(device=d.device), "minilm"
        else:
            feat, kind = load_model(args.featurizer, device=d.device, dtype=args.featurizer_dtype), "causal"
        bar, update = progress_bar(f"generate {lm.spec.name}")
        lab = run_mauve(lm, feat, idx, dec, kind=kind, dataset=ds, store=store, seed=args.seed,
                        batch_size=args.batch_size, progress=update)
        bar.close()
    return lab, {"source": "hellaswag", "model": lm.identity(), "featurizer": feat.identity(),
                 "decoding": dec.to_dict(), "n": len(idx)}


def run_mauve(args: argparse.Namespace) -> int:
    """MAUVE at k, with its bootstrap interval and spread over k-means seeds, as JSON."""
    got: tuple[MauveLab, dict[str, Any]] | None
    check_stats_args(args)  # --compare, --n-curve: before any model loads
    if args.p_features or args.q_features:
        got = _lab_from_features(args)
    elif args.model:
        got = _lab_from_model(args)
    else:
        raise EvalcoreError("give --model NAME (HellaSwag texts) or --p-features/--q-features")
    if got is None:
        return 0
    lab, meta = got
    k = lab.k(args.k)
    res = lab.result(k)
    stats, said = run_stats(args)  # what --compare and --n-curve add
    out = {**res.to_dict(), **meta, "mauve_ci95_bootstrap": list(lab.bootstrap(k)), "mauve_over_seeds": lab.seeds(k),
           **stats}
    if args.estimators:
        out["estimators"] = {e: lab.estimate(e, k).to_dict() for e in ("quantized", "knn", "classifier")}
        out["divergences"] = lab.divergences(k).to_dict()
        said += "; " + ", ".join(f"{e} {v['mauve']:.4f}" for e, v in out["estimators"].items() if e != "quantized")
    ci = out["mauve_ci95_bootstrap"]
    return report(args, out, f"MAUVE {res.mauve:.4f} (MAUVE* {res.mauve_star:.4f}), k={res.num_buckets}, 95% CI "
                             f"[{ci[0]:.3f}, {ci[1]:.3f}]{said} -> {args.out}")


# ----------------------------------------------------------------------------- store-merge

def add_store_merge(p: argparse.ArgumentParser) -> None:
    """Adds the `store-merge` command's arguments: the source stores and --into."""
    p.add_argument("sources", nargs="+", type=Path, help="store files to read (.sqlite)")
    p.add_argument("--into", type=Path, required=True, help="store file to add them to (created if missing)")


def run_store_merge(args: argparse.Namespace) -> int:
    """Copy the records of store files into one; prints what each added."""
    from evalcore.store import Store, merge

    added = merge(args.sources, into=args.into)
    for src, n in added.items():
        print(f"{src}: {n} new records")
    total = Store(args.into)
    print(f"{sum(added.values())} records added; {args.into} now holds {total.count()}")
    total.close()
    return 0


COMMANDS = (
    Command("models", "list the model registry with availability here", add_models, run_models),
    Command("hellaswag", "HellaSwag accuracy (acc, acc_norm) with per-item results", add_hellaswag, run_hellaswag),
    Command("import-lm-eval", "read an lm-eval --log_samples HellaSwag file; --compare it with a model's run",
            add_import, run_import),
    Command("perplexity", "sliding-window perplexity, bits per token and bits per byte", add_perplexity,
            run_perplexity),
    Command("kl", "KL between two models: token-level, or per byte across tokenizers", add_kl, run_kl),
    Command("mauve", "MAUVE: features from .npy files, or human vs model HellaSwag text", add_mauve, run_mauve),
    Command("store-merge", "copy the records of store files (e.g. one per node) into one store", add_store_merge,
            run_store_merge),
)
