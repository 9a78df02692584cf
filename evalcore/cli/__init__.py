"""`python -m evalcore ...` (or `evalcore ...`): batch runs with JSON out.

    evalcore models [--json]
    evalcore hellaswag --model NAME [--limit N | --indices FILE | --sample N --seed S]
                       [--device auto] [--dtype auto] [--batch-tokens T] [--backend auto|native|transformers|vllm]
                       [--dialects] [--calibration [--bins N] [--equal-width]] --out FILE.json
    evalcore perplexity --model NAME (--text-file F | --corpus hellaswag|wikipedia) [--limit N]
                        [--max-length L] [--stride S] --out FILE.json
    evalcore kl --model-p A --model-q B (--text-file F | --corpus ...) [--method auto|token|gap|mc|bytes] --out FILE.json
    evalcore mauve (--p-features P.npy --q-features Q.npy | --model NAME [--limit N] [--featurizer minilm|NAME]
                   [--featurizer-dtype float32|bfloat16])
                   [--k K|auto] [--scaling C] [--seed S] [--estimators]
                   [--compare NAME] [--n-boot B] [--n-curve 25,50,100 [--curve-k K] [--curve-band refit|fixed]]
                   --out FILE.json
    evalcore import-lm-eval samples_hellaswag_*.jsonl [--compare NAME] --out FILE.json
    evalcore store-merge A.sqlite B.sqlite ... --into C.sqlite

hellaswag, perplexity and mauve --model also run data-parallel under torchrun
(`torchrun --nproc_per_node N -m evalcore hellaswag ...`, see evalcore/parallel.py): each rank
scores its shard into the shared store, rank 0 reads everything back and writes the JSON.

Errors a user can act on print one line on stderr and exit with status 2.
"""
from __future__ import annotations

import argparse
import logging
import sys

from evalcore.cli.args import Parser
from evalcore.cli.checks import check_early
from evalcore.cli.commands import COMMANDS
from evalcore.errors import EvalcoreError


def parser() -> argparse.ArgumentParser:
    """The `evalcore` argument parser: one subparser per entry of the command table."""
    p = Parser(prog="evalcore", description="Measure how far a language model's text is from human text.")
    p.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = p.add_subparsers(dest="cmd", required=True)
    for c in COMMANDS:
        c.add(sub.add_parser(c.name, help=c.help))
    return p


def main(argv: list[str] | None = None) -> int:
    """Run one command; its exit status (2: an error the user can act on, printed in one line)."""
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        check_early(args)
        return next(c for c in COMMANDS if c.name == args.cmd).run(args)
    except EvalcoreError as e:
        print(f"evalcore: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("evalcore: interrupted; finished batches are in the store and a rerun resumes", file=sys.stderr)
        return 130


__all__ = ["main", "parser"]
