"""Native decoder forward for the Llama and Gemma 3 text families, in plain torch.

Why: loading a model through transformers imports its modeling stack (the model class, its
mask, generation and loading utilities, which pull in torch.distributed.tensor and
torch._dynamo): seconds of imports before the first weight is read (bench/RESULTS.md,
Loading), most of evalcore's start-up. Both bundled models (SmolLM2, Gemma 3) and their ladders use one of
two small architectures, so evalcore runs them itself on the same safetensors weights.

Same arithmetic as transformers 5 (`modeling_llama`, `modeling_gemma3`), op for op:

    Llama  x = embed(ids)
           per layer: h = x + o(attn(rope(q(n1(x))), rope(k(n1(x))), v(n1(x))))
                      x = h + down(silu(gate(n2(h))) * up(n2(h)))
           out = norm(x)          n(x) = w * rms(x.float()).to(dtype)
    Gemma3 x = embed(ids) * sqrt(hidden) (the scale cast to the weights' dtype)
           per layer: q, k get their own RMSNorm before RoPE; the attention and MLP outputs are
           normed again before each residual add; GELU-tanh; n(x) = (rms(x.float()) * (1 + w))
           .to(dtype); sliding-window layers use their own mask and RoPE base.

RoPE cos/sin are computed once per forward in float32 from the position ids and cast to the
activations' dtype (rotate_half's minus sign folded into sin: the same products), attention
is torch's SDPA with the same masks (a bool mask, or none and `is_causal` when nothing is
padded), grouped key/value heads read directly (`enable_gqa`). Outside autograd, residual
adds, RoPE and SiLU * up write into fresh intermediates instead of allocating new ones.
A test compares hidden states and logits with transformers' forward at float32 and bfloat16,
with padding, packed 4-D masks, Gemma's sliding window and a KV cache.

Unpadded batches (`keep=`, for the HellaSwag scorer's packed rows): embeddings, norms,
projections, RoPE and MLPs run on the real tokens only, as one [1, N] sequence; each layer
scatters q, k and v into the padded [B, T] layout for attention (zeros at padding, which the
mask hides) and gathers the real rows back. The per-token arithmetic is the same; matmuls of
another height round differently at float32 (~1e-5 in a log-likelihood).

What it does not implement (RoPE scaling, biases, soft-capped attention, other
architectures, accelerate device maps) loads through transformers, as does everything when
`load_model(..., backend="transformers")` is asked for.

The module mirrors transformers' parameter names (`model.layers.N.self_attn.q_proj.weight`,
...), so a checkpoint loads with a strict `load_state_dict` and nothing is renamed.
"""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

ARCHITECTURES = ("llama", "gemma3_text")


# ----------------------------------------------------------------------------- config

