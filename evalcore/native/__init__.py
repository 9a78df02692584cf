"""Native decoder forward for the Llama and Gemma 3 text families, in plain torch.

Why: loading a model through transformers imports its modeling stack (the model class, its
mask, generation and loading utilities, which pull in torch.distributed.tensor and
torch._dynamo): seconds of imports before the first weight is read (bench/RESULTS.md,
Loading), most of evalcore's start-up. Both bundled models (SmolLM2, Gemma 3) and their ladders use one of
two small architectures, so evalcore runs them itself on the same safetensors weights.

Same arithmetic as transformers 5 (`modeling_llama`, `modeling_gemma3`), op for op:

    common   Linear, Embedding, RMSNorm, RoPE, attention (SDPA), gated MLP, KV cache,
             the decoder stack (`Body`) and the causal-LM interface (`NativeCausalLM`)
    llama    Llama's norm, layer wiring and config          } each a `Family`: config.json's
    gemma3   Gemma 3's norms, sliding window and soft cap   } model_type picks one here

A test compares hidden states and logits with transformers' forward at float32 and bfloat16,
with padding, packed 4-D masks, Gemma's sliding window and a KV cache. Callers see one model
class whatever the family: `load` returns a `NativeCausalLM`.

What it does not implement (RoPE scaling, biases, soft-capped attention, other
architectures, accelerate device maps) loads through transformers, as does everything when
`load_model(..., backend="transformers")` is asked for.

The modules mirror transformers' parameter names (`model.layers.N.self_attn.q_proj.weight`,
...), so a checkpoint loads with a strict `load_state_dict` and nothing is renamed.
"""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

from evalcore.native import gemma3, llama
from evalcore.native.common import Family, KVCache, NativeCausalLM, softcap_logits
from evalcore.native.gemma3 import rms_norm_gemma
from evalcore.native.llama import rms_norm_llama

FAMILIES: dict[str, Family] = {f.model_type: f for f in (llama.FAMILY, gemma3.FAMILY)}
ARCHITECTURES = tuple(FAMILIES)


