"""One small exception family. Every message names the bad value, the limit and the fix."""
from __future__ import annotations


class EvalcoreError(Exception):
    """Base class: anything a user can act on. The CLI prints it in one line; pages show st.error."""


class UnknownModelError(EvalcoreError):
    """A model name that is neither in the registry, nor a local folder, nor a hub id."""


class ModelUnavailableError(EvalcoreError):
    """The model is known but cannot be loaded here (bundle missing, hub unreachable offline)."""


class AssetError(EvalcoreError):
    """A bundled asset or cached file is missing, truncated or fails its checksum."""


class InputError(EvalcoreError):
    """Bad user input: item selections, texts, parameters out of range."""


class StoreError(EvalcoreError):
    """The results store cannot be read or written (read-only folder, disk full, corrupt file)."""
