"""A text's log-probability under a model with every byte scored: the model's own canonical
tokenization of the text's UTF-8 bytes, after one prefix token that is context only.

    SmolLM2 (no BOS):  <|endoftext|>  The  ␣cat  ␣sat   every text token is scored; the prefix
    Gemma 3:           <bos>          The  ␣cat  ␣sat   is the BOS, else the end-of-text token
                                                         (lm-evaluation-harness's rolling rule)

Two models with different tokenizers then score the same bytes, so their log-probabilities
can be compared per byte. Texts longer than the model's window are scored with sliding
windows (`evalcore.scoring.windows`), and the result says so.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from evalcore.errors import InputError
from evalcore.models import LoadedModel
from evalcore.tokenizer import prefix_token


@dataclass(frozen=True)
class SequenceScore:
    """log P(text) under one model, in nats, with what was scored."""

    logprob: float  # sum over the text's tokens of log P(token | prefix, earlier tokens)
    n_tokens: int  # text tokens scored (the prefix token not counted)
    n_bytes: int  # UTF-8 bytes of the text
    windowed: bool  # True when the text was longer than one window (sliding windows scored it)


def encode_scored(tokenizer: Any, text: str) -> list[int]:
    """[prefix token] + the canonical tokenization of `text` (no other special tokens)."""
    return [prefix_token(tokenizer), *tokenizer(text, add_special_tokens=False).input_ids]


def sequence_logprobs(lm: LoadedModel, texts: Sequence[str], *, max_length: int = 1024, stride: int = 512,
                      progress: Callable[[int], None] | None = None) -> list[SequenceScore]:
    """log P(text) for each text, every byte scored (module docstring); `progress(windows done)`."""
    from evalcore.scoring.windows import context_limit, token_nlls

    ids = [encode_scored(lm.tokenizer, t) for t in texts]
    empty = [i for i, x in enumerate(ids) if len(x) < 2]
    if empty:
        raise InputError(f"text {empty[0]} is empty; give texts with at least one character")
    window = min(max_length, context_limit(lm))
    nlls = token_nlls(lm, ids, max_length=window, stride=min(stride, window), progress=progress)
    return [SequenceScore(-float(n.sum()), len(x) - 1, len(t.encode("utf-8")), len(x) > window)
            for t, x, n in zip(texts, ids, nlls)]
