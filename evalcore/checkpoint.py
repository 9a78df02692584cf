"""What is in a model folder, checked before anything is loaded, and what identifies it.

    check_folder(folder)        config.json a JSON object naming its architecture, no custom code
                                (`auto_map`), every weights file a regular safetensors file whose
                                header is sane: else one ModelUnavailableError that says what to do
    safetensors_header(path)    the header of one file, bounded and validated (never trusts its length)
    check_weight_keys(...)      missing or unexpected weights are an error, beyond tied or ignored keys
    file_digest(path)           SHA-256 of a file's bytes, re-hashed only when its size, mtime, ctime or
                                inode changed since the last hash (a memo in the cache folder)
    folder_fingerprint(folder)  content identity of everything in a folder that changes a number:
                                weights, config, generation config and tokenizer files

Nothing here imports torch or transformers.
"""
from __future__ import annotations

import fnmatch
import hashlib
import json
import logging
import os
import stat
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from evalcore import assets
from evalcore.errors import ModelUnavailableError

log = logging.getLogger(__name__)

# The files of a model folder that change its numbers (and that a hub snapshot fetches).
MODEL_FILES = ("config.json", "generation_config.json", "*.safetensors", "model.safetensors.index.json", "tokenizer*",
               "special_tokens_map.json", "vocab.json", "merges.txt", "*.model", "added_tokens.json")
MAX_HEADER_BYTES = 100 << 20  # safetensors' own limit on a header
MAX_CONFIG_BYTES = 16 << 20
_ST_DTYPES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1,
              "F8_E4M3": 1, "F8_E5M2": 1, "U16": 2, "U32": 4, "U64": 8}
# Keys a checkpoint may lack or carry without changing a number: RoPE's inverse frequencies and
# GPT-2-style causal-mask buffers (computed, not learned), older checkpoints' position-id buffers.
IGNORABLE_KEYS = ("*.rotary_emb.inv_freq", "*.attn.bias", "*.attn.masked_bias", "*.position_ids")


def _fail(folder: Path | str, why: str, fix: str = "") -> ModelUnavailableError:
    return ModelUnavailableError(f"model folder {str(folder)!r}: {why}" + (f"; {fix}" if fix else ""))


def regular_file(path: Path, *, folder: Path | str) -> os.stat_result:
    """stat of a regular file (symlinks followed); a loop, a dangling link or a non-file is an error."""
    try:
        st = path.stat()
    except OSError as e:
        raise _fail(folder, f"{path.name} cannot be read ({e.strerror or e})",
                    "replace it with a regular file") from None
    if not stat.S_ISREG(st.st_mode):
        raise _fail(folder, f"{path.name} is not a regular file", "replace it with the file itself")
    return st


def safetensors_header(path: Path, *, folder: Path | str | None = None) -> dict[str, Any]:
    """The JSON header of a safetensors file, checked against the file's real size.

    Raises ModelUnavailableError for a header length past the file or past 100 MiB, a header
    that is not a JSON object of tensors, or tensors whose data lies outside the file.
    """
    folder = folder if folder is not None else path.parent
    fix = "re-save the model with `save_pretrained(dir, safe_serialization=True)`"
    size = regular_file(path, folder=folder).st_size
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
            n = int.from_bytes(head, "little") if len(head) == 8 else -1
            if n < 2 or n > MAX_HEADER_BYTES or 8 + n > size:
                raise _fail(folder, f"{path.name} is not a safetensors file (header length {n} for a "
                                    f"{size:,}-byte file)", fix)
            header = json.loads(fh.read(n))
    except (OSError, ValueError) as e:
        if isinstance(e, ModelUnavailableError):
            raise
        raise _fail(folder, f"{path.name} has an unreadable safetensors header ({type(e).__name__})", fix) from None
    if not isinstance(header, dict):
        raise _fail(folder, f"{path.name}'s safetensors header is a {type(header).__name__}, not an object", fix)
    data = size - 8 - n
    for name, t in header.items():
        if name == "__metadata__":
            continue
        ok = (isinstance(t, dict) and t.get("dtype") in _ST_DTYPES and isinstance(t.get("shape"), list)
              and all(isinstance(d, int) and d >= 0 for d in t["shape"]) and isinstance(t.get("data_offsets"), list)
              and len(t["data_offsets"]) == 2 and all(isinstance(o, int) for o in t["data_offsets"]))
        if ok:
            lo, hi = t["data_offsets"]
            count = 1
            for d in t["shape"]:
                count *= d
            ok = 0 <= lo <= hi <= data and hi - lo == count * _ST_DTYPES[t["dtype"]]
        if not ok:
            raise _fail(folder, f"{path.name}: tensor {str(name)[:80]!r} is malformed or lies outside the file "
                                "(truncated or forged)", fix)
    return header


def tensor_count(header: dict[str, Any]) -> int:
    """Parameters described by one checked safetensors header."""
    n = 0
    for k, v in header.items():
        if k != "__metadata__":
            c = 1
            for d in v["shape"]:
                c *= d
            n += c
    return n


NATIVE_CONFIG: dict[str, tuple[str, ...]] = {  # what evalcore's own forward (evalcore.native) reads from config.json, per architecture
    "llama": ("hidden_size", "num_attention_heads", "num_hidden_layers", "intermediate_size", "vocab_size",
              "rms_norm_eps"),
    "gemma3_text": ("hidden_size", "num_attention_heads", "num_hidden_layers", "intermediate_size", "vocab_size",
                    "rms_norm_eps"),
}


