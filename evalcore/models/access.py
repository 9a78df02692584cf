"""The app's model box: which names a shared app may load (registry, hub ids, folders under
allowed roots, resolved before they are checked). The CLI is not restricted.
"""
from __future__ import annotations

import os
from pathlib import Path

from evalcore import assets
from evalcore.errors import InputError, ModelUnavailableError
from evalcore.models.registry import OFFLINE_PAIR, REGISTRY, resolve_spec
from evalcore.models.sources import availability, weights_source

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
        weights_source(spec)  # refuses a folder without safetensors (pickle checkpoints) before any load
    a = availability(spec)
    if not a.ok:
        raise ModelUnavailableError(f"{name}: {a.detail}; pick a bundled model ({', '.join(OFFLINE_PAIR)})")
    return name