def read_config(folder: str | Path) -> SimpleNamespace | None:
    """The folder's config.json, normalised, when this module implements it; else None."""
    try:
        raw = json.loads((Path(folder) / "config.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(raw, dict) or raw.get("model_type") not in ARCHITECTURES:
        return None
    from evalcore.checkpoint import check_native_config

    check_native_config(folder, raw)
    raw.setdefault("num_key_value_heads", raw["num_attention_heads"])  # transformers' default
    cfg = SimpleNamespace(**raw)
    if unsupported(cfg):
        return None
    cfg.head_dim = raw.get("head_dim") or raw["hidden_size"] // raw["num_attention_heads"]
    cfg.rope_theta_by_type = _rope_thetas(raw)
    if raw["model_type"] == "gemma3_text":
        cfg.layer_types = raw.get("layer_types") or [
            "full_attention" if (i + 1) % raw.get("sliding_window_pattern", 6) == 0 else "sliding_attention"
            for i in range(raw["num_hidden_layers"])]
        cfg.final_logit_softcapping = raw.get("final_logit_softcapping")
    else:
        cfg.layer_types = ["full_attention"] * raw["num_hidden_layers"]
        cfg.sliding_window = None
    return cfg


def unsupported(cfg: SimpleNamespace) -> str | None:
    """Why this module cannot run a config (None when it can)."""
    c = vars(cfg)
    if c.get("attention_bias") or c.get("mlp_bias"):
        return "biases"
    if c.get("pretraining_tp", 1) not in (None, 1):
        return "pretraining_tp"
    if c.get("rope_scaling"):
        return "rope scaling"
    if _rope_thetas(c) is None:
        return "rope parameters"
    if c["model_type"] == "llama" and c.get("hidden_act", "silu") != "silu":
        return "activation"
    if c["model_type"] == "gemma3_text":
        if c.get("hidden_activation", "gelu_pytorch_tanh") != "gelu_pytorch_tanh":
            return "activation"
        if c.get("attn_logit_softcapping") or c.get("use_bidirectional_attention"):
            return "attention variant"
    return None


def _rope_thetas(c: dict[str, Any]) -> dict[str, float] | None:
    """RoPE base per layer type, from the transformers 5 `rope_parameters` or the older keys;
    None for any RoPE type other than the default."""
    rp = c.get("rope_parameters")
    if c["model_type"] == "gemma3_text":
        if rp is None:
            return {"full_attention": float(c.get("rope_theta", 1e6)),
                    "sliding_attention": float(c.get("rope_local_base_freq", 1e4))}
        out = {}
        for t in ("full_attention", "sliding_attention"):
            p = rp.get(t) or {}
            if p.get("rope_type", "default") != "default" or "rope_theta" not in p:
                return None
            out[t] = float(p["rope_theta"])
        return out
    if rp is None:
        return {"full_attention": float(c.get("rope_theta", 10000.0))}
    if rp.get("rope_type", "default") != "default" or "rope_theta" not in rp:
        return None
    return {"full_attention": float(rp["rope_theta"])}


# ----------------------------------------------------------------------------- pieces

def _imul(a, b):
    """a * b, into `a` unless autograd is recording (it may need `a` as it was)."""
    return a * b if torch.is_grad_enabled() else a.mul_(b)


def _iadd(a, b):
    """a + b, into `a` unless autograd is recording."""
    return a + b if torch.is_grad_enabled() else a.add_(b)


def rms_norm_llama(x, weight, eps: float):
    """transformers' LlamaRMSNorm: weight * normed(x.float()).to(dtype), its ops one for one
    (torch's `F.rms_norm` runs the same ops on CPU with one more intermediate tensor; this is
    ~5% faster a norm at bf16)."""
    xf = x.to(torch.float32, copy=True)  # a copy even at float32: normalised in place below
    return weight * _imul(xf, torch.rsqrt(xf.pow(2).mean(-1, keepdim=True).add_(eps))).to(x.dtype)


def rms_norm_gemma(x, weight, eps: float):
    """transformers' Gemma3RMSNorm: (normed(x.float()) * (1 + weight.float())).to(dtype)."""
    return F.rms_norm(x.float(), x.shape[-1:], None, eps).mul_(1.0 + weight.float()).type_as(x)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float, gemma: bool):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(dim, device="meta"))
        self.eps, self.gemma = eps, gemma

    def forward(self, x):
        return (rms_norm_gemma if self.gemma else rms_norm_llama)(x, self.weight, self.eps)


class Linear(nn.Module):
    """y = x W^T (no bias), like nn.Linear, created empty on the meta device: no initialisation
    (nn.Embedding's init on meta imports torch._dynamo, ~2 s) before the weights are assigned."""

    bias = None

    def __init__(self, i: int, o: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty((o, i), device="meta"))

    def forward(self, x):
        return F.linear(x, self.weight)


class Embedding(nn.Module):
    def __init__(self, n: int, d: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty((n, d), device="meta"))

    def forward(self, ids):
        return F.embedding(ids, self.weight)