def check_native_config(folder: Path | str, cfg: dict[str, Any]) -> None:
    """The numbers evalcore's own forward needs are in config.json, positive and finite."""
    import math

    for k in NATIVE_CONFIG.get(str(cfg.get("model_type")), ()):
        v = cfg.get(k)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
            raise _fail(folder, f"config.json lacks a positive {k} (has {str(v)[:20]})",
                        "give the model's own config.json")


def read_config(folder: Path) -> dict[str, Any]:
    """config.json as a dict, refused when missing, not a JSON object, or asking for custom code."""
    p = folder / "config.json"
    if not os.path.lexists(p):
        raise _fail(folder, "no config.json", "give a folder saved with `save_pretrained`")
    st = regular_file(p, folder=folder)
    if st.st_size > MAX_CONFIG_BYTES:
        raise _fail(folder, f"config.json is {st.st_size:,} bytes", "give the model's own config.json")
    try:
        cfg = json.loads(p.read_bytes())
    except (OSError, ValueError) as e:
        raise _fail(folder, f"config.json is not valid JSON ({type(e).__name__})", "repair or re-save it") from None
    if not isinstance(cfg, dict):
        raise _fail(folder, f"config.json holds a JSON {type(cfg).__name__}, not an object", "re-save it")
    if not isinstance(cfg.get("model_type"), str):
        raise _fail(folder, "config.json names no model_type", "re-save it with `save_pretrained`")
    if "auto_map" in cfg:
        raise _fail(folder, "config.json asks to run the folder's own Python code (auto_map)",
                    "evalcore never runs code from a model folder; use a model that transformers implements")
    check_native_config(folder, cfg)
    return cfg


def check_folder(folder: Path) -> list[Path]:
    """Check a local model folder before loading it; return its safetensors files.

    Every check here reads headers only, so a forged or damaged folder costs no wait.
    """
    if not folder.is_dir():
        raise _fail(folder, "is not a folder", "give a folder with config.json and *.safetensors")
    read_config(folder)
    st = sorted(folder.glob("*.safetensors"))
    if not st:
        bins = sorted(p.name for p in folder.glob("*.bin")) + sorted(p.name for p in folder.glob("*.pt"))
        what = f"only pickle checkpoints ({', '.join(bins)})" if bins else "no *.safetensors file"
        raise _fail(folder, f"has {what}; evalcore loads safetensors only (pickle files can run code)",
                    "convert with `model.save_pretrained(dir, safe_serialization=True)`")
    for p in st:
        safetensors_header(p, folder=folder)
    return st


def check_weight_keys(folder: Path | str, expected: Iterable[str], found: Iterable[str], *,
                      tied: Iterable[str] = ()) -> None:
    """Refuse a checkpoint whose weights are not exactly the model's: a missing weight would be
    randomly initialised, an unexpected one means another architecture. Tied and ignorable keys pass."""
    expected, found = set(expected), set(found)

    def real(keys: set[str]) -> list[str]:
        return sorted(k for k in keys if k not in set(tied) and not any(fnmatch.fnmatch(k, g) for g in IGNORABLE_KEYS))

    missing, unexpected = real(expected - found), real(found - expected)
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} weight(s) missing ({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected ({', '.join(unexpected[:3])}"
                         f"{', ...' if len(unexpected) > 3 else ''})")
        raise _fail(folder, " and ".join(parts) + ": the weights do not match config.json",
                    "give the folder of a complete checkpoint (a missing weight would be random numbers)")


# ----------------------------------------------------------------------------- content identity

_MEMO_LOCK = threading.Lock()
_SEEN: dict[str, dict[str, Any]] = {}  # path -> {"stat", "sha256"} computed or read in this process


def _stat_tag(st: os.stat_result) -> list[int]:
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev]


def sha256_of(path: Path) -> str:
    """The file's SHA-256, as hex, read in 4 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 22):
            h.update(block)
    return h.hexdigest()


def _memo_path() -> Path:
    return assets.cache_dir() / "file-digests.json"


def _read_memo() -> dict[str, Any]:
    try:
        memo = json.loads(_memo_path().read_text())
        return memo if isinstance(memo, dict) else {}
    except (OSError, ValueError):
        return {}


def file_digest(path: Path) -> str:
    """SHA-256 of a file, from the memo when its size, mtime, ctime, inode and device are those
    of the last hash (a file changed in place changes its ctime), else hashed again."""
    real = str(Path(path).resolve())
    st = os.stat(real)
    tag = _stat_tag(st)
    with _MEMO_LOCK:
        hit = _SEEN.get(real) or _read_memo().get(real)  # this process's digests first: no file read
    if isinstance(hit, dict) and hit.get("stat") == tag and isinstance(hit.get("sha256"), str):
        _SEEN[real] = hit
        return str(hit["sha256"])
    digest = sha256_of(Path(real))
    with _MEMO_LOCK:
        _SEEN[real] = {"stat": tag, "sha256": digest}
        memo = _read_memo()
        memo[real] = {"stat": tag, "sha256": digest}
        try:
            assets.write_atomic(_memo_path(), json.dumps(memo, indent=0))
        except OSError as e:  # a read-only cache: the digest is still right, only not remembered
            log.info("cannot remember file digests in %s: %s", _memo_path(), e)
    return digest


def model_files(folder: Path) -> list[Path]:
    """The files of `folder` that change a model's numbers (MODEL_FILES), sorted by name."""
    return sorted(p for p in folder.iterdir() if any(fnmatch.fnmatch(p.name, g) for g in MODEL_FILES) and p.is_file())


def folder_fingerprint(folder: Path) -> str:
    """Content hash of a folder's weights, config and tokenizer files (names and bytes)."""
    h = hashlib.sha256()
    for p in model_files(folder):
        h.update(f"{p.name}:{file_digest(p)};".encode())
    return "local-" + h.hexdigest()[:24]
