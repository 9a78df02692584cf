"""The `import-lm-eval` command: an lm-eval HellaSwag run (`--log_samples` file) read into
evalcore, and with --compare MODEL set beside our own run of MODEL on the same doc_ids.

    import_lm_eval   the file -> HellaSwagResult (runs.lmeval): acc, acc_norm, items
    run_hellaswag    MODEL on the file's doc_ids (with --compare)
    compare_runs     paired comparison (acc difference, McNemar, per-item KL) and the largest
                     log-likelihood difference per item
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

from evalcore.cli.args import backend_arg, device_args
from evalcore.cli.output import progress_bar, report, to_stdout


def add_import(p: argparse.ArgumentParser) -> None:
    """Adds the `import-lm-eval` command's arguments: the samples file, --name, --compare MODEL
    with its device, dtype, backend and store, and --out (default stdout)."""
    p.add_argument("file", type=Path, help="samples_<task>_*.jsonl written by `lm_eval --log_samples` for "
                                           "hellaswag (or a task derived from it)")
    p.add_argument("--name", default=None, help="the imported run's model name (default: lm-eval:<model_name "
                                                "of the results_*.json beside the file>)")
    p.add_argument("--compare", dest="model", metavar="MODEL", default=None,
                   help="also score MODEL on the same doc_ids and compare the two runs item by item")
    device_args(p)
    backend_arg(p)
    p.add_argument("--store", type=Path, default=None,
                   help="results store for --compare (default: <cache>/results.sqlite)")
    p.add_argument("--out", type=Path, default=Path("-"),
                   help="where to write the JSON result (default -: stdout, the summary line then goes to stderr)")


def run_import(args: argparse.Namespace) -> int:
    """The imported run as JSON (HellaSwagResult.to_dict), with `compare`: our run of --compare
    MODEL and the two runs' comparison."""
    from evalcore.data import HellaSwag
    from evalcore.errors import InputError
    from evalcore.runs.lmeval import compare_runs, import_lm_eval

    if not to_stdout(args.out) and args.out.exists() and args.file.exists() and os.path.samefile(args.out, args.file):
        raise InputError(f"--out {args.out} is the samples file itself; give --out another file name")
    ds = HellaSwag()
    res = import_lm_eval(args.file, dataset=ds, name=args.name)
    out = res.to_dict()
    r = out["results"]
    line = (f"{res.model['name']}: acc {r['acc']:.4f} ± {r['acc_stderr']:.4f}, acc_norm {r['acc_norm']:.4f} ± "
            f"{r['acc_norm_stderr']:.4f} on {res.n} items")
    if args.model is not None:
        from evalcore.models import load_model
        from evalcore.runs import run_hellaswag
        from evalcore.store import Store

        lm = load_model(args.model, device=args.device, dtype=args.dtype, backend=args.backend)
        bar, update = progress_bar(f"hellaswag {lm.spec.name}")
        store = Store(args.store)
        ours = run_hellaswag(lm, [it.index for it in res.items], dataset=ds, store=store, progress=update)
        store.close()
        bar.close()
        cmp = compare_runs(res, ours)
        out["compare"] = {"model": ours.to_dict(), **cmp.to_dict()}
        line += (f"; {lm.spec.name}: acc {ours.acc.value:.4f}, same prediction on {cmp.same_pred}/{res.n} items, "
                 f"max |Δ loglik| {max(cmp.max_abs_loglik_diff):.2e} nats")
    return report(args, out, f"{line} -> {args.out}")
