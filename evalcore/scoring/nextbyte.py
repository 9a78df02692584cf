"""Exact next-byte distributions of a causal LM over a short text ("measure 3" of cross-tokenizer
KL): P(next byte | the text's first i bytes) for every i, whatever the tokenizer, so that two
models with different vocabularies can be compared byte by byte (`evalcore.metrics.bytekl`).

A model emits tokens, and a token stands for a fixed byte string (`evalcore.scoring.tokenbytes`).
The byte-level process behind it: draw tokens until end-of-text, concatenate their bytes. The
probability that the output begins with x[:i] sums over every tokenization, canonical or not,
that covers x[:i]. States are the token sequences that spell x[:j] exactly (● at j), each with
its probability P(s) and its next-token distribution p_s (one forward step per state):

    bytes:            a     ␣     c     a     t
    position:      0     1     2     3     4     5
    <s> a ␣cat     ●──a──●─────────␣cat──────────●      canonical
    <s> a ␣ cat    ●──a──●──␣──●───────cat───────●
    <s> a␣ cat     ●────a␣─────●───────cat───────●

    mass(i, c)   = Σ_{states s at j <= i} P(s) · Σ_{tokens t: bytes(t) begins with x[j:i] + c} p_s(t)
    mass(i, end) = Σ_{states s at i} P(s) · p_s(EOS)
    P(c | x[:i]) = mass(i, c) / Σ_c' mass(i, c')       c over the 256 bytes and end: 257 outcomes

States at i are states at j < i followed by a token whose bytes are exactly x[j:i]. Tokens with
no bytes (special tokens other than EOS) lead nowhere: their share (`special`) is left out by the
normalisation. Positions run in order; when position i comes, every state that can reach it has
run, so mass(i, ·) is complete and the states at i are all known. The tokens that begin with
x[j:i] + c are ranges of the vocabulary sorted by bytes (`tokenbytes.levels`), so a batch of
states at j costs one gather of its probabilities into that order and one scatter-add per byte
of lookahead (the first: the whole vocabulary by first byte), no loop over the vocabulary.

Pruning, at each position i before its states run: Z_i = Σ_c mass(i, c) + Σ_{states at i} P(s)
is the probability that the output begins with x[:i]; a state is dropped when P(s) < Z_i · e^-prune_nats
or when max_states more probable ones are kept, but the canonical tokenization's state never is.
(A share of Z_i rather than a ratio to the best state at i: states inside a likely token, whose
best is itself improbable, are dropped, and those positions need no forward call.) `pruned[i]`
is the dropped share of Z_i: to first order, the total-variation error it causes at i. Dropped
sequences' continuations are lost as well; `pruned_total` (Σ_{j<=i} pruned[j]) estimates the
error at i if they would have continued as the kept ones do: an estimate, not a bound (the
error measured against a nearly unpruned run is in bench/RESULTS.md). Pruning only removes
mass, so Σ log P(x_i | x[:i]) + log P(end | x) stays >= log P(canonical tokenization, EOS).

Models plug in through `TokenModel` (a toy Markov source in the tests is one). `LMTokenModel`
adapts a loaded causal LM: one KV cache holds every state's last token, a token trie; a new
state is one token whose query attends to its ancestors' slots, its position id its depth. So
a state costs a single-token forward step, and the states at one position run as one batch:

    slot:     0     1     2     3     4      5     6
    token:   <s>    a     ␣     a␣    ␣cat   cat   cat      calls (one per position with states):
    parent:   -     0     1     0     1      2     3        [0] [1] [2 3] [4 5 6]
    depth:    0     1     2     1     2      3     2        slot 6 attends to slots 0, 3 and 6

Each call reads all the weights (Gemma's 262k-row LM head most), so calls, not states, set the
time: about one call per byte (`forward_calls`, `forward_steps` and `seconds` in the result;
measured costs in bench/RESULTS.md).
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import numpy.typing as npt

from evalcore.errors import InputError
from evalcore.metrics.bytekl import END, OUTCOMES, ByteDivergences, byte_divergences
from evalcore.scoring.tokenbytes import Level, byte_index, levels, token_byte_table

if TYPE_CHECKING:
    from torch import Tensor

    from evalcore.models import LoadedModel

MAX_TEXT_BYTES = 200  # the states of a text share one KV cache; longer texts: split them
PRUNE_NATS = 12.0  # drop states whose share of the prefix's probability is below e^-12 (≈ 6e-6)
MAX_STATES = 16  # ... and all but this many most probable per position (the canonical one is kept)
FLOOR = 1e-12  # `next_byte_divergences`'s probability floor: KL stays finite where one model cannot spell a byte


# ----------------------------------------------------------------------------- models

class TokenModel(Protocol):
    """A token-level model the marginalisation can run: its vocabulary's bytes and its next-token
    log-distribution after token sequences (each starting with `prefix_token`)."""

    prefix_token: int  # the context of an empty text (BOS, else end-of-text)
    eos_token: int  # ends a text: the end outcome (column 256)
    token_bytes: Sequence[bytes | None]  # per token id; None: a token with no bytes

    def encode(self, text: str) -> list[int]:
        """The canonical tokenization of `text` (no special tokens)."""
        ...

    def reset(self) -> None:
        """Forget cached work: a new text starts."""
        ...

    def next_logprobs(self, seqs: Sequence[tuple[int, ...]]) -> Tensor:
        """log p(next token | seq) for each sequence: [len(seqs), V], any float dtype."""
        ...


class LMTokenModel:
    """A loaded causal LM as a TokenModel (module docstring: a token trie in one KV cache)."""

    def __init__(self, lm: LoadedModel):
        from evalcore.tokenizer import prefix_token

        tok = lm.tokenizer
        if tok.eos_token_id is None:
            raise InputError(f"{lm.spec.name}'s tokenizer has no end-of-text token; next-byte end "
                             "probabilities need one")
        self.lm = lm
        self.prefix_token, self.eos_token = prefix_token(tok), int(tok.eos_token_id)
        self.token_bytes: Sequence[bytes | None] = token_byte_table(tok)
        self.reset()

    def encode(self, text: str) -> list[int]:
        return list(self.lm.tokenizer(text, add_special_tokens=False).input_ids)

    def reset(self) -> None:
        self.cache: Any = None
        self.slot: dict[tuple[int, ...], int] = {}  # a sequence -> its last token's cache position
        self.ancestors: list[list[int]] = []  # per cache position: its path's positions, itself last
        self.depth: list[int] = []  # per cache position: its position id (the prefix token: 0)
        self.forward_calls = 0

    def next_logprobs(self, seqs: Sequence[tuple[int, ...]]) -> Tensor:
        """One forward call for the sequences (and any prefix of theirs not run yet): each new
        token attends to its ancestors' cached keys and values."""
        import torch

        past = len(self.depth)
        toks: list[int] = []
        rows: list[int] = []
        for seq in seqs:
            known = len(seq) - 1  # the longest prefix already in the cache (usually the parent)
            while known and seq[:known] not in self.slot:
                known -= 1
            for d in range(known + 1, len(seq) + 1):
                parent = self.ancestors[self.slot[seq[:d - 1]]] if d > 1 else []
                self.slot[seq[:d]] = len(self.depth)
                self.ancestors.append([*parent, len(self.depth)])
                self.depth.append(d - 1)
                toks.append(seq[d - 1])
            rows.append(len(toks) - 1)
        with torch.inference_mode(), self.lm.forward_settings():
            if self.cache is None:
                self.cache = self._new_cache()
            dev = self.lm.device
            pos = torch.tensor(self.depth[past:])[None]
            out = self.lm.model(input_ids=torch.tensor([toks], device=dev), attention_mask=self._mask(past),
                                position_ids=pos.to(dev), cache=self.cache, use_cache=True)
            self.forward_calls += 1
            return torch.log_softmax(out.logits[0, rows].double(), -1).cpu()

    def _new_cache(self) -> Any:
        """An empty cache that keeps every position: the trie's slots are cache positions (a
        transformers cache built from the config would drop old positions of sliding layers)."""
        if self.lm.backend == "native":
            return self.lm.new_cache()
        from transformers import DynamicCache

        return DynamicCache()

    def _mask(self, past: int) -> Tensor | dict[str, Tensor]:
        """Bool [1, 1, T, past + T]: new token r attends to its ancestors; with sliding-window
        layers, per layer type, the sliding one limited by depth as well."""
        import torch

        T, n = len(self.depth) - past, len(self.depth)
        m = torch.zeros((T, n), dtype=torch.bool)
        for r in range(T):
            m[r, self.ancestors[past + r]] = True
        cfg = self.lm.model.config
        mask = m[None, None].to(self.lm.device)
        window = getattr(cfg, "sliding_window", None)
        if window and "sliding_attention" in set(getattr(cfg, "layer_types", None) or ()):
            d = torch.tensor(self.depth)
            near = (d[past:, None] - d[None, :]) < window
            return {"full_attention": mask, "sliding_attention": (m & near)[None, None].to(self.lm.device)}
        return mask


