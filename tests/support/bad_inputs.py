"""Bad CLI input: each case must exit 2 with one line on stderr and no traceback, before any
model is loaded (faults' guard makes a model load exit 3), with a phrase that says what to do.

BAD_INPUTS is the catalogue shared by `tests/cli/test_bad_input.py` and
`bench/reliability_report.py`; `run_bad_input` runs one case, in a child or in this process.
"""
from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.clirun import MODEL, Run, cli, cli_in_process, one_line_error


@dataclass(frozen=True)
class BadInput:
    """One bad CLI input: the arguments (built in a scratch folder) and a phrase the one-line
    error must contain. `env` adds environment variables ("{d}" is the scratch folder), `stdin`
    names a file fed to the process, and `loads=True` marks a case only a model load can find
    (it runs without the no-model guard)."""

    name: str
    build: Callable[[Path], list[str]]
    expect: str
    env: tuple[tuple[str, str], ...] = ()
    stdin: str | None = None
    loads: bool = False


def _text_file(content: bytes, *, model: str = MODEL, out: str = "o.json", link: str | None = None
               ) -> Callable[[Path], list[str]]:
    def build(d: Path) -> list[str]:
        f = d / "text.txt"
        f.write_bytes(content)
        if link is not None:
            (d / out).symlink_to(d / link)
        return ["perplexity", "--model", model, "--text-file", str(f), "--out", str(d / out)]
    return build


def _indices(content: str, *, out: str = "o.json") -> Callable[[Path], list[str]]:
    def build(d: Path) -> list[str]:
        f = d / "indices.json"
        f.write_text(content)
        return ["hellaswag", "--model", MODEL, "--indices", str(f), "--out", str(d / out)]
    return build


def _features(p: Any, q: Any, *extra: str, out: str = "o.json") -> Callable[[Path], list[str]]:
    def build(d: Path) -> list[str]:
        import numpy as np

        for name, x in (("p", p), ("q", q)):
            if isinstance(x, bytes):
                (d / f"{name}.npy").write_bytes(x)
            else:
                np.save(d / f"{name}.npy", x() if callable(x) else x)
        return ["mauve", "--p-features", str(d / "p.npy"), "--q-features", str(d / "q.npy"), *extra,
                "--out", str(d / out)]
    return build


def _gauss(n: int, dim: int, *, nan: bool = False, seed: int = 0) -> Callable[[], Any]:
    def make() -> Any:
        import numpy as np

        x = np.random.default_rng(seed).normal(size=(n, dim))
        if nan:
            x[3, 1] = np.nan
        return x
    return make


def _kl(*extra: str) -> Callable[[Path], list[str]]:
    return _args("kl", "--model-p", MODEL, "--model-q", MODEL, "--corpus", "wikipedia", "--limit", "1", *extra,
                 "--out", "{d}/o.json")


def _st_blob(header: bytes) -> bytes:
    """A safetensors file: its 8-byte header length, then the header."""
    return len(header).to_bytes(8, "little") + header


_LLAMA = {"model_type": "llama", "hidden_size": 8, "num_attention_heads": 2, "num_hidden_layers": 1,
          "intermediate_size": 16, "vocab_size": 32, "rms_norm_eps": 1e-5}


def _forged(*, st: bytes | None = None, config: bytes | None = None, st_link: str | None = None,
            model_in: str = "model") -> Callable[[Path], list[str]]:
    """A model folder with one forged part (weights file, config, or a symlink as the weights)."""
    def build(d: Path) -> list[str]:
        f = d / model_in
        f.mkdir(exist_ok=True)
        (f / "config.json").write_bytes(config if config is not None else json.dumps(_LLAMA).encode())
        if st_link is not None:
            target = f / st_link if not st_link.startswith("/") else Path(st_link)
            (f / "model.safetensors").symlink_to(target)
        else:
            (f / "model.safetensors").write_bytes(st if st is not None else _st_blob(b"{}"))
        return ["perplexity", "--model", str(f), "--text-file", "/etc/hostname", "--out", str(d / "o.json")]
    return build


