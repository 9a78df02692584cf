"""The `mauve` command's statistics (runs.mauve_stats), added to its JSON and summary line.

    --compare B      MAUVE(A) - MAUVE(B) on the same contexts: paired bootstrap over contexts,
                     PCA and k-means re-run on each resample (--n-boot), interval and verdict
    --n-curve 25,50  MAUVE on the first n contexts, for --model (and B): k = auto(n) and a fixed
                     k (--curve-k), seed and bootstrap bands (--curve-band), separation n

Both run in one process on rank 0's store: texts and features already there are read, not
recomputed, and every k-means fit is stored, so a rerun or a larger --n-boot computes only
what is new.
"""
from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING, Any

from evalcore.cli.args import int_in
from evalcore.cli.output import progress_bar
from evalcore.errors import EvalcoreError

if TYPE_CHECKING:
    from evalcore.models import LoadedModel
    from evalcore.scoring import Decoding

BANDS = ("refit", "fixed")  # = metrics.mauve_stats.BANDS (importing it would load numpy at every start)
N_BOOT = 200  # default --n-boot


def n_list(v: str) -> list[int]:
    """argparse type: comma-separated integers, e.g. 25,50,100 (range checks in `check_stats_args`)."""
    try:
        return [int(x) for x in v.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{v!r}: give comma-separated integers, e.g. 25,50,100") from None


def add_stats_args(p: argparse.ArgumentParser) -> None:
    """Adds --compare, --n-boot, --n-curve, --curve-k and --curve-band to the `mauve` command."""
    p.add_argument("--compare", metavar="MODEL_B",
                   help="a second model on the same contexts: adds MAUVE(A) - MAUVE(B) with a paired bootstrap "
                        "interval (contexts resampled, PCA and k-means re-run on each resample) and a verdict")
    p.add_argument("--n-boot", type=int_in(2, 100_000), default=None,
                   help=f"bootstrap replicates of --compare and of each --n-curve point (default {N_BOOT}); each "
                        "is stored, so a larger value computes only the new ones")
    p.add_argument("--n-curve", type=n_list, default=None, metavar="N1,N2,...",
                   help="MAUVE on the first n contexts for each n (4..10,042), at k = auto(n) and at a fixed k, "
                        "with k-means seed and bootstrap bands; with --compare, the smallest n where the two "
                        "models' intervals separate")
    p.add_argument("--curve-k", type=int_in(2), default=None,
                   help="the fixed k of --n-curve (default min(10, half the smallest n))")
    p.add_argument("--curve-band", choices=BANDS, default="refit",
                   help="--n-curve's bootstrap band: refit (PCA and k-means on each resample, default) or fixed "
                        "(clusters held, much cheaper, narrower)")


def check_stats_args(args: argparse.Namespace) -> None:
    """Refuse bad --compare/--n-curve settings before any model loads (InputError: exit 2)."""
    from evalcore.cli.checks import _check_model_name
    from evalcore.data import HELLASWAG_SIZE
    from evalcore.errors import InputError

    wanted = args.compare is not None or args.n_curve is not None
    if not wanted:
        for flag, v in (("--n-boot", args.n_boot), ("--curve-k", args.curve_k)):
            if v is not None:
                raise InputError(f"{flag} only applies with --compare or --n-curve")
        return
    if not args.model or args.p_features or args.q_features:
        raise InputError("--compare and --n-curve need --model (HellaSwag texts), not --p-features/--q-features")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise InputError("--compare and --n-curve run as one process: generate under torchrun without them, then "
                         "rerun without torchrun (the texts are read from the store)")
    if args.n_curve is None and (args.curve_k is not None or args.curve_band != "refit"):
        raise InputError("--curve-k and --curve-band only apply with --n-curve")
    if args.compare is not None:
        if args.compare == args.model:
            raise InputError(f"--compare {args.compare} is --model itself; compare two different models")
        _check_model_name(args.compare)
    if args.n_curve is not None:
        from evalcore.metrics import mauve_stats as S

        S.fixed_k(S.check_sizes(args.n_curve, HELLASWAG_SIZE), args.curve_k)


def _decoding(args: argparse.Namespace) -> Decoding:
    from evalcore.scoring import Decoding

    return Decoding(temperature=args.temperature, top_p=args.top_p, top_k=args.top_k,
                    max_new_tokens=args.max_new_tokens, seed=args.seed)


def _models(args: argparse.Namespace) -> tuple[list[LoadedModel], LoadedModel, str]:
    """(--model and --compare loaded, the featurizer, its kind): the same loads as the main run,
    so the loaded models' memo returns them."""
    from evalcore.models import load_embedder, load_model, resolve_device

    device = resolve_device(args.device)
    names = [args.model] + ([args.compare] if args.compare else [])
    lms = [load_model(n, device=device, dtype=args.dtype, device_map=args.device_map, backend=args.backend)
           for n in names]
    if args.featurizer == "minilm":
        return lms, load_embedder(device=device), "minilm"
    return lms, load_model(args.featurizer, device=device, dtype=args.featurizer_dtype), "causal"


def run_stats(args: argparse.Namespace) -> tuple[dict[str, Any], str]:
    """(what --compare and --n-curve add to the JSON, what they add to the summary line)."""
    from evalcore.data import HellaSwag, select_indices
    from evalcore.metrics.mauve_stats import CurveConfig
    from evalcore.runs.mauve_stats import run_mauve_curves, run_mauve_difference
    from evalcore.store import Store

    if args.compare is None and args.n_curve is None:
        return {}, ""
    lms, feat, kind = _models(args)
    ds, store, dec = HellaSwag(), Store(args.store), _decoding(args)
    n_boot = args.n_boot or N_BOOT
    out: dict[str, Any] = {}
    line = ""
    if args.compare is not None:
        a, b = lms[0].spec.name, lms[1].spec.name
        bar, update = progress_bar(f"compare {a} vs {b} (generation, then k-means fits)")
        diff = run_mauve_difference(lms[0], lms[1], feat, select_indices(len(ds), limit=args.limit), dec, kind=kind,
                                    k=args.k, n_boot=n_boot, random_state=args.seed, dataset=ds, store=store,
                                    batch_size=args.batch_size, progress=update)
        bar.close()
        out["difference"] = {"model_a": a, "model_b": b, **diff.to_dict()}
        said = {"A > B": f"{a} > {b}", "B > A": f"{b} > {a}"}.get(diff.verdict, diff.verdict)
        line += (f"; {a} - {b} = {diff.difference:+.3f}, {diff.level:.0%} [{diff.low:+.3f}, {diff.high:+.3f}] over "
                 f"{diff.n_boot} paired resamples: {said}")
    if args.n_curve is not None:
        config = CurveConfig(k_fixed=args.curve_k, band=args.curve_band, n_boot=n_boot, random_state=args.seed)
        bar, update = progress_bar("MAUVE against n (generation, then k-means fits)")
        curves = run_mauve_curves(lms, feat, args.n_curve, dec, kind=kind, config=config, dataset=ds, store=store,
                                  batch_size=args.batch_size, progress=update)
        bar.close()
        out["n_curve"] = curves.to_dict()
        if len(lms) > 1:
            sep = curves.separation_n["auto"]
            line += (f"; intervals separate at n={sep}" if sep is not None else
                     f"; intervals overlap at every n up to {max(curves.ns)}") + " (k = auto)"
        else:
            line += f"; MAUVE against n for n in {','.join(map(str, curves.ns))}"
    store.close()
    return out, line
