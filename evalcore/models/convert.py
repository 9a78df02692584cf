"""Bundled GGUF files -> safetensors in the cache folder, once, under a file lock.

Loading a GGUF through transformers is slow (it parses the file three times;
`runtime.gguf_parsed_once` makes that once), so the result is saved as safetensors +
tokenizer files under `<cache>/models/NAME-vCONVERT_VERSION` with `evalcore-meta.json`
(written last): each file's size, SHA-256, mtime, ctime and inode. A file whose stat
differs from its record is hashed again; other bytes mean the folder is rebuilt. Processes,
torchrun ranks and app sessions wait on one lock per model; the folder is written to
`.NAME.tmpPID` and renamed into place, and a killed conversion's folder is removed by the next.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

from evalcore import assets, checkpoint
from evalcore.errors import AssetError, UnknownModelError
from evalcore.models.registry import OFFLINE_PAIR, ModelSpec, resolve_spec

log = logging.getLogger(__name__)

CONVERT_VERSION = "1"  # bump when the conversion recipe changes; old caches are rebuilt


def converted_dir(spec: ModelSpec) -> Path:
    """Cache folder of the safetensors converted from a bundled GGUF."""
    return assets.cache_dir() / "models" / f"{spec.name}-v{CONVERT_VERSION}"


def bundle_installed(spec: ModelSpec) -> bool:
    """True when the bundled model's GGUF package is installed here."""
    if spec.bundle == "smollm2":
        return assets.locate(assets.SMOLLM2_GGUF) is not None
    if spec.bundle == "gemma3":
        return all(assets.locate(p) is not None for p in assets.GEMMA_PARTS)
    return False


def _gguf_path(spec: ModelSpec) -> tuple[Path, str]:
    """(GGUF file, its sha256) for a bundled model."""
    if spec.bundle == "gemma3":
        return assets.gemma_gguf(), assets.GEMMA_SHA256
    p = assets.require(assets.SMOLLM2_GGUF)
    return p, assets.sha256_file(p)


def _file_record(p: Path) -> dict[str, Any]:
    st = p.stat()
    return {"size": st.st_size, "sha256": checkpoint.sha256_of(p), "mtime_ns": st.st_mtime_ns, "ctime_ns": st.st_ctime_ns,
            "ino": st.st_ino}


def is_complete(folder: Path, *, verify: bool = True) -> bool:
    """A converted folder is complete when its meta (written last) lists each file with the size,
    mtime, ctime, inode and SHA-256 it had when converted. A file whose size, mtime, ctime or
    inode differ from the record is hashed again: equal bytes renew the record, other bytes
    (changed in place, even with its mtime set back) make the folder incomplete, so it is
    rebuilt. `verify=False` checks sizes only."""
    meta_p = folder / "evalcore-meta.json"
    try:
        meta = json.loads(meta_p.read_text())
        files = meta["files"]
        if meta.get("convert_version") != CONVERT_VERSION or not files:
            return False
        renewed = False
        for name, rec in files.items():
            p = folder / name
            st = p.stat()
            if not isinstance(rec, dict) or st.st_size != rec["size"]:
                return False
            if not verify or (st.st_mtime_ns, st.st_ctime_ns, st.st_ino) == (rec["mtime_ns"], rec.get("ctime_ns"),
                                                                               rec["ino"]):
                continue
            if checkpoint.sha256_of(p) != rec["sha256"]:
                log.warning("converted cache %s: %s changed since conversion (SHA-256 differs)", folder, name)
                return False
            files[name] = {**rec, "mtime_ns": st.st_mtime_ns, "ctime_ns": st.st_ctime_ns, "ino": st.st_ino}
            renewed = True
        if renewed:
            try:
                assets.write_atomic(meta_p, json.dumps(meta, indent=1))
            except OSError:  # read-only cache: the bytes were checked; the next load checks again
                pass
        return True
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _clean_stale_conversions(spec: ModelSpec) -> None:
    """Remove temporary folders of conversions killed part-way (`.NAME.tmpPID`). Called with the
    conversion lock held, so no live conversion of this model is writing one."""
    for tmp in converted_dir(spec).parent.glob(f".{converted_dir(spec).name}.tmp*"):
        log.info("removing %s, left by a conversion that was interrupted", tmp)
        shutil.rmtree(tmp, ignore_errors=True)