# ----------------------------------------------------------------------------- marginalisation

@dataclass(frozen=True, eq=False)
class NextByteDists:
    """A model's next-byte distributions over one text of n bytes (natural logs)."""

    text: str
    logprobs: npt.NDArray[np.float64]  # [n + 1, 257]: row i, log P(outcome | x[:i]); columns 0..255 bytes, 256 end
    pruned: npt.NDArray[np.float64]  # [n + 1]: share of P(output begins with x[:i]) on states dropped at i
    special: npt.NDArray[np.float64]  # [n + 1]: share of position i's mass on byteless tokens (left out)
    states: npt.NDArray[np.int64]  # [n + 1]: states kept (forward steps) at each position
    canonical_logprob: float  # log P(canonical tokenization of x, then EOS), from the same forward steps
    forward_steps: int  # tokens run through the model: the states, the prefix included
    forward_calls: int  # batched forward calls (0 for models that do not count them)
    seconds: float
    prune_nats: float
    max_states: int

    @property
    def n_bytes(self) -> int:
        return len(self.logprobs) - 1

    @property
    def probs(self) -> npt.NDArray[np.float64]:
        """[n + 1, 257] probabilities, each row summing to 1."""
        return np.exp(self.logprobs)

    def observed(self) -> npt.NDArray[np.float64]:
        """[n + 1] log P(x_i | x[:i]) for each byte, then log P(end | x)."""
        cols = [*self.text.encode("utf-8"), END]
        return self.logprobs[np.arange(len(cols)), cols]

    @property
    def chain_logprob(self) -> float:
        """Σ_i log P(x_i | x[:i]) + log P(end | x): log P(x, then end) at the byte level."""
        return float(self.observed().sum())

    @property
    def pruned_total(self) -> npt.NDArray[np.float64]:
        """[n + 1] Σ_{j <= i} pruned[j]: an estimate of the pruning's error at i (module docstring)."""
        return np.cumsum(self.pruned)

    def to_dict(self, *, full: bool = False) -> dict[str, Any]:
        """Summary and per-position values; `full`: every distribution ([n + 1][257] log-probs)."""
        d = {"text": self.text, "n_bytes": self.n_bytes, "chain_logprob": self.chain_logprob,
             "canonical_logprob": self.canonical_logprob, "observed_logprobs": self.observed().tolist(),
             "pruned": self.pruned.tolist(), "pruned_total": float(self.pruned_total[-1]),
             "special": self.special.tolist(), "states": self.states.tolist(), "forward_steps": self.forward_steps,
             "forward_calls": self.forward_calls, "seconds": self.seconds,
             "settings": {"prune_nats": self.prune_nats, "max_states": self.max_states}}
        if full:
            d["logprobs"] = self.logprobs.tolist()
        return d

    def to_record(self) -> dict[str, Any]:
        """What the store keeps: the summary and every distribution as probabilities (finite, where
        a log-probability of an impossible byte would be -inf)."""
        return {**self.to_dict(), "probs": self.probs.tolist()}

    @staticmethod
    def from_record(d: dict[str, Any]) -> NextByteDists:
        """The distributions `to_record` kept."""
        with np.errstate(divide="ignore"):
            logprobs = np.log(np.array(d["probs"], dtype=np.float64))
        return NextByteDists(d["text"], logprobs, np.array(d["pruned"]), np.array(d["special"]),
                             np.array(d["states"], dtype=np.int64), d["canonical_logprob"], d["forward_steps"],
                             d["forward_calls"], d["seconds"], d["settings"]["prune_nats"], d["settings"]["max_states"])


