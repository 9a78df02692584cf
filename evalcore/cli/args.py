"""The CLI's argument types and the argument groups its commands share.

Every range is checked when it is parsed (NaN and infinity refused), and argparse's own errors
are one line with exit status 2, like every other error a user can act on.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn


class Parser(argparse.ArgumentParser):
    """argparse with its errors in one line (no usage block), exit status 2; subcommands inherit it."""

    def error(self, message: str) -> NoReturn:
        """Prints the error in one line and exits with status 2."""
        print(f"evalcore: error: {message} (see `{self.prog} --help`)", file=sys.stderr)
        raise SystemExit(2)



def int_in(lo: int, hi: int | None = None) -> Callable[[str], int]:
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



def float_in(lo: float, hi: float, *, lo_open: bool = False) -> Callable[[str], float]:
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



def device_args(p: argparse.ArgumentParser) -> None:
    """Adds --device and --dtype: where a model runs and at which precision."""
    p.add_argument("--device", default="auto", help="auto (cuda > mps > cpu), cpu, cuda, mps")
    p.add_argument("--dtype", default="auto", choices=DTYPES, help="auto: bfloat16 on CUDA, float32 on CPU")



def out_arg(p: argparse.ArgumentParser) -> None:
    """Adds --out, where the command writes its JSON result."""
    p.add_argument("--out", type=Path, required=True,
                   help="where to write the JSON result; - for stdout (the summary line then goes to stderr)")



def device_map_arg(p: argparse.ArgumentParser) -> None:
    """Adds --device-map (auto: one model spread over all GPUs)."""
    p.add_argument("--device-map", choices=["auto"], default=None,
                   help="auto: spread a model too large for one GPU over all GPUs (accelerate); one rank per node")



def backend_arg(p: argparse.ArgumentParser, *, vllm: bool = False) -> None:
    """Adds --backend, which forward pass runs the model (vllm too where `vllm`)."""
    p.add_argument("--backend", choices=["auto", "native", "transformers"] + (["vllm"] if vllm else []), default="auto",
                   help="forward pass: auto (evalcore's own for Llama / Gemma 3 folders such as the bundled models, "
                        "transformers otherwise), native, transformers (same numbers, ~4 s slower start-up)"
                        + ("; vllm: vLLM prompt log-probs (CUDA, pip install vllm)" if vllm else ""))



def text_args(p: argparse.ArgumentParser) -> None:
    """Adds the text source (--text-file or --corpus, one required) and --limit."""
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--text-file", type=Path, help="a UTF-8 text file")
    src.add_argument("--corpus", choices=["hellaswag", "wikipedia"],
                     help="hellaswag: contexts with gold endings; wikipedia: BoolQ passages (bundled)")
    p.add_argument("--limit", type=int, default=None, help="first N texts of the corpus")


def texts(args: argparse.Namespace) -> list[str]:
    """The texts `text_args` chose: --text-file's text, or the first --limit texts of --corpus (default 100)."""
    from evalcore.data import corpus, read_text_file

    if args.text_file is not None:
        return [read_text_file(args.text_file)]
    return corpus(args.corpus, limit=args.limit if args.limit is not None else 100)



def model_args(p: argparse.ArgumentParser, *, vllm: bool = False) -> None:
    """Adds the arguments of a command that scores with one model: --model, device, dtype, batch size, backend, --store."""
    p.add_argument("--model", required=True, help="registry name (see `evalcore models`), local folder or hub id")
    device_args(p)
    p.add_argument("--batch-tokens", type=int_in(1), default=None, help="tokens per forward pass (default: automatic)")
    p.add_argument("--batch-size", type=int_in(1), default=None, dest="batch_items",
                   help="items per batch (alternative to --batch-tokens; one packed row of ~100 tokens per HellaSwag item)")
    device_map_arg(p)
    backend_arg(p, vllm=vllm)
    p.add_argument("--store", type=Path, default=None,
                   help="results store file (default: <cache>/results.sqlite; cache = $EVALCORE_CACHE or ~/.cache/evalcore)")