def _rope(x, cos, sin):
    """x * cos + rotate_half(x) * sin, where rotate_half(x) = cat(-x2, x1): the minus sign is
    folded into `sin` (its first half negated, once per forward), the same products and sum."""
    h = x.shape[-1] // 2
    return _iadd(x * cos, _imul(torch.cat((x[..., h:], x[..., :h]), dim=-1), sin))


class Attention(nn.Module):
    def __init__(self, cfg: SimpleNamespace, gemma: bool):
        super().__init__()
        H, KV, D = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
        self.H, self.KV, self.D = H, KV, D
        self.q_proj, self.k_proj = Linear(cfg.hidden_size, H * D), Linear(cfg.hidden_size, KV * D)
        self.v_proj, self.o_proj = Linear(cfg.hidden_size, KV * D), Linear(H * D, cfg.hidden_size)
        if gemma:
            self.q_norm, self.k_norm = RMSNorm(D, cfg.rms_norm_eps, True), RMSNorm(D, cfg.rms_norm_eps, True)
            self.scaling = cfg.query_pre_attn_scalar ** -0.5
        else:
            self.q_norm = self.k_norm = None
            self.scaling = D ** -0.5

    def forward(self, x, cos, sin, mask, cache: KVCache | None, layer: int, unpad=None):
        if unpad is not None:
            return self._unpadded(x, cos, sin, mask, *unpad)
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.H, self.D).transpose(1, 2)
        k = self.k_proj(x).view(B, T, self.KV, self.D).transpose(1, 2)
        v = self.v_proj(x).view(B, T, self.KV, self.D).transpose(1, 2)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        q, k = _rope(q, cos, sin), _rope(k, cos, sin)
        if cache is not None:
            k, v = cache.update(layer, k, v)
        o = self._sdpa(q, k, v, mask, x.device, T)
        return self.o_proj(o.transpose(1, 2).reshape(B, T, -1))

    def _sdpa(self, q, k, v, mask, device, T: int):
        is_causal = mask is None and T > 1
        if mask is None or device.type == "cpu":  # CUDA's masked GQA kernel is slow: repeat heads there
            kw: dict[str, Any] = {"enable_gqa": self.H != self.KV}
        else:
            k, v, kw = k.repeat_interleave(self.H // self.KV, 1), v.repeat_interleave(self.H // self.KV, 1), {}
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=0.0, scale=self.scaling,
                                              is_causal=is_causal, **kw)

    def _unpadded(self, x, cos, sin, mask, keep, B: int, T: int):
        """x: [1, N, hidden], the N kept tokens of a [B, T] batch (flat indices `keep`). Projections
        and RoPE run on those tokens only; attention on the [B, T] layout, zeros at padding."""
        N = x.shape[1]
        q = self.q_proj(x).view(N, self.H, self.D)
        k = self.k_proj(x).view(N, self.KV, self.D)
        v = self.v_proj(x).view(N, self.KV, self.D)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        q, k = _rope(q, cos, sin), _rope(k, cos, sin)

        def padded(t):
            out = t.new_zeros((B * T, *t.shape[1:]))
            out[keep] = t
            return out.view(B, T, *t.shape[1:]).transpose(1, 2)

        o = self._sdpa(padded(q), padded(k), padded(v), mask, x.device, T)
        return self.o_proj(o.transpose(1, 2).reshape(B * T, -1)[keep][None])


