"""The Llama family (SmolLM2 and its ladder), as transformers 5's `modeling_llama` computes it:

    x = embed(ids)
    per layer: h = x + o(attn(rope(q(n1(x))), rope(k(n1(x))), v(n1(x))))
               x = h + down(silu(gate(n2(h))) * up(n2(h)))
    out = norm(x)          n(x) = w * rms(x.float()).to(dtype)

Every layer attends to the whole causal prefix with one RoPE base.
"""
from __future__ import annotations

from collections.abc import Mapping
from types import SimpleNamespace
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from evalcore.native.common import MLP, Attention, Body, DecoderLayer, Family, KVCache, Unpad, iadd, imul

MODEL_TYPE = "llama"


def rms_norm_llama(x: Tensor, weight: Tensor, eps: float) -> Tensor:
    """transformers' LlamaRMSNorm: weight * normed(x.float()).to(dtype), its ops one for one
    (torch's `F.rms_norm` runs the same ops on CPU with one more intermediate tensor; this is
    ~5% faster a norm at bf16)."""
    xf = x.to(torch.float32, copy=True)  # a copy even at float32: normalised in place below
    return weight * imul(xf, torch.rsqrt(xf.pow(2).mean(-1, keepdim=True).add_(eps))).to(x.dtype)


def rope_thetas(c: Mapping[str, Any]) -> dict[str, float] | None:
    """The RoPE base of the (only) layer type, from transformers 5's `rope_parameters` or the
    older `rope_theta`; None for any RoPE type other than the default."""
    rp = c.get("rope_parameters")
    if rp is None:
        return {"full_attention": float(c.get("rope_theta", 10000.0))}
    if rp.get("rope_type", "default") != "default" or "rope_theta" not in rp:
        return None
    return {"full_attention": float(rp["rope_theta"])}


def unsupported(c: Mapping[str, Any]) -> str | None:
    """Why this module cannot run a Llama config (None when it can)."""
    return "activation" if c.get("hidden_act", "silu") != "silu" else None


def configure(cfg: SimpleNamespace, raw: Mapping[str, Any]) -> None:
    """Llama's settings onto the config: every layer full attention, no sliding window."""
    cfg.layer_types = ["full_attention"] * raw["num_hidden_layers"]
    cfg.sliding_window = None


def _silu(g: Tensor) -> Tensor:
    """SiLU, in place outside autograd."""
    return F.silu(g) if torch.is_grad_enabled() else F.silu(g, inplace=True)


class LlamaLayer(DecoderLayer):
    """Pre-norm layer: residual adds around attention and the SiLU MLP."""

    def __init__(self, cfg: SimpleNamespace):
        super().__init__(cfg, Attention(cfg, cfg.head_dim ** -0.5), MLP(cfg.hidden_size, cfg.intermediate_size, _silu),
                         rms_norm_llama)

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, mask: Tensor | None, cache: KVCache | None, layer: int,
                unpad: Unpad | None = None) -> Tensor:
        """The layer's output hidden states, the same shape as x."""
        a = self.self_attn(self.input_layernorm(x), cos, sin, mask, cache, layer, unpad)
        x = iadd(a, x)  # x + a, into the fresh output (fewer allocations; the same sums)
        return iadd(self.mlp(self.post_attention_layernorm(x)), x)


class LlamaBody(Body):
    """transformers' `LlamaModel`: the embeddings, the layers and the final norm."""

    def __init__(self, cfg: SimpleNamespace):
        super().__init__(cfg, rms_norm_llama)

    def layer(self, cfg: SimpleNamespace) -> LlamaLayer:
        """A new (empty) Llama layer."""
        return LlamaLayer(cfg)


FAMILY = Family(MODEL_TYPE, rope_thetas, unsupported, configure, LlamaBody)
