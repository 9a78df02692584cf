"""The Gemma 3 text family (Gemma 3 270M and up), as transformers 5's `modeling_gemma3` computes it:

    x = embed(ids) * sqrt(hidden)       (the scale cast to the weights' dtype)
    per layer: q, k get their own RMSNorm before RoPE; the attention and MLP outputs are
               normed again before each residual add; GELU-tanh
    out = norm(x)          n(x) = (rms(x.float()) * (1 + w)).to(dtype)
    logits = cap * tanh(head(out) / cap)   where config.json sets final_logit_softcapping

Sliding-window layers use their own mask and RoPE base; by default every sixth layer attends
to the whole prefix:

    layer:  0  1  2  3  4  5  6 ...      S = sliding_attention (the last `sliding_window`
    type:   S  S  S  S  S  F  S ...      positions, local RoPE base), F = full_attention
"""
from __future__ import annotations

from collections.abc import Mapping
from types import SimpleNamespace
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from evalcore.native.common import MLP, Attention, Body, DecoderLayer, Family, KVCache, RMSNorm, Unpad

MODEL_TYPE = "gemma3_text"
LAYER_TYPES = ("full_attention", "sliding_attention")


def rms_norm_gemma(x: Tensor, weight: Tensor, eps: float) -> Tensor:
    """transformers' Gemma3RMSNorm: (normed(x.float()) * (1 + weight.float())).to(dtype)."""
    return F.rms_norm(x.float(), x.shape[-1:], None, eps).mul_(1.0 + weight.float()).type_as(x)


def rope_thetas(c: Mapping[str, Any]) -> dict[str, float] | None:
    """The RoPE base of full and sliding layers, from transformers 5's `rope_parameters` or the
    older `rope_theta` / `rope_local_base_freq`; None for any RoPE type other than the default."""
    rp = c.get("rope_parameters")
    if rp is None:
        return {"full_attention": float(c.get("rope_theta", 1e6)),
                "sliding_attention": float(c.get("rope_local_base_freq", 1e4))}
    out = {}
    for t in LAYER_TYPES:
        p = rp.get(t) or {}
        if p.get("rope_type", "default") != "default" or "rope_theta" not in p:
            return None
        out[t] = float(p["rope_theta"])
    return out


def unsupported(c: Mapping[str, Any]) -> str | None:
    """Why this module cannot run a Gemma 3 config (None when it can)."""
    if c.get("hidden_activation", "gelu_pytorch_tanh") != "gelu_pytorch_tanh":
        return "activation"
    if c.get("attn_logit_softcapping") or c.get("use_bidirectional_attention"):
        return "attention variant"
    return None


def configure(cfg: SimpleNamespace, raw: Mapping[str, Any]) -> None:
    """Gemma 3's settings onto the config: each layer's type, the final logits' soft cap."""
    cfg.layer_types = raw.get("layer_types") or [
        "full_attention" if (i + 1) % raw.get("sliding_window_pattern", 6) == 0 else "sliding_attention"
        for i in range(raw["num_hidden_layers"])]
    cfg.final_logit_softcapping = raw.get("final_logit_softcapping")


def _gelu_tanh(g: Tensor) -> Tensor:
    """GELU with the tanh approximation (`gelu_pytorch_tanh`)."""
    return F.gelu(g, approximate="tanh")


class Gemma3Layer(DecoderLayer):
    """Sandwich-norm layer: the attention and MLP outputs normed again before each residual add."""

    def __init__(self, cfg: SimpleNamespace):
        d, eps = cfg.hidden_size, cfg.rms_norm_eps
        super().__init__(cfg, Attention(cfg, cfg.query_pre_attn_scalar ** -0.5, rms_norm_gemma),
                         MLP(d, cfg.intermediate_size, _gelu_tanh), rms_norm_gemma)
        self.pre_feedforward_layernorm = RMSNorm(d, eps, rms_norm_gemma)
        self.post_feedforward_layernorm = RMSNorm(d, eps, rms_norm_gemma)

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, mask: Tensor | None, cache: KVCache | None, layer: int,
                unpad: Unpad | None = None) -> Tensor:
        """The layer's output hidden states, the same shape as x."""
        a = self.self_attn(self.input_layernorm(x), cos, sin, mask, cache, layer, unpad)
        x = x + self.post_attention_layernorm(a)
        return x + self.post_feedforward_layernorm(self.mlp(self.pre_feedforward_layernorm(x)))


class Gemma3Body(Body):
    """transformers' `Gemma3TextModel`: scaled embeddings, the layers and the final norm."""

    def __init__(self, cfg: SimpleNamespace):
        super().__init__(cfg, rms_norm_gemma)

    def layer(self, cfg: SimpleNamespace) -> Gemma3Layer:
        """A new (empty) Gemma 3 layer."""
        return Gemma3Layer(cfg)

    def embed(self, input_ids: Tensor) -> Tensor:
        """The input embeddings times sqrt(hidden size), the scale cast to their dtype first."""
        x = self.embed_tokens(input_ids)
        return x * torch.tensor(self.config.hidden_size ** 0.5).to(x.dtype)


FAMILY = Family(MODEL_TYPE, rope_thetas, unsupported, configure, Gemma3Body)
