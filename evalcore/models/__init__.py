"""Models: a name -> a loaded model, and everything that decides which weights that is.

    registry   names -> ModelSpec (bundled pair, size ladders that share a tokenizer), resolve_spec
    hub        the Hugging Face hub: offline switch, cache look-ups, snapshots and their commits
    convert    bundled GGUF -> safetensors in the cache, once, under a file lock, hashed
    sources    where a model's weights come from (availability, folder, fingerprint, revision)
    device     "auto" device and dtype resolved once
    memory     refusing, before loading, a model that would not fit
    loading    load_model / load_embedder -> LoadedModel, once per process; one lock
    access     which names a shared app may load

A loaded model is a value (`LoadedModel`) that `load_model` returns and callers pass on. Its
`forward` interface is the same for both backends (evalcore's own forward for Llama and Gemma 3,
transformers for the rest): callers never branch on which one runs.

Security: `trust_remote_code` is never enabled, only safetensors are loaded (a folder that has
only pickle `.bin` checkpoints is refused), and a local folder is checked before it is read
(`evalcore.checkpoint`).
"""
from evalcore.models.access import allowed_model_dirs, check_app_model
from evalcore.models.convert import CONVERT_VERSION, converted_dir, ensure_converted, is_complete, load_gguf_direct
from evalcore.models.device import device_summary, resolve_device, resolve_dtype
from evalcore.models.hub import hub_commit, hub_offline, hub_token
from evalcore.models.loading import (BACKENDS, LoadedModel, check_vocabulary, fuse_rms_norms, import_backends,
                                     load_embedder, load_model, unload)
from evalcore.models.memory import (check_memory, free_memory_bytes, memory_limit_bytes, parameter_count,
                                    total_memory_bytes, weights_bytes)
from evalcore.models.registry import EMBEDDER, OFFLINE_PAIR, ONLINE_PAIR, REGISTRY, ModelSpec, resolve_spec
from evalcore.models.sources import Availability, availability, weights_source

__all__ = ["BACKENDS", "CONVERT_VERSION", "EMBEDDER", "OFFLINE_PAIR", "ONLINE_PAIR", "REGISTRY", "Availability",
           "LoadedModel", "ModelSpec", "allowed_model_dirs", "availability", "check_app_model", "check_memory",
           "check_vocabulary", "converted_dir", "device_summary", "ensure_converted", "free_memory_bytes",
           "fuse_rms_norms", "hub_commit", "hub_offline", "hub_token", "import_backends", "is_complete",
           "load_embedder", "load_gguf_direct", "load_model", "memory_limit_bytes", "parameter_count",
           "resolve_device", "total_memory_bytes", "weights_bytes", "resolve_dtype", "resolve_spec", "unload",
           "weights_source"]