@dataclass(frozen=True, eq=False)
class _State:
    seq: tuple[int, ...]  # prefix token, then tokens spelling x[:j] exactly
    logp: float  # log P(seq)
    canon: bool  # seq is a prefix of the canonical tokenization


def next_byte_distributions(model: TokenModel | LoadedModel, text: str, *, prune_nats: float = PRUNE_NATS,
                            max_states: int = MAX_STATES,
                            progress: Callable[[int, int], None] | None = None) -> NextByteDists:
    """P(next byte or end | x[:i]) for i = 0 .. n over the UTF-8 bytes x of `text` (module docstring);
    `progress(positions done, n + 1)` after each position."""
    import torch

    from evalcore.models import LoadedModel

    tm = LMTokenModel(model) if isinstance(model, LoadedModel) else model
    x, t0 = text.encode("utf-8"), time.perf_counter()
    if len(x) > MAX_TEXT_BYTES:
        raise InputError(f"text of {len(x)} bytes: next-byte distributions take at most {MAX_TEXT_BYTES}; split it")
    if not (prune_nats > 0 and max_states >= 1):
        raise InputError(f"prune_nats={prune_nats}, max_states={max_states}: need prune_nats > 0 and max_states >= 1")
    canon = tm.encode(text)
    if any(tm.token_bytes[t] is None for t in canon) or b"".join(tm.token_bytes[t] or b"" for t in canon) != x:
        raise InputError("the tokenizer's encoding of the text does not spell its bytes (normalisation, an added "
                         "prefix space or special tokens in the text); exact byte probabilities need a round trip")
    run = _Run(tm, x, canon, prune_nats, max_states)
    tm.reset()
    for i in range(len(x) + 1):
        kept = run.prune(i)
        if kept:
            run.spread(i, kept, tm.next_logprobs([s.seq for s in kept]).double())
        if progress:
            progress(i + 1, len(x) + 1)
    total = torch.logsumexp(run.mass, 1)
    special = torch.tensor(run.special, dtype=torch.float64)
    return NextByteDists(text, (run.mass - total[:, None]).numpy(), np.array(run.pruned),
                         torch.exp(special - torch.logaddexp(special, total)).numpy(), np.array(run.states),
                         run.canonical, int(sum(run.states)), int(getattr(tm, "forward_calls", 0)),
                         time.perf_counter() - t0, prune_nats, max_states)