class Layer(nn.Module):
    def __init__(self, cfg: SimpleNamespace, gemma: bool):
        super().__init__()
        d, eps = cfg.hidden_size, cfg.rms_norm_eps
        self.gemma = gemma
        self.self_attn = Attention(cfg, gemma)
        self.mlp = nn.Module()
        self.mlp.gate_proj, self.mlp.up_proj = Linear(d, cfg.intermediate_size), Linear(d, cfg.intermediate_size)
        self.mlp.down_proj = Linear(cfg.intermediate_size, d)
        self.input_layernorm, self.post_attention_layernorm = RMSNorm(d, eps, gemma), RMSNorm(d, eps, gemma)
        if gemma:
            self.pre_feedforward_layernorm, self.post_feedforward_layernorm = RMSNorm(d, eps, True), RMSNorm(d, eps, True)

    def forward(self, x, cos, sin, mask, cache, layer: int, unpad=None):
        a = self.self_attn(self.input_layernorm(x), cos, sin, mask, cache, layer, unpad)
        m = self.mlp
        if self.gemma:
            x = x + self.post_attention_layernorm(a)
            h = self.pre_feedforward_layernorm(x)
            return x + self.post_feedforward_layernorm(m.down_proj(F.gelu(m.gate_proj(h), approximate="tanh") * m.up_proj(h)))
        x = _iadd(a, x)  # x + a, into the fresh output (fewer allocations; the same sums)
        h = self.post_attention_layernorm(x)
        g = m.gate_proj(h)
        g = F.silu(g) if torch.is_grad_enabled() else F.silu(g, inplace=True)
        return _iadd(m.down_proj(_imul(g, m.up_proj(h))), x)


class KVCache:
    """Keys and values of every layer so far (for generation), plus how many positions they hold."""

    def __init__(self) -> None:
        self.kv: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def update(self, layer: int, k, v):
        if layer in self.kv:
            k = torch.cat([self.kv[layer][0], k], dim=2)
            v = torch.cat([self.kv[layer][1], v], dim=2)
        self.kv[layer] = (k, v)
        return k, v

    def get_seq_length(self) -> int:
        return self.kv[0][0].shape[2] if self.kv else 0


