"""A tokenizer.json read by the `tokenizers` library directly, for the bundled models' folders.

transformers' tokenizer classes give the same ids, but importing them indexes the whole
transformers package (~1-2 s here) and Gemma's loads in ~2 s; `tokenizers.Tokenizer`
loads SmolLM2's in 0.1 s. Special tokens (Gemma's `<bos>`) come from the file's own post-processor,
as they do in transformers' fast tokenizers; the special-token names come from
tokenizer_config.json. A test checks ids, special tokens, decoding and the vocabulary
against `AutoTokenizer` (what lm-evaluation-harness loads) on HellaSwag text.

It has the slice of transformers' tokenizer interface evalcore uses: `tok(text).input_ids`
(optionally truncated), `decode`, `get_vocab`, `bos/eos/pad/unk_token_id`. `prefix_token`
works on either kind.
"""
from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from evalcore.errors import InputError


class Encoding(dict[str, Any]):
    """{"input_ids": ..., "attention_mask": ...} readable as attributes (transformers' BatchEncoding)."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


class Tokenizer:
    """The tokenizer in a model folder (tokenizer.json and tokenizer_config.json), called like a
    transformers tokenizer."""

    bos_token_id: int | None
    eos_token_id: int | None
    pad_token_id: int | None
    unk_token_id: int | None

    def __init__(self, folder: str | Path):
        from tokenizers import Tokenizer as _Tokenizer

        folder = Path(folder)
        self._tok = _Tokenizer.from_file(str(folder / "tokenizer.json"))
        self._tok.no_truncation()
        self._tok.no_padding()
        cfg: dict[str, Any] = json.loads((folder / "tokenizer_config.json").read_text())
        for role in ("bos", "eos", "pad", "unk"):
            tok = cfg.get(f"{role}_token")
            tok = tok.get("content") if isinstance(tok, dict) else tok
            setattr(self, f"{role}_token", tok)
            setattr(self, f"{role}_token_id", self._tok.token_to_id(tok) if tok else None)

    @staticmethod
    def available(folder: str | Path) -> bool:
        """True when the folder has both files this class reads."""
        return (Path(folder) / "tokenizer.json").is_file() and (Path(folder) / "tokenizer_config.json").is_file()

    def __call__(self, text: str, *, truncation: bool = False, max_length: int | None = None,
                 add_special_tokens: bool = True, return_tensors: str | None = None) -> Encoding:
        """`.input_ids` (and `.attention_mask`) of one text; with return_tensors="pt", [1, n] tensors."""
        ids = self._tok.encode(text, add_special_tokens=add_special_tokens).ids
        if truncation and max_length is not None:
            ids = ids[:max_length]  # right truncation; these tokenizers add special tokens only in front
        enc = Encoding(input_ids=ids, attention_mask=[1] * len(ids))
        if return_tensors == "pt":
            import torch

            enc = Encoding({k: torch.tensor([v]) for k, v in enc.items()})
        elif return_tensors is not None:
            raise ValueError(f"return_tensors={return_tensors!r}: only 'pt' is supported")
        return enc

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = False) -> str:
        """The text of token ids (special tokens left out with skip_special_tokens)."""
        return self._tok.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

    def get_vocab(self) -> dict[str, int]:
        """Every token (added ones included) with its id."""
        return self._tok.get_vocab(with_added_tokens=True)

    def __len__(self) -> int:
        """The vocabulary's size, added tokens included."""
        return self._tok.get_vocab_size(with_added_tokens=True)


def prefix_token(tokenizer: Any) -> int:
    """The token that stands for an empty context, this or a transformers tokenizer's: BOS (also
    where the tokenizer does not add it), else end-of-text (lm-eval's rule)."""
    tid = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    if tid is None:
        raise InputError("the tokenizer has neither a BOS nor an end-of-text token to start a text from")
    return int(tid)