class _Run:
    """The state of one text's marginalisation: candidates per position, masses, records."""

    def __init__(self, tm: TokenModel, x: bytes, canon: list[int], prune_nats: float, max_states: int):
        import torch

        self.tm, self.x, self.canon, self.nats, self.cap = tm, x, canon, prune_nats, max_states
        self.ix = byte_index(tm.token_bytes)
        self.memo: dict[bytes, Level] = {}
        n = len(x)
        self.mass = torch.full((n + 1, OUTCOMES), -math.inf, dtype=torch.float64)  # log mass(i, outcome)
        self.cands: list[list[_State]] = [[] for _ in range(n + 1)]
        self.cands[0].append(_State((tm.prefix_token,), 0.0, True))
        self.pruned = [0.0] * (n + 1)
        self.special = [-math.inf] * (n + 1)  # log mass on byteless tokens
        self.states = [0] * (n + 1)
        self.canonical = -math.inf
        self.byteless: Tensor | None = None  # ids with no bytes but EOS, once the vocabulary size is known

    def prune(self, i: int) -> list[_State]:
        """The candidates at position i that are kept (module docstring); records the pruned share."""
        live = sorted((c for c in self.cands[i] if c.logp > -math.inf), key=lambda c: -c.logp)
        self.cands[i] = []
        if not live:
            return []
        log_z = float(np.logaddexp(float(self.mass[i].logsumexp(0)), _lse([c.logp for c in live])))
        kept = [c for c in live[: self.cap] if c.logp >= log_z - self.nats]
        kept += [c for c in live if c.canon and c not in kept]
        dropped = [c.logp for c in live if c not in kept]
        if dropped:
            self.pruned[i] = math.exp(_lse(dropped) - log_z)
        self.states[i] = len(kept)
        return kept

    def spread(self, i: int, states: list[_State], lp: Tensor) -> None:
        """Add the states at position i (next-token log-probs lp [S, V]) to mass(i + k, ·) for each
        level k, their children to the candidates k bytes on, and their end-of-text mass."""
        import torch

        S, V = lp.shape
        logp = torch.tensor([s.logp for s in states], dtype=torch.float64)
        ps = lp[:, self.ix.order].exp()  # [S, N], sorted by bytes
        for lv in levels(self.ix, self.x, i, self.memo):
            if lv.seg is not None:
                m = torch.zeros((S, OUTCOMES), dtype=torch.float64)
                m.scatter_add_(1, lv.seg.expand(S, -1), ps[:, lv.mid : lv.hi])
                self.mass[i + lv.k] = torch.logaddexp(self.mass[i + lv.k], torch.logsumexp(m.log() + logp[:, None], 0))
            if len(lv.exact):
                self._children(i + lv.k, states, (logp[:, None] + lp[:, lv.exact]).tolist(), lv.exact.tolist())
        eos = logp + lp[:, self.tm.eos_token]
        self.mass[i, END] = torch.logaddexp(self.mass[i, END], torch.logsumexp(eos, 0))
        if self.byteless is None:
            tb = self.tm.token_bytes
            self.byteless = torch.tensor([t for t in range(V) if t != self.tm.eos_token and (t >= len(tb) or not tb[t])],
                                         dtype=torch.long)
        if len(self.byteless):
            self.special[i] = float(torch.logsumexp(logp + torch.logsumexp(lp[:, self.byteless], 1), 0))
        for r, s in enumerate(states):
            if s.canon and len(s.seq) - 1 == len(self.canon):
                self.canonical = float(eos[r])

    def _children(self, at: int, states: list[_State], logps: list[list[float]], tokens: list[int]) -> None:
        """Candidates at position `at`: each state followed by each token (log-probs [S][e])."""
        for s, row in zip(states, logps):
            d = len(s.seq) - 1
            on_canon = s.canon and d < len(self.canon)
            for t, c in zip(tokens, row):
                if c > -math.inf:
                    self.cands[at].append(_State((*s.seq, t), c, on_canon and self.canon[d] == t))


def _lse(v: Sequence[float]) -> float:
    m = max(v)
    return m + math.log(sum(math.exp(a - m) for a in v))


def next_byte_divergences(p: NextByteDists, q: NextByteDists, *, floor: float | None = FLOOR) -> ByteDivergences:
    """Per-position KL(P‖Q), KL(Q‖P) and JS between two models' distributions over the same text.

    floor: each probability raised to at least this, rows renormalised (`bytekl.byte_divergences`),
    because a distribution can hold exact zeros: bytes the vocabulary cannot spell (SmolLM2 has no
    token beginning with 21 of the 256 byte values) and, under pruning, bytes only dropped
    tokenizations lead to. None: as computed (KL may be +inf)."""
    if p.text != q.text:
        raise InputError("the two next-byte distributions are over different texts; compare the same text")
    return byte_divergences(p.probs, q.probs, floor=floor)
