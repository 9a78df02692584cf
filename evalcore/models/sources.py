"""Where a model's weights come from, touching no network: availability, and the folder,
fingerprint and revision a load reads.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from evalcore import assets, checkpoint
from evalcore.errors import ModelUnavailableError
from evalcore.models.convert import bundle_installed, converted_dir, ensure_converted, is_complete
from evalcore.models.hub import GATED_HINT, hub_cached, hub_offline, hub_token
from evalcore.models.registry import ModelSpec

@dataclass(frozen=True)
class Availability:
    """Whether a model can be loaded here, and from where."""

    ok: bool  # loadable without further action
    source: str  # "converted cache" | "bundle" | "hub cache" | "hub" | "local" | "missing"
    detail: str  # one line for humans


def availability(spec: ModelSpec) -> Availability:
    """Where `load_model` would take this model from, touching no network."""
    if spec.family == "local":
        return Availability(True, "local", spec.name)
    if spec.bundle and is_complete(converted_dir(spec), verify=False):
        return Availability(True, "converted cache", str(converted_dir(spec)))
    if spec.bundle and bundle_installed(spec):
        return Availability(True, "bundle", "bundled GGUF; converted to safetensors on first load")
    if spec.hub_id and hub_cached(spec.hub_id):
        return Availability(True, "hub cache", spec.hub_id)
    if hub_offline():
        why = f"bundle not installed ({assets.BUNDLE_INSTALL_HINT}); " if spec.bundle else ""
        return Availability(False, "missing", f"{why}offline (HF_HUB_OFFLINE=1) and not in the hub cache")
    if spec.gated and not hub_token():
        return Availability(False, "gated", GATED_HINT.format(hub_id=spec.hub_id))
    return Availability(True, "hub", f"downloads {spec.hub_id}")


def weights_source(spec: ModelSpec) -> tuple[str, str, str | None]:
    """(folder or hub id, fingerprint, revision) for `from_pretrained`."""
    if spec.family == "local":
        folder = Path(spec.name)
        checkpoint.check_folder(folder)  # config, custom code, safetensors headers: before any weight is read
        return str(folder), checkpoint.folder_fingerprint(folder), None
    if spec.bundle and bundle_installed(spec):
        folder = ensure_converted(spec)
        meta = json.loads((folder / "evalcore-meta.json").read_text())
        return str(folder), meta["gguf_sha256"], None
    if spec.bundle and hub_offline() and not hub_cached(spec.hub_id):
        raise ModelUnavailableError(
            f"model {spec.name!r}: bundle not installed and offline; run {assets.BUNDLE_INSTALL_HINT}")
    return spec.hub_id, "", None