def read_config(folder: str | Path) -> SimpleNamespace | None:
    """The folder's config.json, normalised, when this package implements it; else None."""
    try:
        raw = json.loads((Path(folder) / "config.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(raw, dict) or raw.get("model_type") not in FAMILIES:
        return None
    from evalcore.checkpoint import check_native_config

    check_native_config(folder, raw)
    raw.setdefault("num_key_value_heads", raw["num_attention_heads"])  # transformers' default
    cfg = SimpleNamespace(**raw)
    if unsupported(cfg):
        return None
    family = FAMILIES[raw["model_type"]]
    cfg.head_dim = raw.get("head_dim") or raw["hidden_size"] // raw["num_attention_heads"]
    cfg.rope_theta_by_type = family.rope_thetas(raw)
    family.configure(cfg, raw)
    return cfg


def unsupported(cfg: SimpleNamespace) -> str | None:
    """Why this package cannot run a config, in a word or two ("biases", "rope scaling", ...);
    None when it can."""
    c = vars(cfg)
    if c.get("attention_bias") or c.get("mlp_bias"):
        return "biases"
    if c.get("pretraining_tp", 1) not in (None, 1):
        return "pretraining_tp"
    if c.get("rope_scaling"):
        return "rope scaling"
    family = FAMILIES.get(c.get("model_type", ""))
    if family is None:
        return "architecture"
    if family.rope_thetas(c) is None:
        return "rope parameters"
    return family.unsupported(c)


def _generation_config(folder: Path, cfg: SimpleNamespace) -> dict[str, Any]:
    """generation_config.json as a dict ({} when missing or unreadable), with the config's
    eos_token_id as the default."""
    try:
        gen = json.loads((folder / "generation_config.json").read_text())
    except (OSError, ValueError):
        gen = {}
    if not isinstance(gen, dict):
        gen = {}
    gen.setdefault("eos_token_id", getattr(cfg, "eos_token_id", None))
    return gen


def _state_dict(folder: Path, files: list[Path], model: NativeCausalLM, cfg: SimpleNamespace,
                dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """The weights of `files` in `dtype`, checked against the model's parameters (names and
    shapes), the head tied to the embeddings when the checkpoint has none."""
    from safetensors.torch import load_file

    from evalcore.checkpoint import check_weight_keys
    from evalcore.errors import ModelUnavailableError

    sd: dict[str, torch.Tensor] = {}
    for f in files:
        sd.update(load_file(str(f)) if _stored_as(f) <= {dtype} else _converted(f, dtype))
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
    return sd


_SAFETENSORS_DTYPES = {"F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16}
CONVERT_CHUNK_BYTES = 64 << 20  # stored bytes read per step when a tensor changes dtype


def _stored_as(file: Path) -> set[torch.dtype | None]:
    """The dtypes of a safetensors file's tensors (None for one this module does not name)."""
    from safetensors import safe_open

    with safe_open(str(file), framework="pt") as h:
        return {_SAFETENSORS_DTYPES.get(h.get_slice(k).get_dtype()) for k in h.keys()}


def _converted(file: Path, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Every tensor of `file` in `dtype`, converted a chunk of rows at a time.

    A file already in `dtype` is memory-mapped as it is (`load_file`): nothing is copied, and
    pages are read as they are used. Converting from a mapping of the whole file would keep
    every page it read resident until the end: the stored file plus its converted copy at the
    peak (1.8 GB for Gemma 3 270M float32 -> bfloat16, which ends at 0.5 GB). Here each chunk
    of at most CONVERT_CHUNK_BYTES is read through a mapping of its own, closed before the
    next, so the peak is the converted weights plus one chunk:

        stored  [rows 0..r) [r..2r) [2r..3r) ...     one mapping each, closed after its copy
        dst     [..........................]         torch.empty(shape, dtype), filled in place
    """
    from safetensors import safe_open

    with safe_open(str(file), framework="pt") as h:
        shapes = {k: list(h.get_slice(k).get_shape()) for k in h.keys()}
    out: dict[str, torch.Tensor] = {}
    for k, shape in shapes.items():
        dst = torch.empty(shape, dtype=dtype)
        row_bytes = 4 * max(1, dst[0].numel() if shape else 1)  # at most 4 bytes an element stored
        step = max(1, CONVERT_CHUNK_BYTES // row_bytes)
        for r in range(0, shape[0] if shape else 1, step):
            with safe_open(str(file), framework="pt") as h:
                if shape:
                    dst[r : r + step] = h.get_slice(k)[r : r + step]
                else:
                    dst.copy_(h.get_tensor(k))
        out[k] = dst
    return out


def load(folder: str | Path, dtype: str, device: str) -> NativeCausalLM | None:
    """The model in `folder` (safetensors, one file or shards) on `device` in `dtype`, or None
    when its config or weights are not what this package implements (then use transformers).
    An unreadable weights file raises safetensors' error (`evalcore.models.loading` words it)."""
    cfg = read_config(folder)
    files = sorted(Path(folder).glob("*.safetensors"))
    if cfg is None or not files:
        return None
    # parameters on the meta device: names and shapes; the tensors are assigned below
    model = NativeCausalLM(FAMILIES[cfg.model_type].body(cfg), _generation_config(Path(folder), cfg))
    sd = _state_dict(Path(folder), files, model, cfg, getattr(torch, dtype))
    tied = sd["lm_head.weight"] is sd["model.embed_tokens.weight"]
    model.load_state_dict(sd, assign=True, strict=True)
    if tied:  # one tensor, so `to(dtype)` below does not make two copies of a 262k-row matrix
        model.lm_head.weight = model.model.embed_tokens.weight
    return model.to(device=device, dtype=getattr(torch, dtype)).eval()


__all__ = ["ARCHITECTURES", "FAMILIES", "KVCache", "NativeCausalLM", "SimpleNamespace", "load", "read_config",
           "rms_norm_gemma", "rms_norm_llama", "softcap_logits", "unsupported"]
