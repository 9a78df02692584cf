"""The pieces both families share: linear and embedding layers, RMSNorm, RoPE, attention, the
gated MLP, the KV cache, the decoder stack and the causal-LM interface evalcore calls.

RoPE cos/sin are computed once per forward in float32 from the position ids and cast to the
activations' dtype (rotate_half's minus sign folded into sin: the same products), attention
is torch's SDPA with the same masks (a bool mask, or none and `is_causal` when nothing is
padded), grouped key/value heads read directly (`enable_gqa`). Outside autograd, residual
adds, RoPE and the MLP's activation * up write into fresh intermediates instead of allocating
new ones.

Unpadded batches (`keep=`): embeddings, norms, projections, RoPE and MLPs run on the real
tokens only, as one [1, N] sequence; each layer scatters q, k and v into the padded [B, T]
layout for attention (zeros at padding, which the mask hides) and gathers the real rows back:

    batch [B, T]   a a a a      keep = flat indices of the real tokens   [1, N]  a a a a b b c
                   b b . .      ------------------------------------->   (norms, projections,
                   c . . .      <-------------------------------------    RoPE, MLP)
                                attention only: q, k, v scattered back to [B, T], zeros at "."

The per-token arithmetic is the same; matmuls of another height round differently at float32
(~1e-5 in a log-likelihood).
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

NormFn = Callable[[Tensor, Tensor, float], Tensor]  # (x, weight, eps) -> normed x
Unpad = tuple[Tensor, int, int]  # (keep, B, T): flat indices of the real tokens of a [B, T] batch
Masks = dict[str, Tensor | None]  # per layer type: a bool attention mask, or None for causal only


# ----------------------------------------------------------------------------- in-place arithmetic

def imul(a: Tensor, b: Tensor) -> Tensor:
    """a * b, written into `a` unless autograd is recording (it may need `a` as it was)."""
    return a * b if torch.is_grad_enabled() else a.mul_(b)


def iadd(a: Tensor, b: Tensor) -> Tensor:
    """a + b, written into `a` unless autograd is recording."""
    return a + b if torch.is_grad_enabled() else a.add_(b)


def softcap_logits(logits: Tensor, config: object, *, inplace: bool = False) -> Tensor:
    """The logits squashed into (-cap, cap) as cap * tanh(logits / cap) when the config sets
    `final_logit_softcapping` (Gemma); otherwise the logits as they are. inplace: written into
    `logits` (a buffer the caller owns); the same ops, so the same numbers either way."""
    cap: float | None = getattr(config, "final_logit_softcapping", None)
    if not cap:
        return logits
    if inplace:
        return logits.div_(cap).tanh_().mul_(cap)
    return torch.tanh(logits / cap) * cap


# ----------------------------------------------------------------------------- layers

class TensorModule(nn.Module):
    """An nn.Module whose call takes one tensor and returns one (the call typed for mypy; it runs
    `forward` as any module's call does)."""

    if TYPE_CHECKING:
        def __call__(self, x: Tensor) -> Tensor: ...


class Weighted(TensorModule):
    """A module with one weight of the given shape, created empty on the meta device: no
    initialisation (nn.Embedding's init on meta imports torch._dynamo, ~2 s) before the
    checkpoint's tensors are assigned."""

    def __init__(self, *shape: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(shape, device="meta"))


class Linear(Weighted):
    """y = x W^T (no bias), like nn.Linear."""

    bias = None

    def __init__(self, i: int, o: int):
        super().__init__(o, i)

    def forward(self, x: Tensor) -> Tensor:
        """x times the weight's transpose: [..., i] -> [..., o]."""
        return F.linear(x, self.weight)


class Embedding(Weighted):
    """Token embeddings, an [n, d] table."""

    def forward(self, ids: Tensor) -> Tensor:
        """The embedding row of each token id: [...] -> [..., d]."""
        return F.embedding(ids, self.weight)


class RMSNorm(Weighted):
    """An RMSNorm with its family's formula (`fn`: llama.rms_norm_llama or gemma3.rms_norm_gemma)."""

    def __init__(self, dim: int, eps: float, fn: NormFn):
        super().__init__(dim)
        self.eps, self.fn = eps, fn

    def forward(self, x: Tensor) -> Tensor:
        """x normalised over its last dimension and scaled by the weight, in x's dtype."""
        return self.fn(x, self.weight, self.eps)


class MLP(TensorModule):
    """The gated MLP: down(act(gate(h)) * up(h)), `act` the family's activation."""

    def __init__(self, d: int, inter: int, act: Callable[[Tensor], Tensor]):
        super().__init__()
        self.gate_proj, self.up_proj, self.down_proj = Linear(d, inter), Linear(d, inter), Linear(inter, d)
        self.act = act

    def forward(self, h: Tensor) -> Tensor:
        """The MLP's output for hidden states h, the same shape as h."""
        return self.down_proj(imul(self.act(self.gate_proj(h)), self.up_proj(h)))


# ----------------------------------------------------------------------------- rotary embeddings

def rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """x rotated: x * cos + rotate_half(x) * sin, where rotate_half(x) = cat(-x2, x1); the minus
    sign is folded into `sin` (its first half negated, once per forward), the same products and sum."""
    h = x.shape[-1] // 2
    return iadd(x * cos, imul(torch.cat((x[..., h:], x[..., :h]), dim=-1), sin))


def rope_tables(thetas: Mapping[str, float], position_ids: Tensor, head_dim: int, dtype: torch.dtype,
                *, unpadded: bool) -> dict[str, tuple[Tensor, Tensor]]:
    """(cos, sin) per layer type for the given positions, computed in float32 as transformers
    computes them and cast to `dtype`; sin's first half negated (see `rope`). Shapes broadcast
    over heads: [B, 1, T, D], or [N, 1, D] (heads after tokens) for an unpadded batch."""
    D = head_dim
    out = {}
    for t, theta in thetas.items():
        inv_freq = 1.0 / (theta ** (torch.arange(0, D, 2, dtype=torch.float, device=position_ids.device) / D))
        freqs = position_ids[..., None].float() * inv_freq
        emb = torch.cat((freqs, freqs), dim=-1)
        emb = emb[0][:, None] if unpadded else emb[:, None]
        sin = emb.sin().to(dtype)
        out[t] = (emb.cos().to(dtype), torch.cat((-sin[..., : D // 2], sin[..., D // 2 :]), -1))
    return out


# ----------------------------------------------------------------------------- attention

class KVCache:
    """Keys and values of every layer so far (for generation), plus how many positions they hold."""

    def __init__(self) -> None:
        self.kv: dict[int, tuple[Tensor, Tensor]] = {}

    def update(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Append this step's keys and values for `layer`; returns all of that layer's so far."""
        if layer in self.kv:
            k = torch.cat([self.kv[layer][0], k], dim=2)
            v = torch.cat([self.kv[layer][1], v], dim=2)
        self.kv[layer] = (k, v)
        return k, v

    def get_seq_length(self) -> int:
        """How many positions the cache holds (0 when empty)."""
        return self.kv[0][0].shape[2] if self.kv else 0


class Attention(nn.Module):
    """Self-attention with grouped key/value heads and RoPE; `qk_norm` (Gemma 3) norms q and k
    per head before RoPE."""

    def __init__(self, cfg: SimpleNamespace, scaling: float, qk_norm: NormFn | None = None):
        super().__init__()
        H, KV, D = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
        self.H, self.KV, self.D = H, KV, D
        self.q_proj, self.k_proj = Linear(cfg.hidden_size, H * D), Linear(cfg.hidden_size, KV * D)
        self.v_proj, self.o_proj = Linear(cfg.hidden_size, KV * D), Linear(H * D, cfg.hidden_size)
        self.q_norm: RMSNorm | None = None
        self.k_norm: RMSNorm | None = None
        if qk_norm is not None:
            self.q_norm, self.k_norm = RMSNorm(D, cfg.rms_norm_eps, qk_norm), RMSNorm(D, cfg.rms_norm_eps, qk_norm)
        self.scaling = scaling

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, mask: Tensor | None, cache: KVCache | None,
                layer: int, unpad: Unpad | None = None) -> Tensor:
        """The attention output for hidden states x [B, T, hidden] (or [1, N, hidden] with `unpad`),
        the same shape as x."""
        if unpad is not None:
            return self._unpadded(x, cos, sin, mask, *unpad)
        B, T, _ = x.shape
        q, k = self._qk(self.q_proj(x).view(B, T, self.H, self.D).transpose(1, 2),
                        self.k_proj(x).view(B, T, self.KV, self.D).transpose(1, 2), cos, sin)
        v = self.v_proj(x).view(B, T, self.KV, self.D).transpose(1, 2)
        if cache is not None:
            k, v = cache.update(layer, k, v)
        o = self._sdpa(q, k, v, mask, x.device, T)
        return self.o_proj(o.transpose(1, 2).reshape(B, T, -1))

    def _qk(self, q: Tensor, k: Tensor, cos: Tensor, sin: Tensor) -> tuple[Tensor, Tensor]:
        """q and k normed (when the family norms them) and rotated."""
        if self.q_norm is not None and self.k_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        return rope(q, cos, sin), rope(k, cos, sin)

    def _sdpa(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, device: torch.device, T: int) -> Tensor:
        is_causal = mask is None and T > 1
        kw: dict[str, Any] = {}
        if mask is None or device.type == "cpu":  # CUDA's masked GQA kernel is slow: repeat heads there
            kw["enable_gqa"] = self.H != self.KV
        else:
            k, v = k.repeat_interleave(self.H // self.KV, 1), v.repeat_interleave(self.H // self.KV, 1)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=0.0, scale=self.scaling,
                                              is_causal=is_causal, **kw)

    def _unpadded(self, x: Tensor, cos: Tensor, sin: Tensor, mask: Tensor | None, keep: Tensor, B: int,
                  T: int) -> Tensor:
        """x: [1, N, hidden], the N kept tokens of a [B, T] batch (flat indices `keep`). Projections
        and RoPE run on those tokens only; attention on the [B, T] layout, zeros at padding."""
        N = x.shape[1]
        q, k = self._qk(self.q_proj(x).view(N, self.H, self.D), self.k_proj(x).view(N, self.KV, self.D), cos, sin)
        v = self.v_proj(x).view(N, self.KV, self.D)

        def padded(t: Tensor) -> Tensor:
            out = t.new_zeros((B * T, *t.shape[1:]))
            out[keep] = t
            return out.view(B, T, *t.shape[1:]).transpose(1, 2)

        o = self._sdpa(padded(q), padded(k), padded(v), mask, x.device, T)
        return self.o_proj(o.transpose(1, 2).reshape(B * T, -1)[keep][None])


def layer_masks(am: Tensor | Mapping[str, Tensor] | None, layer_types: set[str], window: int | None, B: int,
                T: int, past: int, device: torch.device) -> Masks:
    """Per layer type: None (SDPA's causal path) or a bool mask [B, 1, T, past + T], as
    transformers' create_causal_mask / create_sliding_window_causal_mask build them; `window`
    applies to "sliding_attention" layers."""
    if isinstance(am, Mapping):
        return {t: am[t].to(device) for t in layer_types}
    if am is not None and am.dim() == 4:
        return {t: am.to(device) for t in layer_types}
    kv = past + T
    pad = None if am is None or bool(am.all()) else am.to(device).bool()
    out: Masks = {}
    for t in layer_types:
        w = window if t == "sliding_attention" else None
        if pad is None and (T == 1 or past == 0) and (w is None or kv <= w):
            out[t] = None  # nothing to mask beyond causality
            continue
        qi = torch.arange(past, kv, device=device)[:, None]
        ki = torch.arange(kv, device=device)[None, :]
        m = ki <= qi
        if w is not None:
            m = m & (ki > qi - w)
        m = m[None, None].expand(B, 1, T, kv)
        if pad is not None:
            m = m & pad[:, None, None, :kv]
        out[t] = m
    return out


# ----------------------------------------------------------------------------- the stack

class DecoderLayer(nn.Module):
    """One decoder layer's shared parts: attention, gated MLP, the two norms every family has.
    Each family's subclass adds its own norms and the residual wiring (`forward`)."""

    def __init__(self, cfg: SimpleNamespace, attention: Attention, mlp: MLP, norm: NormFn):
        super().__init__()
        d, eps = cfg.hidden_size, cfg.rms_norm_eps
        self.self_attn, self.mlp = attention, mlp
        self.input_layernorm, self.post_attention_layernorm = RMSNorm(d, eps, norm), RMSNorm(d, eps, norm)

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, mask: Tensor | None, cache: KVCache | None, layer: int,
                unpad: Unpad | None = None) -> Tensor:
        """The layer's output hidden states, the same shape as x."""
        raise NotImplementedError


class Body(nn.Module):
    """The decoder stack (transformers' `LlamaModel` / `Gemma3TextModel`); `model.base_model`.
    A family's subclass gives its norm and layers (`layer`) and may scale the embeddings (`embed`)."""

    def __init__(self, cfg: SimpleNamespace, norm: NormFn):
        super().__init__()
        self.config = cfg
        self.embed_tokens = Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(self.layer(cfg) for _ in range(cfg.num_hidden_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, norm)

    def layer(self, cfg: SimpleNamespace) -> DecoderLayer:
        """A new (empty) decoder layer of this family."""
        raise NotImplementedError

    def embed(self, input_ids: Tensor) -> Tensor:
        """The input embeddings of the token ids."""
        return self.embed_tokens(input_ids)

    def forward(self, input_ids: Tensor, attention_mask: Tensor | Mapping[str, Tensor] | None = None,
                position_ids: Tensor | None = None, cache: KVCache | None = None, use_cache: bool | None = None,
                keep: Tensor | None = None, **_: Any) -> SimpleNamespace:
        """Last hidden state (final norm applied) for input ids [B, T], as `.last_hidden_state`.

        attention_mask: None (causal), [B, past + T] with 1 for real tokens (padding, either
        side), a bool [B, 1, T, past + T] mask (True = attend), or such masks per layer type
        ({"full_attention": ..., "sliding_attention": ...}). position_ids default to
        past .. past + T - 1. keep (no cache): flat indices into [B, T] of the real tokens;
        then everything but attention runs on those N tokens only, and the result is their
        hidden states, [1, N, hidden], in `keep`'s order (padding costs attention only)."""
        B, T = input_ids.shape
        past = cache.get_seq_length() if cache is not None else 0
        if position_ids is None:
            position_ids = (torch.arange(T, device=input_ids.device) + past)[None].expand(B, T)
        unpad = None
        if keep is not None and cache is None:
            unpad = (keep, B, T)
            input_ids, position_ids = input_ids.reshape(-1)[keep][None], position_ids.reshape(-1)[keep][None]
        x = self.embed(input_ids)
        cfg = self.config
        masks = layer_masks(attention_mask, set(cfg.layer_types), cfg.sliding_window, B, T, past, x.device)
        rope = rope_tables(cfg.rope_theta_by_type, position_ids.to(x.device), cfg.head_dim, x.dtype,
                           unpadded=unpad is not None)
        for i, layer in enumerate(self.layers):
            t = cfg.layer_types[i]
            cos, sin = rope[t] if t in rope else rope["full_attention"]
            x = layer(x, cos, sin, masks[t], cache, i, unpad)
        return SimpleNamespace(last_hidden_state=self.norm(x), cache=cache)


class NativeCausalLM(nn.Module):
    """A causal LM with the slice of transformers' interface evalcore uses: `base_model(...)
    .last_hidden_state`, `get_output_embeddings()`, `config`, `generation_config`, and
    `model(input_ids, ...).logits` (with `cache=KVCache()` for generation)."""

    def __init__(self, body: Body, generation: dict[str, Any] | None = None):
        super().__init__()
        self.config = body.config
        self.generation_config = SimpleNamespace(**(generation or {}))
        self.model = body
        self.lm_head = Linear(body.config.hidden_size, body.config.vocab_size)

    @property
    def base_model(self) -> Body:
        """The decoder stack without the LM head (hidden states out)."""
        return self.model

    def get_input_embeddings(self) -> Embedding:
        """The token embedding layer."""
        return self.model.embed_tokens

    def get_output_embeddings(self) -> Linear:
        """The LM head (hidden state -> logits over the vocabulary)."""
        return self.lm_head

    def forward(self, input_ids: Tensor, attention_mask: Tensor | Mapping[str, Tensor] | None = None,
                position_ids: Tensor | None = None, cache: KVCache | None = None, use_cache: bool | None = None,
                logits_to_keep: int = 0, **_: Any) -> SimpleNamespace:
        """Next-token logits [B, T, vocab] (the last `logits_to_keep` positions when set) as
        `.logits`, soft-capped where the config asks, and the cache as `.cache`."""
        h = self.model(input_ids, attention_mask, position_ids, cache).last_hidden_state
        if logits_to_keep:
            h = h[:, -logits_to_keep:]
        return SimpleNamespace(logits=softcap_logits(self.lm_head(h), self.config), cache=cache)


@dataclass(frozen=True)
class Family:
    """What one architecture (config.json's `model_type`) brings: its config reading and its stack."""

    model_type: str
    rope_thetas: Callable[[Mapping[str, Any]], dict[str, float] | None]  # RoPE base per layer type; None: unsupported
    unsupported: Callable[[Mapping[str, Any]], str | None]  # why the family's forward cannot run a config
    configure: Callable[[SimpleNamespace, Mapping[str, Any]], None]  # the family's settings onto the config
    body: Callable[[SimpleNamespace], Body]  # the decoder stack for a config
