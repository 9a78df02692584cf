"""Checks that need no model, run before any loading so that a typo costs no wait: window sizes,
decoding, MAUVE's k, devices, model folders (headers only), the store file, and an --out that
would destroy an input."""
from __future__ import annotations

import argparse
import os
from pathlib import Path

from evalcore.cli.output import to_stdout


def check_early(args: argparse.Namespace) -> None:
    """Settings checks that need no model, run before any loading, so a typo costs no wait:
    window sizes, --out, the device, the memory limit, the store file, model names (resolved,
    and a local folder's headers read), and MAUVE's sizes and decoding."""
    from evalcore.errors import InputError
    from evalcore.store import check_store_file

    if args.cmd == "perplexity":
        if args.stride is None:
            args.stride = min(512, args.max_length)
        if not 1 <= args.stride <= args.max_length:
            raise InputError(f"--stride {args.stride}: need 1 <= stride <= --max-length ({args.max_length})")
    if getattr(args, "out", None) is not None:
        _check_out(args)
    if hasattr(args, "device"):
        from evalcore.models import memory_limit_bytes, resolve_device

        resolve_device(args.device)  # --device mps on a machine without it: now, not after loading
        memory_limit_bytes()
    db = _store_path(args)
    if db is not None:
        check_store_file(db)  # another program's file is refused now, not after the model has loaded
    if args.cmd == "store-merge":
        for src in args.sources:
            check_store_file(src, "store-merge")
        check_store_file(args.into, "--into")
    for flag in ("model", "model_p", "model_q"):
        if getattr(args, flag, None) is not None:
            _check_model_name(getattr(args, flag))
    if args.cmd == "mauve":
        _check_mauve(args)


def _check_mauve(args: argparse.Namespace) -> None:
    """MAUVE's scaling; with --model, the decoding, the number of contexts, k and the featurizer."""
    from evalcore.data import HELLASWAG_SIZE
    from evalcore.errors import InputError
    from evalcore.metrics.mauve import check_scaling, resolve_k
    from evalcore.scoring import Decoding

    check_scaling(args.scaling)
    if not args.model or args.p_features or args.q_features:
        return  # features: k is checked against their sizes once they are read
    Decoding(temperature=args.temperature, top_p=args.top_p, top_k=args.top_k, max_new_tokens=args.max_new_tokens,
             seed=args.seed)
    n = min(args.limit, HELLASWAG_SIZE)
    if 1 <= n < 4:
        raise InputError(f"--limit {n}: MAUVE needs at least 4 texts per side (40+ for stable numbers)")
    if n >= 1:
        resolve_k(args.k, n, n)
    if args.featurizer != "minilm":
        _check_model_name(args.featurizer)


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
    if to_stdout(out):
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