def _foreign_store(content: bytes | None, *, merge: bool = False) -> Callable[[Path], list[str]]:
    """A file at the store's path that is not ours: `content`, or another program's SQLite database."""
    def build(d: Path) -> list[str]:
        f = d / "theirs.sqlite"
        if content is not None:
            f.write_bytes(content)
        else:
            c = sqlite3.connect(f)
            c.execute("CREATE TABLE contacts (name TEXT, phone TEXT)")
            c.execute("INSERT INTO contacts VALUES ('Ada', '555-0100')")
            c.commit()
            c.close()
        if merge:
            ours = d / "ours.sqlite"
            c = sqlite3.connect(ours)
            c.close()
            return ["store-merge", str(ours), "--into", str(f)]
        return ["perplexity", "--model", MODEL, "--corpus", "wikipedia", "--store", str(f), "--out", str(d / "o.json")]
    return build


def _symlink_loop_model(d: Path) -> list[str]:
    (d / "loop").symlink_to(d / "loop")
    return ["perplexity", "--model", str(d / "loop"), "--text-file", "/etc/hostname", "--out", str(d / "o.json")]


def _npy_claiming(shape: tuple[int, ...]) -> bytes:
    """A .npy whose header claims `shape` (float64) over 40 x 8 numbers of data."""
    import io

    import numpy as np

    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "<f8", "fortran_order": False, "shape": shape})
    return buf.getvalue() + np.zeros((40, 8)).tobytes()


def _args(*a: str) -> Callable[[Path], list[str]]:
    def build(d: Path) -> list[str]:
        return [x.replace("{d}", str(d)) for x in a]
    return build


_GOOD = b"The quick brown fox jumps over the lazy dog, and then it runs into the forest."

