"""evalcore: KL divergence, perplexity, MAUVE and HellaSwag for language models.

Importing this package loads no model, touches no disk and imports neither torch nor
transformers; those are imported inside `evalcore.models` and `evalcore.scoring` only.
"""
from evalcore.errors import EvalcoreError

__version__ = "0.1.0"
__all__ = ["EvalcoreError", "__version__"]
