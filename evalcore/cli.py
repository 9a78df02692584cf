"""`python -m evalcore ...` (or `evalcore ...`): batch runs with JSON out.

    evalcore models [--json]
    evalcore hellaswag --model NAME [--limit N | --indices FILE | --sample N --seed S]
                       [--device auto] [--dtype auto] [--batch-tokens T] [--backend auto|native|transformers|vllm] --out FILE.json
    evalcore perplexity --model NAME (--text-file F | --corpus hellaswag|wikipedia) [--limit N]
                        [--max-length L] [--stride S] --out FILE.json
    evalcore kl --model-p A --model-q B (--text-file F | --corpus ...) --out FILE.json
    evalcore mauve (--p-features P.npy --q-features Q.npy | --model NAME [--limit N] [--featurizer minilm|NAME]
                   [--featurizer-dtype float32|bfloat16])
                   [--k K|auto] [--scaling C] [--seed S] --out FILE.json
    evalcore store-merge A.sqlite B.sqlite ... --into C.sqlite

hellaswag, perplexity and mauve --model also run data-parallel under torchrun
(`torchrun --nproc_per_node N -m evalcore hellaswag ...`, see evalcore/parallel.py): each rank
scores its shard into the shared store, rank 0 reads everything back and writes the JSON.

Errors a user can act on print one line on stderr and exit with status 2.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import stat
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from evalcore.errors import EvalcoreError

if TYPE_CHECKING:
    from evalcore.models import LoadedModel
    from evalcore.parallel import Dist

log = logging.getLogger(__name__)


class _Parser(argparse.ArgumentParser):
    """argparse with its errors in one line (no usage block), exit status 2; subcommands inherit it."""

    def error(self, message: str):  # type: ignore[override]
        print(f"evalcore: error: {message} (see `{self.prog} --help`)", file=sys.stderr)
        raise SystemExit(2)


def _int_in(lo: int, hi: int | None = None) -> Callable[[str], int]:
    """argparse type: an integer in [lo, hi]."""
    def parse(v: str) -> int:
        try:
            x = int(v)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{v!r} is not an integer") from None
        if x < lo or (hi is not None and x > hi):
            raise argparse.ArgumentTypeError(f"{x} is out of range: need an integer "
                                             + (f"in {lo}..{hi:,}" if hi is not None else f">= {lo}"))
        return x
    return parse


def _float_in(lo: float, hi: float, *, lo_open: bool = False) -> Callable[[str], float]:
    """argparse type: a finite number in [lo, hi] (or (lo, hi] with lo_open); NaN and inf refused."""
    import math

    def parse(v: str) -> float:
        try:
            x = float(v)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{v!r} is not a number") from None
        if not math.isfinite(x) or x < lo or x > hi or (lo_open and x == lo):
            raise argparse.ArgumentTypeError(f"{v} is out of range: need a finite number in "
                                             f"{'(' if lo_open else '['}{lo:g}, {hi:g}]")
        return x
    return parse


DTYPES = ["auto", "float32", "bfloat16"]
MAX_TOP_K = 10_000  # top-k agreement past this says nothing more; the model's vocabulary is checked at load


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="evalcore", description="Measure how far a language model's text is from human text.")
    p.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = p.add_subparsers(dest="cmd", required=True)

    m = sub.add_parser("models", help="list the model registry with availability here")
    m.add_argument("--json", action="store_true", help="print JSON instead of a table")

    h = sub.add_parser("hellaswag", help="HellaSwag accuracy (acc, acc_norm) with per-item results")
    _model_args(h, vllm=True)
    sel = h.add_mutually_exclusive_group()
    sel.add_argument("--limit", type=int, help="first N items")
    sel.add_argument("--indices", type=Path, help="JSON file with a list of row indices")
    sel.add_argument("--sample", type=int, help="N items sampled at random (with --seed)")
    h.add_argument("--seed", type=int, default=0, help="seed for --sample (default 0)")
    _out_arg(h)

    pp = sub.add_parser("perplexity", help="sliding-window perplexity, bits per token and bits per byte")
    _model_args(pp)
    _text_args(pp)
    pp.add_argument("--max-length", type=_int_in(2), default=1024,
                    help="tokens per window (capped at the model's context; the JSON records the value used)")
    pp.add_argument("--stride", type=_int_in(1), default=512, help="tokens between window starts (<= max length)")
    pp.add_argument("--per-token", action="store_true", help="include each text's token ids and NLLs in the JSON")
    _out_arg(pp)

    k = sub.add_parser("kl", help="token-level KL between two models that share a tokenizer")
    k.add_argument("--model-p", required=True, help="model P (registry name, folder or hub id)")
    k.add_argument("--model-q", required=True, help="model Q; must share P's tokenizer")
    k.add_argument("--device", default="auto")
    k.add_argument("--dtype", default="auto", choices=DTYPES)
    k.add_argument("--dtype-q", default=None, choices=DTYPES,
                   help="dtype for Q only (e.g. compare a model at float32 with itself at bfloat16)")
    _text_args(k)
    k.add_argument("--top-k", type=_int_in(1, MAX_TOP_K), default=10, help="k for top-k agreement (1..10,000)")
    k.add_argument("--max-length", type=_int_in(2), default=1024, help="tokens of each text compared")
    _out_arg(k)

    mv = sub.add_parser("mauve", help="MAUVE: features from .npy files, or human vs model HellaSwag text")
    mv.add_argument("--p-features", type=Path, help="P (human) features, .npy [n, dim]")
    mv.add_argument("--q-features", type=Path, help="Q (model) features, .npy [n, dim]")
    mv.add_argument("--model", help="model whose continuations of HellaSwag contexts form Q")
    mv.add_argument("--featurizer", default="minilm", help="minilm (bundled) or a causal LM name (last hidden state)")
    mv.add_argument("--featurizer-dtype", default="float32", choices=DTYPES[1:],
                    help="dtype of a causal-LM featurizer (default float32; bfloat16 is ~3x faster on CPUs "
                         "with AMX; features move ~2%%, and MAUVE moved by 0.0007 and 0.02 in two checks)")
    mv.add_argument("--limit", type=int, default=100, help="HellaSwag contexts (default 100)")
    mv.add_argument("-k", "--k", "--clusters", dest="k", default="auto",
                    help="cluster count: an integer in 2..half the texts per side, or auto (= n/10, as mauve-text)")
    mv.add_argument("--scaling", type=_float_in(0, 1e6, lo_open=True), default=5.0, help="c in exp(-c KL) (default 5)")
    mv.add_argument("--seed", type=int, default=25, help="PCA/k-means seed (mauve-text's default 25)")
    mv.add_argument("--temperature", type=_float_in(0, 100), default=1.0, help="sampling temperature, 0 = greedy")
    mv.add_argument("--top-p", type=_float_in(0, 1, lo_open=True), default=0.95, help="nucleus mass in (0, 1]; 1 = off")
    mv.add_argument("--top-k", type=_int_in(0), default=0, help="sample from the k most likely tokens; 0 = off")
    mv.add_argument("--max-new-tokens", type=_int_in(1, 4096), default=None, help="default: the gold ending's length")
    mv.add_argument("--device", default="auto")
    mv.add_argument("--dtype", default="auto", choices=DTYPES)
    _device_map_arg(mv)
    _backend_arg(mv)
    mv.add_argument("--store", type=Path, default=None)
    _out_arg(mv)

    sm = sub.add_parser("store-merge", help="copy the records of store files (e.g. one per node) into one store")
    sm.add_argument("sources", nargs="+", type=Path, help="store files to read (.sqlite)")
    sm.add_argument("--into", type=Path, required=True, help="store file to add them to (created if missing)")
    return p


def _out_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, required=True,
                   help="where to write the JSON result; - for stdout (the summary line then goes to stderr)")


def _device_map_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device-map", choices=["auto"], default=None,
                   help="auto: spread a model too large for one GPU over all GPUs (accelerate); one rank per node")


def _backend_arg(p: argparse.ArgumentParser, *, vllm: bool = False) -> None:
    p.add_argument("--backend", choices=["auto", "native", "transformers"] + (["vllm"] if vllm else []), default="auto",
                   help="forward pass: auto (evalcore's own for Llama / Gemma 3 folders such as the bundled models, "
                        "transformers otherwise), native, transformers (same numbers, ~4 s slower start-up)"
                        + ("; vllm: vLLM prompt log-probs (CUDA, pip install vllm)" if vllm else ""))


def _text_args(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--text-file", type=Path, help="a UTF-8 text file")
    src.add_argument("--corpus", choices=["hellaswag", "wikipedia"],
                     help="hellaswag: contexts with gold endings; wikipedia: BoolQ passages (bundled)")
    p.add_argument("--limit", type=int, default=None, help="first N texts of the corpus")


def _texts(args: argparse.Namespace) -> list[str]:
    from evalcore.data import corpus, read_text_file

    if args.text_file is not None:
        return [read_text_file(args.text_file)]
    return corpus(args.corpus, limit=args.limit if args.limit is not None else 100)


def _model_args(p: argparse.ArgumentParser, *, vllm: bool = False) -> None:
    p.add_argument("--model", required=True, help="registry name (see `evalcore models`), local folder or hub id")
    p.add_argument("--device", default="auto", help="auto (cuda > mps > cpu), cpu, cuda, mps")
    p.add_argument("--dtype", default="auto", choices=DTYPES, help="auto: bfloat16 on CUDA, float32 on CPU")
    p.add_argument("--batch-tokens", type=_int_in(1), default=None, help="tokens per forward pass (default: automatic)")
    p.add_argument("--batch-size", type=_int_in(1), default=None, dest="batch_items",
                   help="items per batch (alternative to --batch-tokens; one packed row of ~100 tokens per HellaSwag item)")
    _device_map_arg(p)
    _backend_arg(p, vllm=vllm)
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


def _progress_bar(desc: str, *, enabled: bool = True):
    from tqdm import tqdm

    bar = tqdm(total=0, desc=desc, unit="item", file=sys.stderr, disable=None if enabled else True)

    def update(done: int, total: int) -> None:
        bar.total = total
        bar.n = done
        bar.refresh()

    return bar, update


def _to_stdout(out: Path) -> bool:
    """True when --out is `-` or names this process's stdout (/dev/stdout, /proc/self/fd/1, ...)."""
    if str(out) == "-":
        return True
    try:
        a, b = os.stat(out), os.fstat(sys.stdout.fileno())
    except (OSError, ValueError):
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _say(args: argparse.Namespace, line: str) -> None:
    """The command's summary line: on stdout, or on stderr when the JSON goes to stdout."""
    print(line, file=sys.stderr if _to_stdout(args.out) else sys.stdout)


