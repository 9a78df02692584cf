"""evalcore.native (own Llama / Gemma 3 forward) against transformers' forward on the same weights.

The bundled models load natively by default; these tests load the transformers copy too and
require the same numbers (bit-identical here, asserted with a float tolerance so a different
CPU's kernels cannot fail them) on every path the scorers use: plain causal, right and left
padding, packed 4-D masks, Gemma's sliding window beyond 512 tokens, bfloat16, generation
with the KV cache.
"""
from __future__ import annotations

import json

import pytest
import torch

from evalcore import native, scoring
from evalcore.errors import ModelUnavailableError
from evalcore.models import converted_dir, load_model
from evalcore.scoring.generate import Decoding, generate


@pytest.fixture(scope="module", params=["smollm2-135m", "gemma3-270m"])
def pair(request):
    name = request.param
    return load_model(name, device="cpu", dtype="float32"), load_model(name, device="cpu", dtype="float32",
                                                                     backend="transformers")


def _close(a, b, tol=1e-5):
    assert a.shape == b.shape
    d = (a.float() - b.float()).abs().max().item()
    assert d <= tol * max(1.0, b.float().abs().max().item()), d


def test_bundled_models_load_natively(smol, gemma):
    assert smol.backend == "native" and gemma.backend == "native"
    assert isinstance(smol.model, native.NativeCausalLM)
    assert smol.describe()["backend"] == "native"
    # tied head: one tensor, not a copy of the 262k x 640 embedding
    assert gemma.model.lm_head.weight.data_ptr() == gemma.model.model.embed_tokens.weight.data_ptr()


def test_hidden_states_and_logits_equal_transformers(pair):
    nat, hf = pair
    assert nat.backend == "native" and hf.backend == "transformers"
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 2000, (3, 48), generator=g)
    right = torch.ones(3, 48, dtype=torch.long)
    right[1, 30:] = 0
    right[2, 9:] = 0
    left = right.flip(1)
    with torch.inference_mode():
        _close(nat.model(input_ids=ids).logits, hf.model(input_ids=ids).logits)
        long = torch.randint(5, 2000, (1, 600), generator=g)  # past Gemma's 512-token window, no padding
        _close(nat.model.base_model(input_ids=long).last_hidden_state, hf.model.base_model(input_ids=long).last_hidden_state)
        for am in (right, left):
            a = nat.model.base_model(input_ids=ids, attention_mask=am).last_hidden_state
            b = hf.model.base_model(input_ids=ids, attention_mask=am).last_hidden_state
            _close(a[am.bool()], b[am.bool()])


def test_packed_rows_and_sliding_window_equal_transformers(pair, hellaswag):
    """The HellaSwag scorer's packed rows (4-D masks, restarted positions), with a context longer
    than Gemma's 512-token window in the batch."""
    nat, hf = pair
    long_ctx = " ".join(it.query for it in hellaswag.items(list(range(40, 70))))
    groups = [scoring.encode_pair(nat.tokenizer, long_ctx, [" He smiles.", " The dog runs away."])]
    groups += [scoring.encode_pair(nat.tokenizer, it.query, it.continuations) for it in hellaswag.items(list(range(6)))]
    for a, b in zip(scoring.score_groups(nat, groups), scoring.score_groups(hf, groups)):
        for x, y in zip(a, b):
            assert abs(x - y).max() < 1e-5


def test_bfloat16_equals_transformers():
    for name in ("smollm2-135m", "gemma3-270m"):
        nat = load_model(name, device="cpu", dtype="bfloat16")
        hf = load_model(name, device="cpu", dtype="bfloat16", backend="transformers")
        assert nat.model.lm_head.weight.dtype == torch.bfloat16
        ids = torch.randint(5, 2000, (2, 40), generator=torch.Generator().manual_seed(1))
        with torch.inference_mode():
            _close(nat.model(input_ids=ids).logits, hf.model(input_ids=ids).logits, tol=1e-3)


def test_generation_with_kv_cache_equals_transformers(pair):
    nat, hf = pair
    prompts = ["The capital of France is", "Once upon a time, in a land far away, there lived a", "Hi"]
    for d in (Decoding(temperature=0.0), Decoding(temperature=1.0, top_p=0.9, seed=3)):
        a = generate(nat, prompts, ["a", "b", "c"], [10, 10, 10], d)
        assert a == generate(hf, prompts, ["a", "b", "c"], [10, 10, 10], d)
        assert all(a)


def test_unsupported_configs_fall_back_or_refuse(tmp_path, smol):
    src = converted_dir(smol.spec)
    cfg = json.loads((src / "config.json").read_text())
    cfg["rope_parameters"] = {"rope_type": "linear", "factor": 2.0, "rope_theta": 100000.0}
    assert native.unsupported(native.SimpleNamespace(**cfg)) == "rope parameters"
    cfg = {**cfg, "rope_parameters": {"rope_theta": 100000.0, "rope_type": "default"}, "mlp_bias": True}
    assert native.unsupported(native.SimpleNamespace(**cfg)) == "biases"
    folder = tmp_path / "m"
    folder.mkdir()
    for f in src.iterdir():
        if f.name != "config.json":
            (folder / f.name).symlink_to(f)
    (folder / "config.json").write_text(json.dumps(cfg))
    assert native.load(folder, "float32", "cpu") is None
    with pytest.raises(ModelUnavailableError, match="backend='transformers'"):
        load_model(str(folder), device="cpu", dtype="float32", backend="native")