BAD_INPUTS: list[BadInput] = [
    BadInput("unknown model name", _text_file(_GOOD, model="no-such-model"), "unknown model"),
    BadInput("malformed hub id a/b/c", _text_file(_GOOD, model="a/b/c"), "unknown model"),
    BadInput("nonexistent local path", _text_file(_GOOD, model="./no/such/folder"), "does not exist"),
    BadInput("missing text file", _args("perplexity", "--model", MODEL, "--text-file", "{d}/none.txt",
                                        "--out", "{d}/o.json"), "cannot read"),
    BadInput("empty text file", _text_file(b""), "empty"),
    BadInput("whitespace-only text file", _text_file(b"  \n\t \n"), "whitespace"),
    BadInput("binary text file", _text_file(bytes(range(256)) * 4), "binary"),
    BadInput("non-UTF-8 text file", _text_file("café crème, déjà vu".encode("latin-1")), "not UTF-8"),
    BadInput("indices: duplicates", _indices("[3, 1, 3]"), "duplicates"),
    BadInput("indices: negative", _indices("[0, -2]"), "out of range"),
    BadInput("indices: out of range", _indices("[10042]"), "out of range"),
    BadInput("indices: not JSON", _indices("0, 1, 2"), "unreadable"),
    BadInput("indices: not a list", _indices('{"a": 1}'), "list of integers"),
    BadInput("indices: empty list", _indices("[]"), "non-empty"),
    BadInput("hellaswag --limit 0", _args("hellaswag", "--model", MODEL, "--limit", "0", "--out", "{d}/o.json"),
             "at least 1"),
    BadInput("perplexity --limit 0", _args("perplexity", "--model", MODEL, "--corpus", "wikipedia", "--limit", "0",
                                           "--out", "{d}/o.json"), "at least 1"),
    BadInput("mauve --limit 0", _args("mauve", "--model", MODEL, "--limit", "0", "--out", "{d}/o.json"), "at least"),
    BadInput("hellaswag --sample 0", _args("hellaswag", "--model", MODEL, "--sample", "0", "--out", "{d}/o.json"),
             "--sample 0"),
    BadInput("perplexity --stride 0", _args("perplexity", "--model", MODEL, "--corpus", "wikipedia", "--limit", "2",
                                            "--stride", "0", "--out", "{d}/o.json"), "stride"),
    BadInput("perplexity --max-length 1", _args("perplexity", "--model", MODEL, "--corpus", "wikipedia", "--limit",
                                                "2", "--max-length", "1", "--out", "{d}/o.json"), "--max-length"),
    BadInput("mauve features with NaN", _features(_gauss(40, 8, nan=True), _gauss(40, 8, seed=1)), "NaN"),
    BadInput("mauve features: mismatched dims", _features(_gauss(40, 8), _gauss(40, 6, seed=1)),
             "different dimensions"),
    BadInput("mauve features: 1-D array", _features(lambda: __import__("numpy").zeros(8), _gauss(40, 8)), "2-D"),
    BadInput("mauve features: not .npy", _features(b"not numpy at all", _gauss(40, 8)), "not a .npy"),
    BadInput("mauve --k 1", _features(_gauss(40, 8), _gauss(40, 8, seed=1), "--k", "1"),
             "need 2..20 clusters"),
    BadInput("mauve --k > texts", _features(_gauss(10, 8), _gauss(10, 8, seed=1), "--k", "50"),
             "need 2..5 clusters"),
    BadInput("mauve --k abc", _features(_gauss(40, 8), _gauss(40, 8, seed=1), "--k", "abc"),
             "integer"),
    BadInput("mauve features: empty file", _features(b"", _gauss(40, 8)), "not a .npy"),
    BadInput("mauve --scaling 0", _features(_gauss(40, 8), _gauss(40, 8, seed=1), "--scaling", "0"), "scaling"),
    BadInput("mauve --limit 2 (model texts)", _args("mauve", "--model", MODEL, "--limit", "2", "--out", "{d}/o.json"),
             "at least 4"),
    BadInput("mauve --top-p 0", _args("mauve", "--model", MODEL, "--limit", "8", "--top-p", "0", "--out",
                                      "{d}/o.json"), "--top-p"),
    BadInput("mauve --k 40 for 8 texts", _args("mauve", "--model", MODEL, "--limit", "8", "--k", "40",
                                                "--out", "{d}/o.json"), "k=40"),
    BadInput("mauve --clusters 21 for 40 + 40 features", _features(_gauss(40, 8), _gauss(40, 8, seed=1), "--clusters",
                                                                   "21"), "need 2..20 clusters"),
    BadInput("mauve unknown --featurizer", _args("mauve", "--model", MODEL, "--limit", "8", "--featurizer",
                                                 "no-such-model", "--out", "{d}/o.json"), "unknown model"),
    # nonsense parameters: refused at parse time, non-finite included
    BadInput("mauve --temperature nan", _args("mauve", "--model", MODEL, "--limit", "8", "--temperature", "nan",
                                              "--out", "{d}/o.json"), "finite"),
    BadInput("mauve --temperature inf", _args("mauve", "--model", MODEL, "--limit", "8", "--temperature", "inf",
                                              "--out", "{d}/o.json"), "finite"),
    BadInput("mauve --scaling nan (features)", _features(_gauss(40, 8), _gauss(40, 8, seed=1), "--scaling", "nan"),
             "finite"),
    BadInput("perplexity --stride 5000 --max-length 8", _args("perplexity", "--model", MODEL, "--corpus", "wikipedia",
                                                              "--stride", "5000", "--max-length", "8", "--out",
                                                              "{d}/o.json"), "--stride 5000"),
    BadInput("hellaswag --batch-size 0", _args("hellaswag", "--model", MODEL, "--limit", "4", "--batch-size", "0",
                                               "--out", "{d}/o.json"), "--batch-size"),
    BadInput("hellaswag --batch-tokens -7", _args("hellaswag", "--model", MODEL, "--limit", "4", "--batch-tokens",
                                                  "-7", "--out", "{d}/o.json"), "--batch-tokens"),
    BadInput("kl --top-k 0", _kl("--top-k", "0"), "--top-k"),
    BadInput("kl --top-k -1", _kl("--top-k", "-1"), "--top-k"),
    BadInput("kl --top-k 100000000", _kl("--top-k", "100000000"), "--top-k"),
    BadInput("--device mps without MPS", _args("perplexity", "--model", MODEL, "--corpus", "wikipedia", "--device",
                                               "mps", "--out", "{d}/o.json"), "mps"),
    BadInput("--device cuda:7 without CUDA", _args("hellaswag", "--model", MODEL, "--limit", "2", "--device", "cuda:7",
                                                   "--out", "{d}/o.json"), "cuda"),
    BadInput("EVALCORE_MEMORY_LIMIT_GB=inf", _text_file(_GOOD), "EVALCORE_MEMORY_LIMIT_GB",
             env=(("EVALCORE_MEMORY_LIMIT_GB", "inf"),)),
    BadInput("EVALCORE_MEMORY_LIMIT_GB=-1", _text_file(_GOOD), "EVALCORE_MEMORY_LIMIT_GB",
             env=(("EVALCORE_MEMORY_LIMIT_GB", "-1"),)),
    # model names that are not usable paths
    BadInput("--model ~nosuchuser/x", _text_file(_GOOD, model="~nosuchuser/x"), "not a usable path"),
    BadInput("--model ''", _text_file(_GOOD, model=""), "empty model name"),
    BadInput("--model '   '", _text_file(_GOOD, model="   "), "empty model name"),
    # forged model folders: refused from their headers, before any load
    BadInput("safetensors header length 2^62", _forged(st=(1 << 62).to_bytes(8, "little") + b"{}"), "header length"),
    BadInput("safetensors header is a list", _forged(st=_st_blob(b"[1, 2, 3]")), "not an object"),
    BadInput("safetensors file empty", _forged(st=b""), "not a safetensors file"),
    BadInput("safetensors file garbage", _forged(st=bytes(range(256)) * 64), "not a safetensors file"),
    BadInput("safetensors tensor past the file's end", _forged(st=_st_blob(
        b'{"w": {"dtype": "F32", "shape": [1000, 1000], "data_offsets": [0, 4000000]}}')), "outside the file"),
    BadInput("config.json is a list", _forged(config=b"[1, 2]"), "not an object"),
    BadInput("config.json lacks hidden_size", _forged(config=json.dumps(
        {"model_type": "llama", "num_attention_heads": 2, "num_hidden_layers": 1, "intermediate_size": 8,
         "vocab_size": 16, "rms_norm_eps": 1e-5}).encode()), "hidden_size"),
    BadInput("config.json hidden_size NaN", _forged(config=b'{"model_type": "llama", "hidden_size": NaN}'),
             "hidden_size"),
    BadInput("config.json asks for custom code (auto_map)", _forged(config=json.dumps(
        {"model_type": "custom", "auto_map": {"AutoModelForCausalLM": "modeling.Custom"}}).encode()), "auto_map"),
    BadInput("model.safetensors a symlink loop", _forged(st_link="model.safetensors"), "cannot be read"),
    BadInput("model.safetensors a symlink to /etc/passwd", _forged(st_link="/etc/passwd"), "not a safetensors file"),
    BadInput("model.safetensors a symlink to /dev/zero", _forged(st_link="/dev/zero"), "not a regular file"),
    BadInput("model folder a symlink loop", _symlink_loop_model, "does not exist"),
    # text sources past the size limit, from files that never end
    BadInput("--text-file /dev/zero", _args("perplexity", "--model", MODEL, "--text-file", "/dev/zero", "--out",
                                            "{d}/o.json"), "more than"),
    BadInput("--text-file /dev/stdin fed /dev/zero", _args("perplexity", "--model", MODEL, "--text-file", "/dev/stdin",
                                                          "--out", "{d}/o.json"), "more than", stdin="/dev/zero"),
    BadInput("--indices /dev/urandom", _args("hellaswag", "--model", MODEL, "--indices", "/dev/urandom", "--out",
                                             "{d}/o.json"), "more than"),
    BadInput("--indices 60,000 entries with duplicates", _indices(json.dumps([i % 10042 for i in range(60_000)])),
             "duplicates"),
    BadInput("features .npy header claims 1e11 rows", _features(_npy_claiming((10**11, 8)), _gauss(40, 8)),
             "limit"),
    BadInput("features .npy header claims more than the file", _features(_npy_claiming((4000, 8)), _gauss(40, 8)),
             "truncated"),
    # --out that would destroy an input, or is a folder
    BadInput("--out = --text-file", _text_file(_GOOD, out="text.txt"), "same file as --text-file"),
    BadInput("--out = --store", _args("perplexity", "--model", MODEL, "--corpus", "wikipedia", "--store", "{d}/s.sqlite",
                                      "--out", "{d}/s.sqlite"), "same file as --store"),
    BadInput("--out = the store's -wal file", _args("perplexity", "--model", MODEL, "--corpus", "wikipedia", "--store",
                                                    "{d}/s.sqlite", "--out", "{d}/s.sqlite-wal"), "same file as --store"),
    BadInput("--out = the default store", _args("perplexity", "--model", MODEL, "--corpus", "wikipedia", "--out",
                                                 "{d}/cache/results.sqlite"), "same file as --store",
             env=(("EVALCORE_CACHE", "{d}/cache"),)),
    BadInput("--out = --indices", _indices("[1, 2]", out="indices.json"), "same file as --indices"),
    BadInput("--out = --p-features", _features(_gauss(40, 8), _gauss(40, 8, seed=1), out="p.npy"),
             "same file as --p-features"),
    BadInput("--out a symlink to --text-file", _text_file(_GOOD, out="link.txt", link="text.txt"),
             "same file as --text-file"),
    BadInput("--out a folder", _args("perplexity", "--model", MODEL, "--corpus", "wikipedia", "--out", "{d}"),
             "is a folder"),
    # a --store (or --into) that is some other program's file: refused, and left as it is
    BadInput("--store a text file", _foreign_store(b"my notes\n"), "not an evalcore results store"),
    BadInput("--store another program's SQLite", _foreign_store(None), "not an evalcore results store"),
    BadInput("--store /dev/null", _args("perplexity", "--model", MODEL, "--corpus", "wikipedia", "--store", "/dev/null",
                                        "--out", "{d}/o.json"), "not an evalcore results store"),
    BadInput("--store a folder", _args("perplexity", "--model", MODEL, "--corpus", "wikipedia", "--store", "{d}",
                                       "--out", "{d}/o.json"), "directory"),
    BadInput("store-merge --into another program's SQLite", _foreign_store(None, merge=True),
             "not an evalcore results store"),
    BadInput("EVALCORE_STORE_WAIT=nan", _text_file(_GOOD), "EVALCORE_STORE_WAIT", env=(("EVALCORE_STORE_WAIT", "nan"),)),
    # load-time checks (they need a model, so no guard): each still one line, exit 2, before slow work
    BadInput("EVALCORE_CACHE is a file", _args("perplexity", "--model", MODEL, "--text-file", "/etc/hostname",
                                               "--store", "{d}/s.sqlite", "--out", "{d}/o.json"),
             "cache folder", env=(("EVALCORE_CACHE", "/etc/hostname"),), loads=True),
]


def run_bad_input(case: BadInput, folder: Path, *, in_process: bool = False) -> tuple[Run, str | None]:
    """Run one bad input (with the no-model guard unless it `loads`); (run, None) when it failed as
    it should. `in_process`: through `cli_in_process` (no child start-up, the same checks) rather
    than a child process of the real entry point."""
    folder.mkdir(parents=True, exist_ok=True)
    args = case.build(folder)
    extra = {k: v.replace("{d}", str(folder)) for k, v in case.env}
    if in_process:
        run = cli_in_process(args, guard=not case.loads, extra_env=extra, stdin=case.stdin)
    elif case.stdin is not None:
        with open(case.stdin, "rb") as fin:
            run = cli(args, guard=not case.loads, timeout=120, extra_env=extra, stdin=fin)
    else:
        run = cli(args, guard=not case.loads, timeout=120, extra_env=extra)
    problem = one_line_error(run)
    if problem is None and case.expect.lower() not in run.err.lower():
        problem = f"message lacks {case.expect!r}: {run.err.strip()}"
    return run, problem