def _write_json(path: Path, obj: Any) -> None:
    """The JSON result to `path`: `-` is stdout; a regular file (or a symlink to one) is replaced
    atomically; anything else that exists (a device such as /dev/null, a FIFO, a terminal) is
    written through, never replaced. NaN and infinity are refused (they are not JSON)."""
    try:
        text = json.dumps(obj, indent=1, allow_nan=False) + "\n"
    except ValueError:
        raise EvalcoreError("the result holds a non-finite number (NaN or infinity); nothing was written. "
                            "Rerun with -v to see which value") from None
    if _to_stdout(path):
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    real = Path(os.path.realpath(path))
    hint = "give --out a writable path with free space (the results are in the store: a rerun reads them back)"
    try:
        st = real.stat()
    except OSError:
        st = None
    if st is not None and stat.S_ISDIR(st.st_mode):
        raise EvalcoreError(f"--out {path} is a folder; give a file name, e.g. {Path(path) / 'result.json'}")
    try:
        if st is not None and not stat.S_ISREG(st.st_mode):
            with open(real, "w") as f:  # a device or pipe: write through, the node itself stays as it is
                f.write(text)
            return
        real.parent.mkdir(parents=True, exist_ok=True)
        tmp = real.with_name(f".{real.name}.tmp{os.getpid()}")
        try:
            tmp.write_text(text)
            os.replace(tmp, real)  # through a symlink: the file it points at is replaced, the link stays
        finally:
            tmp.unlink(missing_ok=True)
    except OSError as e:  # disk full, read-only folder, /dev/full: one line; the results are in the store
        raise EvalcoreError(f"cannot write {path}: {e.strerror or e}; {hint}") from e