def ensure_converted(spec: ModelSpec) -> Path:
    """Convert a bundled GGUF to safetensors once; return the cache folder.

    A half-written, truncated or changed cache (meta missing, a size or SHA-256 that is not
    the recorded one) is rebuilt. Processes, ranks and app sessions converting the same model
    wait for one another on a file lock; the conversion is written to a temporary folder and
    renamed into place, and temporary folders of interrupted conversions are removed.
    """
    out = converted_dir(spec)
    if is_complete(out):
        return out
    models_dir = assets.writable_cache_dir("models")  # before the slow part: a cache we cannot write fails now
    with assets.cache_lock(models_dir, out.name):
        if is_complete(out):  # another process converted it while we waited
            return out
        _clean_stale_conversions(spec)
        if out.exists():
            log.warning("converted cache %s is incomplete or corrupt; rebuilding", out)
        return _convert(spec, out)


def _convert(spec: ModelSpec, out: Path) -> Path:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    from evalcore.runtime import gguf_parsed_once

    hf_logging.disable_progress_bar()  # library code never prints; the CLI and the app show their own progress

    gguf, sha = _gguf_path(spec)
    t0 = time.perf_counter()
    with gguf_parsed_once():
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # transformers marks a GGUF-loaded model as quantized although its weights are already
    # dequantized floats; clear the marker so it saves, and so the saved config does not
    # ask for a GGUF file again.
    model.hf_quantizer = None  # type: ignore[assignment]  # transformers types it as always set; None clears it
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = out.parent / f".{out.name}.tmp{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        _save_weights(model, tmp)
        tok.save_pretrained(tmp)
        files = {p.name: _file_record(p) for p in sorted(tmp.iterdir()) if p.is_file()}
        meta = {"gguf": str(gguf), "gguf_sha256": sha, "convert_version": CONVERT_VERSION,
                "seconds": round(time.perf_counter() - t0, 2), "files": files}
        (tmp / "evalcore-meta.json").write_text(json.dumps(meta, indent=1))
        shutil.rmtree(out, ignore_errors=True)
        os.replace(tmp, out)  # renaming the folder keeps each file's inode, mtime and ctime: the record stays true
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise AssetError(f"cannot write the converted {spec.name} to {out.parent}: {e.strerror or e}; set "
                         "EVALCORE_CACHE to a writable folder with ~2 GB free") from None
    log.info("converted %s to safetensors in %.1fs", spec.name, meta["seconds"])
    return out


def _save_weights(model: Any, folder: Path) -> None:
    """config.json, generation_config.json and model.safetensors of a model, written on any rank.

    Not `model.save_pretrained`: inside a torchrun process group it writes nothing on ranks
    other than 0, and the rank that converts is whichever takes the lock first. The LM head
    tied to the embeddings is stored once, under the embeddings' name, as transformers does.
    """
    from safetensors.torch import save_file

    model.config.architectures = [type(model).__name__]  # as save_pretrained records it
    model.config.save_pretrained(folder)
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.save_pretrained(folder)
    sd = model.state_dict()
    head, embed = sd.get("lm_head.weight"), sd.get("model.embed_tokens.weight")
    if head is not None and embed is not None and head.data_ptr() == embed.data_ptr():
        del sd["lm_head.weight"]
    save_file({k: v.contiguous() for k, v in sd.items()}, str(folder / "model.safetensors"), metadata={"format": "pt"})


def load_gguf_direct(name: str) -> tuple[Any, Any]:
    """Load a bundled model straight from its GGUF (slow; for tests and the load benchmark)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    spec = resolve_spec(name)
    if not spec.bundle:
        raise UnknownModelError(f"{name!r} has no bundled GGUF; bundled: {', '.join(OFFLINE_PAIR)}")
    gguf, _ = _gguf_path(spec)
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    return model.eval(), tok
