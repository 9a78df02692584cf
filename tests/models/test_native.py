"""evalcore.native (own Llama / Gemma 3 forward) against transformers' forward on the same weights.

The bundled models load natively by default; these tests load the transformers copy too and
require the same numbers (bit-identical here, asserted with a float tolerance so a different
CPU's kernels cannot fail them) on every path the scorers use: plain causal, right and left
padding, packed 4-D masks, Gemma's sliding window beyond 512 tokens, bfloat16, generation
with the KV cache.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

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
    than Gemma's 512-token window in the batch. The native forward runs them unpadded (matmuls
    over the real tokens only, so of another height): float32 rounding, not bit-identity."""
    nat, hf = pair
    long_ctx = " ".join(it.query for it in hellaswag.items(list(range(40, 70))))
    groups = [scoring.encode_pair(nat.tokenizer, long_ctx, [" He smiles.", " The dog runs away."])]
    groups += [scoring.encode_pair(nat.tokenizer, it.query, it.continuations) for it in hellaswag.items(list(range(3)))]
    for a, b in zip(scoring.score_groups(nat, groups), scoring.score_groups(hf, groups)):
        for x, y in zip(a, b):
            assert abs(x - y).max() < 5e-5


def test_unpadded_batch_equals_padded(smol, gemma):
    """`keep=`: the real tokens of a right-padded batch run as one sequence except in attention;
    their hidden states equal the padded forward's (Gemma: 560-token rows, both of its RoPE bases)."""
    g = torch.Generator().manual_seed(2)
    for lm, T in ((smol, 40), (gemma, 560)):
        lens = torch.tensor([T, T - 13, 7])
        ids = torch.randint(5, 2000, (3, T), generator=g)
        real = torch.arange(T)[None] < lens[:, None]
        keep = real.reshape(-1).nonzero()[:, 0]
        mask = (torch.arange(T)[:, None] >= torch.arange(T)[None]) & real[:, None, :]
        mask = (mask | torch.eye(T, dtype=torch.bool))[:, None]
        with torch.inference_mode():
            body = lm.model.base_model
            padded = body(input_ids=ids, attention_mask=mask).last_hidden_state
            unpadded = body(input_ids=ids, attention_mask=mask, keep=keep).last_hidden_state
        assert unpadded.shape == (1, int(lens.sum()), padded.shape[-1])
        _close(unpadded[0], padded.reshape(-1, padded.shape[-1])[keep])


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


def test_hub_snapshot_in_the_cache_loads_natively(tmp_path, smol, hellaswag):
    """A hub id whose snapshot is in the hub cache runs on the native forward (offline here),
    fingerprinted by its commit as transformers does, with the same log-likelihoods as the
    bundled folder it was copied from; `--backend transformers` still loads it through
    transformers, to the same numbers and the same store key."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--evalcore-test--smol"
    snap = repo / "snapshots" / commit
    snap.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    for f in converted_dir(smol.spec).iterdir():
        if f.name != "evalcore-meta.json":
            (snap / f.name).symlink_to(f)
    it = hellaswag.items([3])[0]
    code = (
        "import json, sys\n"
        "from evalcore import scoring\n"
        "from evalcore.models import load_model\n"
        "out = {}\n"
        "for backend in ('auto', 'transformers'):\n"
        "    lm = load_model('evalcore-test/smol', device='cpu', dtype='float32', backend=backend)\n"
        "    g = scoring.encode_pair(lm.tokenizer, sys.argv[1], json.loads(sys.argv[2]))\n"
        "    lp = [float(x.sum()) for x in scoring.score_groups(lm, [g])[0]]\n"
        "    out[backend] = {'backend': lm.backend, 'fp': lm.fingerprint, 'id': lm.identity(), 'lp': lp}\n"
        "print(json.dumps(out))\n"
    )
    # one fresh interpreter (HF_HUB_CACHE is read at import) loads the snapshot both ways: the
    # model memo is keyed by backend, so each is a load of its own
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1"}
    r = subprocess.run([sys.executable, "-c", code, it.query, json.dumps(list(it.continuations))],
                       env=env, capture_output=True, text=True, timeout=300, check=False)
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["auto"]["backend"] == "native" and out["transformers"]["backend"] == "transformers"
    assert out["auto"]["fp"] == out["transformers"]["fp"] == commit
    assert out["auto"]["id"] == out["transformers"]["id"]
    ref = [float(x.sum()) for x in scoring.score_groups(smol, [scoring.encode_pair(smol.tokenizer, it.query, it.continuations)])[0]]
    assert max(abs(a - b) for a, b in zip(out["auto"]["lp"], ref)) < 1e-4
    assert max(abs(a - b) for a, b in zip(out["transformers"]["lp"], ref)) < 1e-4


def test_gradients_flow_and_equal_transformers(pair):
    """Outside inference mode the native forward makes no in-place writes autograd needs:
    backward runs and gives transformers' gradients."""
    ids = torch.randint(5, 2000, (1, 16), generator=torch.Generator().manual_seed(0))
    grads = []
    for lm in pair:
        params = list(lm.model.parameters())
        try:
            for p in params:
                p.requires_grad_(True)
            lm.model(input_ids=ids).logits[0, -1, 5].backward()
            grads.append(lm.model.model.layers[0].mlp.up_proj.weight.grad.clone())
        finally:
            for p in params:
                p.requires_grad_(False)
                p.grad = None
    assert grads[0].abs().sum() > 0
    _close(grads[0], grads[1])


_CONVERT_PEAK = """
import json, sys, torch
from evalcore.native import _converted
def hwm():
    return next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmHWM"))
before = hwm()
out = _converted(sys.argv[1], torch.bfloat16)
print(json.dumps({"peak": hwm() - before, "ok": all(torch.equal(out[k], torch.load(sys.argv[2])[k]) for k in out)}))
"""


@pytest.mark.skipif(sys.platform != "linux", reason="/proc/self/status")
def test_a_dtype_change_reads_the_file_a_chunk_at_a_time(tmp_path):
    """float32 weights loaded as bfloat16 are exactly `.to(bfloat16)` of the stored tensors, and
    the load's peak memory is the converted weights plus a chunk, not the stored file besides
    (which a mapping of the whole file would keep resident: 256 + 128 MiB here)."""
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(0)
    stored = {"big": torch.randn(65536, 1024, generator=g), "vec": torch.randn(7, generator=g),
              "scalar": torch.tensor(3.5)}
    save_file(stored, str(tmp_path / "w.safetensors"))
    torch.save({k: v.to(torch.bfloat16) for k, v in stored.items()}, tmp_path / "ref.pt")
    out = subprocess.run([sys.executable, "-c", _CONVERT_PEAK, str(tmp_path / "w.safetensors"), str(tmp_path / "ref.pt")],
                         capture_output=True, text=True, check=True, timeout=120)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["ok"]
    assert got["peak"] < (128 + 2 * native.CONVERT_CHUNK_BYTES / 2**20 + 48) * 2**20, got["peak"] / 2**20
