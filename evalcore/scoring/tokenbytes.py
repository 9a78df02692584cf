"""The bytes each token stands for, and the vocabulary sorted by them: what exact next-byte
probabilities (`evalcore.scoring.nextbyte`) need from a tokenizer. No model here.

`token_byte_table(tokenizer)`: token id -> bytes, from the vocabulary's strings, for the two
families that can spell any byte string, told apart by their vocabularies:

    byte-level BPE (SmolLM2, GPT-2)          "Ġcafé" -> " café"   each character of the string
                                                                   stands for one byte (GPT-2's map)
    SentencePiece with byte fallback (Gemma) "▁café" -> " café"   ▁ is a space, the rest UTF-8;
                                             "<0xC3>" -> b"\xc3"   <0xNN> is that one byte

Special tokens (what `decode(skip_special_tokens=True)` drops: BOS, end-of-text, chat markers)
have no bytes: None. The table is checked against `tokenizer.decode` on evenly spaced samples.

`ByteIndex`: the tokens that have bytes, sorted by them, so the tokens that begin with a byte
string u are one contiguous range, and within it the ones longer than u sit together by their
next byte:

    sorted:   ...  ␣c  ␣ca  ␣cat  ␣cats  ␣cave  ␣co ...
                   └──── begin with "␣c" ────────┘
                   ␣c itself   └ byte 2 = a ───┘ └ o

`levels(index, x, j)` walks that down x[j:], one byte a level: level k holds the tokens that
begin with x[j:j+k]: the ones that are exactly x[j:j+k] and the longer ones with their byte k
(level 0: every token, by its first byte). Each level narrows the last with two binary searches.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from evalcore.errors import InputError

if TYPE_CHECKING:
    from torch import Tensor

DECODE_SAMPLES = 2000  # tokens whose table entry is checked against tokenizer.decode


# ----------------------------------------------------------------------------- token -> bytes

def gpt2_byte_chars() -> dict[str, int]:
    """GPT-2's byte-level alphabet: the character that stands for each byte in a token's string
    (printable Latin-1 characters for themselves, the others shifted to U+0100 and up)."""
    same = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    out = {chr(b): b for b in same}
    others = [b for b in range(256) if b not in out.values()]
    out.update({chr(256 + n): b for n, b in enumerate(others)})
    return out


_TABLES: dict[int, tuple[Any, tuple[bytes | None, ...]]] = {}  # id(tokenizer) -> (tokenizer, its table)


def token_byte_table(tokenizer: Any) -> tuple[bytes | None, ...]:
    """The bytes of every token id (None for special tokens: what `decode(skip_special_tokens=True)`
    leaves out), from the vocabulary's strings, checked against `tokenizer.decode` on samples.

    Families, told apart by the vocabulary: SentencePiece with byte fallback (it has `<0x00>` ..
    `<0xFF>`: those stand for one byte, `▁` for a space, the rest for their UTF-8) and byte-level
    BPE (it has `Ġ`, GPT-2's character for a space: `gpt2_byte_chars`). A string outside the
    family's alphabet (an added token kept as plain text) stands for its decoded text; more than
    1% of those, or another family: InputError."""
    hit = _TABLES.get(id(tokenizer))
    if hit is not None and hit[0] is tokenizer:
        return hit[1]
    vocab: dict[str, int] = tokenizer.get_vocab()
    strings: list[str | None] = [None] * (max(vocab.values()) + 1)
    for s, i in vocab.items():
        if tokenizer.decode([i], skip_special_tokens=True) != "":
            strings[i] = s
    if all(f"<0x{b:02X}>" in vocab for b in range(256)):
        spell = _sentencepiece_bytes
    elif "\u0120" in vocab:
        chars = gpt2_byte_chars()

        def spell(s: str) -> bytes | None:
            return bytes(chars[ch] for ch in s) if set(s) <= chars.keys() else None
    else:
        raise InputError("exact next-byte probabilities need a byte-level BPE or a SentencePiece tokenizer "
                         "with byte fallback (<0x00>..<0xFF> tokens); this tokenizer is neither")
    table = [None if s is None else spell(s) for s in strings]
    plain = [i for i, (s, b) in enumerate(zip(strings, table)) if s is not None and b is None]
    if len(plain) > len(table) // 100:
        raise InputError(f"{len(plain)} tokens are outside the tokenizer's byte alphabet; its family is not supported")
    for i in plain:
        table[i] = tokenizer.decode([i]).encode("utf-8")
    _check_table(tokenizer, table)
    _TABLES[id(tokenizer)] = (tokenizer, tuple(table))
    return _TABLES[id(tokenizer)][1]


def _sentencepiece_bytes(s: str) -> bytes | None:
    if len(s) == 6 and s.startswith("<0x") and s.endswith(">"):
        return bytes([int(s[3:5], 16)])
    return s.replace("\u2581", " ").encode("utf-8")


def _check_table(tokenizer: Any, table: Sequence[bytes | None]) -> None:
    """decode([ref, t]) must be the bytes of ref and t as text, for evenly spaced token ids t whose
    bytes are whole UTF-8 (`ref` spells "a": decoders that strip a leading space do so on it)."""
    ref = next((i for i, b in enumerate(table) if b == b"a"), None)
    if ref is None:
        raise InputError("the tokenizer has no token for 'a'; its token table cannot be checked")
    for t in range(0, len(table), max(1, len(table) // DECODE_SAMPLES)):
        b = table[t]
        try:
            want = None if b is None else (b"a" + b).decode("utf-8")
        except UnicodeDecodeError:
            continue
        if want is not None and tokenizer.decode([ref, t]) != want:
            raise InputError(f"token {t}: its bytes {b!r} disagree with the tokenizer's decode "
                             f"{tokenizer.decode([t])!r}; this tokenizer's family is not supported")


# ----------------------------------------------------------------------------- sorted vocabulary

@dataclass(frozen=True, eq=False)
class ByteIndex:
    """The N tokens that have bytes, sorted by their bytes (ties by id): the tokens that begin
    with a byte string are a contiguous range of this order."""

    order: Tensor  # [N] token ids, sorted
    cols: npt.NDArray[np.uint8]  # [N, W] their bytes, zero-padded to the longest token's W
    lens: npt.NDArray[np.int64]  # [N] their lengths in bytes
    first: Tensor  # [N] int64, their first bytes (level 0's segment ids)

    @staticmethod
    def build(table: Sequence[bytes | None]) -> ByteIndex:
        """The index of a token table (`token_byte_table`)."""
        import torch

        ids = sorted((i for i, b in enumerate(table) if b), key=lambda i: (table[i], i))
        keys = [table[i] or b"" for i in ids]
        W = max(len(k) for k in keys)
        cols = np.frombuffer(b"".join(k.ljust(W, b"\0") for k in keys), dtype=np.uint8).reshape(len(ids), W)
        return ByteIndex(torch.tensor(ids, dtype=torch.long), cols, np.array([len(k) for k in keys]),
                         torch.from_numpy(cols[:, 0].astype(np.int64)))


_INDEXES: dict[int, tuple[Sequence[bytes | None], ByteIndex]] = {}


def byte_index(table: Sequence[bytes | None]) -> ByteIndex:
    """`ByteIndex.build(table)`, built once per table object."""
    hit = _INDEXES.get(id(table))
    if hit is None or hit[0] is not table:
        _INDEXES[id(table)] = hit = (table, ByteIndex.build(table))
    return hit[1]


@dataclass(frozen=True, eq=False)
class Level:
    """Level k of a start j: the tokens that begin with u = x[j:j+k], the sorted range [lo, hi);
    [lo, mid) are u itself, [mid, hi) are longer, `seg` their byte at index k."""

    k: int
    lo: int
    mid: int
    hi: int
    seg: Tensor | None  # [hi - mid] int64 (None when empty)
    exact: Tensor  # [mid - lo] token ids


def levels(ix: ByteIndex, x: bytes, j: int, memo: dict[bytes, Level]) -> list[Level]:
    """Levels k = 0, 1, ... of a state at j, while some token begins with x[j:j+k] (k <= len - j).
    A level depends on x[j:j+k] only: `memo` (one per text) keeps them across starts."""
    import torch

    out: list[Level] = []
    lo, hi = 0, len(ix.lens)
    for k in range(len(x) - j + 1):
        lv = memo.get(x[j:j + k])
        if lv is None:
            if k:
                col = ix.cols[lo:hi, k - 1]
                lo, hi = lo + int(np.searchsorted(col, x[j + k - 1])), lo + int(np.searchsorted(col, x[j + k - 1], "right"))
            mid = lo + int(np.count_nonzero(ix.lens[lo:hi] == k))
            seg = ix.first if not k else torch.from_numpy(ix.cols[mid:hi, k].astype(np.int64)) if hi > mid else None
            lv = memo[x[j:j + k]] = Level(k, lo, mid, hi, seg, ix.order[lo:mid])
        if lv.lo == lv.hi:
            break
        out.append(lv)
        if lv.mid == lv.hi:  # no token is longer than x[j:j+k]
            break
        lo, hi = lv.mid, lv.hi
    return out
