"""The Hugging Face hub, touched only where a model is not bundled: offline switch, cache look-ups,
snapshot folders and their commits, and errors worded for users.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

from evalcore import checkpoint
from evalcore.models.registry import OFFLINE_PAIR, ModelSpec

log = logging.getLogger(__name__)

def hub_offline() -> bool:
    """True when the user (or the test suite) forbade hub calls with HF_HUB_OFFLINE."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def hub_token() -> bool:
    """True when a Hugging Face token is set here: HF_TOKEN (Streamlit Cloud's secrets arrive as
    environment variables) or a `huggingface-cli login` token file."""
    if os.environ.get("HF_TOKEN", "").strip():
        return True
    try:
        from huggingface_hub import get_token
    except ImportError:  # pragma: no cover - huggingface_hub comes with transformers
        return False
    return bool(get_token())


GATED_HINT = ("gated on the hub: accept its licence at https://huggingface.co/{hub_id}, then set HF_TOKEN "
              "(on Streamlit Cloud: the app's Settings → Secrets, HF_TOKEN = \"hf_…\")")


def hub_cached(hub_id: str) -> bool:
    """True when the hub model's config.json is in the local hub cache."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - huggingface_hub comes with transformers
        return False
    return isinstance(try_to_load_from_cache(hub_id, "config.json"), str)


HUB_FILES = list(checkpoint.MODEL_FILES)


def hub_commit(hub_id: str, revision: str | None = None) -> str | None:
    """The commit of the hub snapshot a load just read (its folder name in the hub cache).
    transformers 5 no longer records it (`config._commit_hash`)."""
    from huggingface_hub import try_to_load_from_cache

    p = try_to_load_from_cache(hub_id, "config.json", revision=revision)
    return Path(p).parent.name if isinstance(p, str) else None


def hub_snapshot(hub_id: str) -> str | None:
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


def hub_error(spec: ModelSpec, e: Exception) -> str:
    """The one-line message for a hub model that failed to load, saying what to do."""
    if hub_offline():
        return (f"model {spec.name!r} is not available offline (HF_HUB_OFFLINE=1 and not in the hub "
                f"cache); use a bundled model: {', '.join(OFFLINE_PAIR)}")
    gated = "; it is gated: set HF_TOKEN" if spec.gated else ""
    return f"could not load {spec.hub_id or spec.name!r} from the hub ({type(e).__name__}: {e}){gated}"