class Body(nn.Module):
    """The decoder stack (transformers' `LlamaModel` / `Gemma3TextModel`); `model.base_model`."""

    def __init__(self, cfg: SimpleNamespace):
        super().__init__()
        self.config = cfg
        self.gemma = cfg.model_type == "gemma3_text"
        self.embed_tokens = Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(Layer(cfg, self.gemma) for _ in range(cfg.num_hidden_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, self.gemma)

    def forward(self, input_ids, attention_mask=None, position_ids=None, cache: KVCache | None = None,
                use_cache: bool | None = None, keep=None, **_: Any) -> SimpleNamespace:
        """Last hidden state (final norm applied) for input ids [B, T].

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
        x = self.embed_tokens(input_ids)
        if self.gemma:
            x = x * torch.tensor(self.config.hidden_size ** 0.5).to(x.dtype)
        masks = self._masks(attention_mask, B, T, past, x.device)
        rope = {}
        D = self.config.head_dim
        for t, theta in self.config.rope_theta_by_type.items():  # in float32, as transformers computes it
            inv_freq = 1.0 / (theta ** (torch.arange(0, D, 2, dtype=torch.float, device=x.device) / D))
            freqs = position_ids[..., None].float() * inv_freq
            emb = torch.cat((freqs, freqs), dim=-1)
            emb = emb[0][:, None] if unpad else emb[:, None]  # [N, 1, D] (heads after tokens) or [B, 1, T, D]
            sin = emb.sin().to(x.dtype)
            rope[t] = (emb.cos().to(x.dtype), torch.cat((-sin[..., : D // 2], sin[..., D // 2 :]), -1))
        for i, layer in enumerate(self.layers):
            t = self.config.layer_types[i]
            cos, sin = rope[t] if t in rope else rope["full_attention"]
            x = layer(x, cos, sin, masks[t], cache, i, unpad)
        return SimpleNamespace(last_hidden_state=self.norm(x), cache=cache)

    def _masks(self, am, B: int, T: int, past: int, device) -> dict[str, Any]:
        """Per layer type: None (SDPA's causal path) or a bool mask [B, 1, T, past + T], as
        transformers' create_causal_mask / create_sliding_window_causal_mask build them."""
        types = set(self.config.layer_types)
        if isinstance(am, dict):
            return {t: am[t].to(device) for t in types}
        if am is not None and am.dim() == 4:
            return {t: am.to(device) for t in types}
        window = self.config.sliding_window
        kv = past + T
        pad = None if am is None or bool(am.all()) else am.to(device).bool()
        out: dict[str, Any] = {}
        for t in types:
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


class NativeCausalLM(nn.Module):
    """A causal LM with the slice of transformers' interface evalcore uses: `base_model(...)
    .last_hidden_state`, `get_output_embeddings()`, `config`, `generation_config`, and
    `model(input_ids, ...).logits` (with `cache=KVCache()` for generation)."""

    def __init__(self, cfg: SimpleNamespace, generation: dict[str, Any] | None = None):
        super().__init__()
        self.config = cfg
        self.generation_config = SimpleNamespace(**(generation or {}))
        self.model = Body(cfg)
        self.lm_head = Linear(cfg.hidden_size, cfg.vocab_size)

    @property
    def base_model(self) -> Body:
        return self.model

    def get_input_embeddings(self) -> Embedding:
        return self.model.embed_tokens

    def get_output_embeddings(self) -> Linear:
        return self.lm_head

    def forward(self, input_ids, attention_mask=None, position_ids=None, cache: KVCache | None = None,
                use_cache: bool | None = None, logits_to_keep: int = 0, **_: Any) -> SimpleNamespace:
        h = self.model(input_ids, attention_mask, position_ids, cache).last_hidden_state
        if logits_to_keep:
            h = h[:, -logits_to_keep:]
        logits = self.lm_head(h)
        cap = getattr(self.config, "final_logit_softcapping", None)
        if cap:
            logits = torch.tanh(logits / cap) * cap
        return SimpleNamespace(logits=logits, cache=cache)


def load(folder: str | Path, dtype: str, device: str) -> NativeCausalLM | None:
    """The model in `folder` (safetensors, one file or shards) on `device` in `dtype`, or None
    when its config or weights are not what this module implements (then use transformers).
    An unreadable weights file raises safetensors' error (`evalcore.models.loading` words it)."""
    from safetensors.torch import load_file

    from evalcore.checkpoint import check_weight_keys
    from evalcore.errors import ModelUnavailableError

    cfg = read_config(folder)
    files = sorted(Path(folder).glob("*.safetensors"))
    if cfg is None or not files:
        return None
    sd: dict[str, torch.Tensor] = {}
    for f in files:
        sd.update(load_file(str(f)))
    try:
        gen = json.loads((Path(folder) / "generation_config.json").read_text())
    except (OSError, ValueError):
        gen = {}
    if not isinstance(gen, dict):
        gen = {}
    gen.setdefault("eos_token_id", getattr(cfg, "eos_token_id", None))
    model = NativeCausalLM(cfg, gen)  # parameters on the meta device: names and shapes; the tensors are assigned below
    expected = model.state_dict()
    tied = ["lm_head.weight"] if getattr(cfg, "tie_word_embeddings", True) else []
    check_weight_keys(folder, expected, sd, tied=tied)  # a missing weight must never be a random one
    sd = {k: v for k, v in sd.items() if k in expected}  # ignorable extras (RoPE buffers) are not loaded
    bad = [k for k, v in sd.items() if tuple(v.shape) != tuple(expected[k].shape)]
    if bad:
        raise ModelUnavailableError(f"model folder {str(folder)!r}: {len(bad)} weight(s) have the wrong shape for "
                                    f"config.json ({', '.join(bad[:3])}); give the config that belongs to the weights")
    if "lm_head.weight" not in sd:
        sd["lm_head.weight"] = sd["model.embed_tokens.weight"]
    tied = sd["lm_head.weight"] is sd["model.embed_tokens.weight"]
    model.load_state_dict(sd, assign=True, strict=True)
    if tied:  # one tensor, so `to(dtype)` below does not make two copies of a 262k-row matrix
        model.lm_head.weight = model.model.embed_tokens.weight
    return model.to(device=device, dtype=getattr(torch, dtype)).eval()


__all__ = ["ARCHITECTURES", "KVCache", "NativeCausalLM", "load", "read_config", "rms_norm_gemma", "rms_norm_llama",
           "unsupported"]
