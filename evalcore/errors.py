"""One small exception family. Every message names the bad value, the limit and the fix."""
from __future__ import annotations


class EvalcoreError(Exception):
    """Base class: anything a user can act on. The CLI prints it in one line; pages show st.error."""


class UnknownModelError(EvalcoreError):
    """A model name that is neither in the registry, nor a local folder, nor a hub id."""


class ModelUnavailableError(EvalcoreError):
    """The model is known but cannot be loaded here (bundle missing, hub unreachable offline)."""


class NotEnoughMemoryError(ModelUnavailableError):
    """A model refused before loading because its weights would not fit in free memory."""


class AssetError(EvalcoreError):
    """A bundled asset or cached file is missing, truncated or fails its checksum."""


class InputError(EvalcoreError):
    """Bad user input: item selections, texts, parameters out of range."""


class StoreError(EvalcoreError):
    """The results store cannot be read or written (read-only folder, disk full, corrupt file)."""


class NonFiniteError(EvalcoreError):
    """A computation gave NaN or infinity: never stored, never reported as a number."""


def require_finite(values: object, what: str, fix: str = "") -> None:
    """Raise NonFiniteError naming `what` and the first bad position when `values` hold NaN or inf.

    `fix` says what to do; the default points at the model's weights, the usual cause.
    """
    import numpy as np

    a = np.asarray(values, dtype=np.float64)
    bad = ~np.isfinite(a)
    if bad.any():
        at = tuple(int(i) for i in np.argwhere(bad)[0])
        where = f" at position {at[0] if len(at) == 1 else at}" if a.ndim else ""
        raise NonFiniteError(f"{what} is {a[bad][0]}{where}; nothing was stored. "
                             + (fix or "The model gives non-finite numbers: rerun at --dtype float32, and if "
                                       "that fails too its weights are damaged (reinstall or re-save them)"))