def _load_lm(args: argparse.Namespace, d: Dist) -> LoadedModel:
    """This rank's copy of --model on its device (cuda:LOCAL_RANK or cpu under torchrun)."""
    from evalcore.models import load_model

    if args.device_map and d.local_world > 1:
        raise EvalcoreError(f"--device-map auto spreads one model over all of a node's GPUs, but {d.local_world} "
                            "ranks run on this node; launch one rank per node (torchrun --nproc_per_node 1)")
    return load_model(args.model, device=d.device, dtype=args.dtype, device_map=args.device_map, backend=args.backend)


def _data_parallel(d: Dist, run: Callable[[list], Any], items: list, *, cached: str) -> Any:
    """`run(items)`, spread over the ranks of `d`; the result on rank 0, None on the others.

    Each rank runs its shard, which writes its records to the shared store; after the
    barrier rank 0 runs all items, which reads them back without a forward pass. Its
    result then gets the whole job's wall time and the sum of the ranks' `cached` counts.
    """
    if not d.enabled:
        return run(items)
    if d.world != d.local_world and d.is_main:
        log.warning("ranks on %d nodes: rank 0 finds only the records in its own store file, and SQLite is unsafe "
                    "on network filesystems; prefer one job per node and `evalcore store-merge` (README: Scaling out)",
                    d.world // max(1, d.local_world))
    t0 = time.perf_counter()
    mine = d.shard(items)
    n_cached = getattr(run(mine), cached) if mine else 0
    log.info("rank %d/%d: %d of %d items done (%d cached)", d.rank, d.world, len(mine), len(items), n_cached)
    d.barrier()
    total_cached = sum(d.gather(n_cached))
    if not d.is_main:
        return None
    res = run(items)
    return dataclasses.replace(res, seconds=time.perf_counter() - t0, **{cached: total_cached})


def cmd_hellaswag(args: argparse.Namespace) -> int:
    from evalcore import parallel
    from evalcore.data import HellaSwag, select_indices
    from evalcore.runs import run_hellaswag
    from evalcore.store import Store

    if args.sample is None and args.seed != 0:
        raise EvalcoreError("--seed only applies with --sample N")
    if args.backend == "vllm":
        from evalcore.scoring.vllm_backend import require_vllm

        require_vllm()  # one line when vLLM is missing, before any loading
    ds = HellaSwag()
    idx = select_indices(len(ds), limit=args.limit, indices=args.indices, sample=args.sample, seed=args.seed)
    with parallel.from_env(args.device) as d:
        kw: dict[str, Any] = {}
        if args.backend == "vllm":
            from evalcore.scoring import vllm_backend

            if d.enabled:
                raise EvalcoreError("--backend vllm runs as one process (vLLM batches and splits a model over "
                                    "GPUs itself); launch it without torchrun")
            lm = vllm_backend.load_vllm(args.model, dtype=args.dtype)
            kw["scorer"] = vllm_backend.iter_logprobs  # run_hellaswag(scorer=): same contract as scoring.iter_logprobs
        else:
            lm = _load_lm(args, d)
        bt = args.batch_tokens or (args.batch_items * 110 if args.batch_items else None)  # one packed row an item
        bar, update = _progress_bar(f"hellaswag {lm.spec.name}", enabled=d.is_main)
        store = Store(args.store)
        res = _data_parallel(d, lambda sub: run_hellaswag(lm, sub, dataset=ds, store=store, batch_tokens=bt,
                                                          progress=update, **kw), idx, cached="cached_items")
        bar.close()
        if not d.is_main:
            return 0
        out = res.to_dict()
        out["model"]["load_seconds"] = round(lm.load_seconds, 3)
        if d.enabled:
            out["parallel"] = {"world": d.world, "backend": d.backend}
    _write_json(args.out, out)
    r = out["results"]
    _say(args, f"{lm.spec.name}: acc {r['acc']:.4f} ± {r['acc_stderr']:.4f}, acc_norm {r['acc_norm']:.4f} ± "
          f"{r['acc_norm_stderr']:.4f} on {res.n} items ({res.cached_items} cached) -> {args.out}")
    return 0


def cmd_perplexity(args: argparse.Namespace) -> int:
    from evalcore import parallel
    from evalcore.runs import run_perplexity
    from evalcore.store import Store

    texts = _texts(args)
    with parallel.from_env(args.device) as d:
        lm = _load_lm(args, d)
        bar, update = _progress_bar(f"perplexity {lm.spec.name}", enabled=d.is_main)
        store = Store(args.store)
        res = _data_parallel(d, lambda sub: run_perplexity(lm, sub, max_length=args.max_length, stride=args.stride,
                                                           store=store, batch_tokens=args.batch_tokens,
                                                           progress=update), texts, cached="cached_texts")
        bar.close()
        if not d.is_main:
            return 0
        out = res.to_dict(per_token=args.per_token)
        if d.enabled:
            out["parallel"] = {"world": d.world, "backend": d.backend}
    _write_json(args.out, out)
    m = res.metrics
    _say(args, f"{lm.spec.name}: perplexity {m.perplexity:.3f}, {m.bits_per_token:.3f} bits/token, {m.bits_per_byte:.4f} "
          f"bits/byte over {m.tokens} tokens of {len(texts)} texts -> {args.out}")
    return 0


def cmd_kl(args: argparse.Namespace) -> int:
    import numpy as np

    from evalcore.models import load_model
    from evalcore.runs import run_token_kl

    texts = _texts(args)
    lm_p = load_model(args.model_p, device=args.device, dtype=args.dtype)
    lm_q = load_model(args.model_q, device=args.device, dtype=args.dtype_q or args.dtype)
    per_text = [run_token_kl(lm_p, lm_q, t, k=args.top_k, max_length=args.max_length) for t in texts]
    pos = np.array([len(r.kl_pq) for r in per_text], dtype=float)
    summ = [r.summary() for r in per_text]
    pooled = {key: float(np.average([s[key] for s in summ], weights=pos))
              for key in ("kl_pq", "kl_qp", "js", "top1_agreement", f"top{args.top_k}_overlap")}
    out = {"model_p": per_text[0].model_p, "model_q": per_text[0].model_q, **pooled, "positions": int(pos.sum()),
           "n_texts": len(texts), "units": "nats, mean over positions", "texts": summ}
    _write_json(args.out, out)
    _say(args, f"KL(P||Q) {pooled['kl_pq']:.4f}, KL(Q||P) {pooled['kl_qp']:.4f}, JS {pooled['js']:.4f} nats over "
          f"{int(pos.sum())} positions; top-1 agreement {pooled['top1_agreement']:.3f} -> {args.out}")
    return 0


def cmd_mauve(args: argparse.Namespace) -> int:
    from evalcore.runs.mauve import MauveLab, run_mauve

    if args.p_features or args.q_features:
        if not (args.p_features and args.q_features):
            raise EvalcoreError("give both --p-features and --q-features")
        from evalcore.data import read_features

        fp, fq = read_features(args.p_features, side="P"), read_features(args.q_features, side="Q")
        lab = MauveLab.from_features(fp, fq, seed=args.seed, scaling=args.scaling)
        meta: dict[str, Any] = {"source": "features"}
    else:
        if not args.model:
            raise EvalcoreError("give --model NAME (HellaSwag texts) or --p-features/--q-features")
        from evalcore import parallel
        from evalcore.data import HellaSwag, select_indices
        from evalcore.models import load_embedder, load_model
        from evalcore.runs.mauve import model_texts
        from evalcore.scoring import Decoding
        from evalcore.store import Store

        ds = HellaSwag()
        idx = select_indices(len(ds), limit=args.limit)
        with parallel.from_env(args.device) as d:
            lm = _load_lm(args, d)
            dec = Decoding(temperature=args.temperature, top_p=args.top_p, top_k=args.top_k,
                           max_new_tokens=args.max_new_tokens, seed=args.seed)
            store = Store(args.store)
            if d.enabled:  # generation is the sharded part; each text has its own random stream, so the split
                # does not change it. Featurizing and MAUVE itself then run on rank 0 alone.
                bar, update = _progress_bar(f"generate {lm.spec.name} (rank 0's shard)", enabled=d.is_main)
                model_texts(lm, d.shard(idx), dec, dataset=ds, store=store, progress=update)
                bar.close()
                d.barrier()
                if not d.is_main:
                    return 0
            if args.featurizer == "minilm":
                feat, kind = load_embedder(device=d.device), "minilm"
            else:
                feat, kind = load_model(args.featurizer, device=d.device, dtype=args.featurizer_dtype), "causal"
            bar, update = _progress_bar(f"generate {lm.spec.name}")
            lab = run_mauve(lm, feat, idx, dec, kind=kind, dataset=ds, store=store, seed=args.seed, progress=update)
            bar.close()
        meta = {"source": "hellaswag", "model": lm.identity(), "featurizer": feat.identity(), "decoding": dec.to_dict(),
                "n": len(idx)}
    k = lab.k(args.k)
    res = lab.result(k)
    out = {**res.to_dict(), **meta, "mauve_ci95_bootstrap": list(lab.bootstrap(k)), "mauve_over_seeds": lab.seeds(k)}
    _write_json(args.out, out)
    _say(args, f"MAUVE {res.mauve:.4f} (MAUVE* {res.mauve_star:.4f}), k={res.num_buckets}, 95% CI "
          f"[{out['mauve_ci95_bootstrap'][0]:.3f}, {out['mauve_ci95_bootstrap'][1]:.3f}] -> {args.out}")
    return 0


def cmd_store_merge(args: argparse.Namespace) -> int:
    from evalcore.store import Store, merge

    added = merge(args.sources, into=args.into)
    for src, n in added.items():
        print(f"{src}: {n} new records")
    total = Store(args.into)
    print(f"{sum(added.values())} records added; {args.into} now holds {total.count()}")
    total.close()
    return 0


def _check_early(args: argparse.Namespace) -> None:
    """Settings checks that need no model, run before any loading, so a typo costs no wait:
    window sizes, decoding, the MAUVE sizes, and model names (resolved, not loaded)."""
    from evalcore.errors import InputError

    if args.cmd in ("perplexity", "kl") and args.max_length < 2:
        raise InputError(f"--max-length {args.max_length}: need at least 2 tokens per window")
    if args.cmd == "perplexity" and not 1 <= args.stride <= args.max_length:
        raise InputError(f"--stride {args.stride}: need 1 <= stride <= --max-length ({args.max_length})")
    if getattr(args, "out", None) is not None:
        _check_out(args)
    if hasattr(args, "device"):
        from evalcore.models import memory_limit_bytes, resolve_device

        resolve_device(args.device)  # --device mps on a machine without it: now, not after loading
        memory_limit_bytes()
    db = _store_path(args)
    if db is not None:
        from evalcore.store import check_store_file

        check_store_file(db)  # another program's file is refused now, not after the model has loaded
    if args.cmd == "store-merge":
        from evalcore.store import check_store_file

        for src in args.sources:
            check_store_file(src, "store-merge")
        check_store_file(args.into, "--into")
    for flag in ("model", "model_p", "model_q"):
        if getattr(args, flag, None) is not None:
            _check_model_name(getattr(args, flag))
    if args.cmd == "mauve":
        from evalcore.data import HELLASWAG_SIZE
        from evalcore.metrics.mauve import check_scaling, resolve_k
        from evalcore.models import resolve_spec
        from evalcore.scoring import Decoding

        check_scaling(args.scaling)
        if args.model and not (args.p_features or args.q_features):
            Decoding(temperature=args.temperature, top_p=args.top_p, top_k=args.top_k,
                     max_new_tokens=args.max_new_tokens, seed=args.seed)
            n = min(args.limit, HELLASWAG_SIZE)
            if 1 <= n < 4:
                raise InputError(f"--limit {n}: MAUVE needs at least 4 texts per side (40+ for stable numbers)")
            if n >= 1:
                resolve_k(args.k, n, n)
            for name in (args.model, *([args.featurizer] if args.featurizer != "minilm" else [])):
                resolve_spec(name)


def _check_model_name(name: str) -> None:
    """A model name resolves (registry, folder, hub id); a local folder's config and safetensors
    headers are sane. Headers only: a forged or damaged folder costs no wait."""
    from evalcore import checkpoint
    from evalcore.models import resolve_spec

    spec = resolve_spec(name)
    if spec.family == "local":
        checkpoint.check_folder(Path(spec.name))


def _store_path(args: argparse.Namespace) -> Path | None:
    """The results store this command opens (its default under the cache folder), or None."""
    from evalcore import assets

    if args.cmd == "mauve" and (args.p_features or args.q_features):
        return None
    if not hasattr(args, "store"):
        return None
    return args.store or assets.cache_dir() / "results.sqlite"


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist yet: compare where they would be
        try:
            return os.path.realpath(a) == os.path.realpath(b)
        except (OSError, ValueError):
            return False


def _check_out(args: argparse.Namespace) -> None:
    """Refuse an --out that is one of the command's inputs, its store (or the store's side
    files), or a folder: writing the JSON there would destroy it."""
    from evalcore.errors import InputError

    out = args.out
    if _to_stdout(out):
        return
    inputs: list[tuple[str, Path]] = []
    for flag in ("text_file", "indices", "p_features", "q_features"):
        v = getattr(args, flag, None)
        if isinstance(v, Path):
            inputs.append(("--" + flag.replace("_", "-"), v))
    db = _store_path(args)
    if db is not None:
        inputs += [("--store", db)] + [("--store", Path(f"{db}{side}")) for side in ("-wal", "-shm")]
    for flag, path in inputs:
        if _same_file(out, path):
            raise InputError(f"--out {out} is the same file as {flag} {path}; writing the result there would "
                             "destroy it: give --out another file name")
    if out.is_dir():
        raise InputError(f"--out {out} is a folder; give a file name, e.g. {out / 'result.json'}")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        _check_early(args)
        if args.cmd == "models":
            return cmd_models(args)
        if args.cmd == "hellaswag":
            return cmd_hellaswag(args)
        if args.cmd == "perplexity":
            return cmd_perplexity(args)
        if args.cmd == "kl":
            return cmd_kl(args)
        if args.cmd == "mauve":
            return cmd_mauve(args)
        if args.cmd == "store-merge":
            return cmd_store_merge(args)
    except EvalcoreError as e:
        print(f"evalcore: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("evalcore: interrupted; finished batches are in the store and a rerun resumes", file=sys.stderr)
        return 130
    return 1
