"""Foundation: registry, bundled assets, loading, the converted-weights cache, errors."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from evalcore import assets, models
from evalcore.errors import AssetError, ModelUnavailableError, UnknownModelError

ROOT = Path(__file__).resolve().parents[2]


def test_registry_has_bundles_and_ladders():
    reg = models.REGISTRY
    for name in ["smollm2-135m", "gemma3-270m", "smollm2-360m", "smollm2-1.7b", "gpt2", "gpt2-xl",
                 "pythia-70m", "pythia-1.4b"]:
        assert name in reg
    assert reg["smollm2-135m"].bundle == "smollm2" and reg["gemma3-270m"].gated
    # token-level KL needs shared tokenizers: the online pair shares one, the offline pair does not
    a, b = models.ONLINE_PAIR
    assert reg[a].tokenizer_family == reg[b].tokenizer_family
    a, b = models.OFFLINE_PAIR
    assert reg[a].tokenizer_family != reg[b].tokenizer_family
    assert [reg[n].params_m for n in ["pythia-70m", "pythia-160m", "pythia-410m", "pythia-1b", "pythia-1.4b"]] == sorted(
        reg[n].params_m for n in ["pythia-70m", "pythia-160m", "pythia-410m", "pythia-1b", "pythia-1.4b"])


def test_bundled_models_available_offline():
    for name in models.OFFLINE_PAIR:
        a = models.availability(models.REGISTRY[name])
        assert a.ok and a.source in {"converted cache", "bundle"}, a
    a = models.availability(models.REGISTRY["gpt2-xl"])
    assert not a.ok and "offline" in a.detail


def _greedy(lm, prompt, n=8):
    from evalcore.scoring.generate import Decoding, generate

    return generate(lm, [prompt], ["k"], [n], Decoding(temperature=0.0))[0]


def test_smollm2_generates_paris_deterministically(smol):
    a = _greedy(smol, "The capital of France is")
    assert "Paris" in a
    assert _greedy(smol, "The capital of France is") == a


def test_gemma_loads_and_generates_deterministically(gemma):
    assert gemma.tokenizer("Hi").input_ids[0] == gemma.tokenizer.bos_token_id  # Gemma adds <bos>
    a = _greedy(gemma, "The capital of France is")
    assert "France" in a or "Paris" in a, a
    assert _greedy(gemma, "The capital of France is") == a
    assert gemma.fingerprint == assets.GEMMA_SHA256


@pytest.mark.parametrize("fixture", ["smol", "gemma"])
def test_logits_finite(request, fixture):
    lm = request.getfixturevalue(fixture)
    ids = lm.tokenizer("A man is sitting on a roof. He", return_tensors="pt")
    with torch.inference_mode():
        logits = lm.model(**ids).logits
    assert torch.isfinite(logits).all()
    assert logits.shape[-1] >= len(lm.tokenizer) - 64


def test_converted_cache_matches_gguf_logits(smol):
    """The safetensors cache gives the logits of the model loaded straight from the GGUF."""
    gguf_model, tok = models.load_gguf_direct("smollm2-135m")
    ids = tok("Evaluation measures the distance between two distributions.", return_tensors="pt").input_ids
    assert ids.tolist() == smol.tokenizer("Evaluation measures the distance between two distributions.",
                                          return_tensors="pt").input_ids.tolist()
    with torch.inference_mode():
        a = gguf_model(ids).logits
        b = smol.model(ids).logits
    assert torch.allclose(a, b, atol=1e-5, rtol=0), (a - b).abs().max()  # stated tolerance: 1e-5


def test_model_loaded_once_per_process(smol):
    assert models.load_model("smollm2-135m", device="cpu", dtype="float32") is smol


def test_one_tokenizer_per_model_whatever_the_dtype(smol):
    """A second dtype of a loaded model shares its tokenizer (Gemma 3's takes ~0.3 GB)."""
    half = models.load_model("smollm2-135m", device="cpu", dtype="bfloat16")
    assert half is not smol and half.model is not smol.model
    assert half.tokenizer is smol.tokenizer


def test_truncated_converted_cache_is_detected(tmp_path, smol):
    src = models.converted_dir(smol.spec)
    dst = tmp_path / "copy"
    shutil.copytree(src, dst)
    assert models.is_complete(dst)
    with open(dst / "model.safetensors", "r+b") as f:
        f.truncate(1000)
    assert not models.is_complete(dst)
    (dst / "evalcore-meta.json").unlink()
    assert not models.is_complete(dst)


def test_gemma_checksum_mismatch_is_an_error(tmp_path, monkeypatch):
    parts = []
    for n in range(4):
        p = tmp_path / f"part{n}"
        p.write_bytes(b"not a gguf %d" % n)
        parts.append(p)
    monkeypatch.setattr(assets, "require", lambda asset: parts[assets.GEMMA_PARTS.index(asset)])
    with pytest.raises(AssetError, match="checksum mismatch"):
        assets.gemma_gguf(tmp_path / "out")
    assert not (tmp_path / "out" / assets.GEMMA_GGUF_NAME).exists()


def test_unknown_model_lists_known_names():
    with pytest.raises(UnknownModelError, match="known names: smollm2-135m, gemma3-270m"):
        models.resolve_spec("not a model!")
    with pytest.raises(UnknownModelError, match="does not exist"):
        models.resolve_spec("./no/such/folder")


def test_offline_hub_model_says_so():
    with pytest.raises(ModelUnavailableError, match="not available offline.*bundled model"):
        models.load_model("gpt2")


def test_pickle_only_folder_is_refused(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    (tmp_path / "pytorch_model.bin").write_bytes(b"\x80\x04pickle")
    with pytest.raises(ModelUnavailableError, match="safetensors only"):
        models.load_model(str(tmp_path))


def test_local_folder_loads(smol):
    lm = models.load_model(str(models.converted_dir(smol.spec)), device="cpu", dtype="float32")
    assert lm.spec.family == "local" and lm.fingerprint.startswith("local-")
    ids = smol.tokenizer("Hello there", return_tensors="pt").input_ids
    with torch.inference_mode():
        assert torch.equal(lm.model(ids).logits, smol.model(ids).logits)


def test_device_and_dtype_resolution():
    assert models.resolve_device("cpu") == "cpu"
    assert models.resolve_dtype("auto", "cpu") == "float32"
    assert models.resolve_dtype("auto", "cuda") == "bfloat16"
    with pytest.raises(ModelUnavailableError, match="unknown dtype"):
        models.resolve_dtype("int3", "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ModelUnavailableError, match="CUDA is not available"):
            models.resolve_device("cuda")


def test_cli_models_lists_registry(capsys):
    from evalcore import cli

    assert cli.main(["models", "--json"]) == 0  # in this process: the listing is the subject, not a child's start-up
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["smollm2-135m"]["available"] and rows["smollm2-135m"]["tokenizer_family"] == "smollm2"
    assert rows["gemma3-270m"]["params_m"] == 268


def test_import_is_light():
    """Importing evalcore and its metrics loads neither torch nor transformers nor streamlit."""
    code = ("import sys, evalcore, evalcore.metrics.kl, evalcore.metrics.hellaswag, evalcore.data, evalcore.store, evalcore.models, evalcore.runs, evalcore.cli; "
            "bad = [m for m in ('torch', 'transformers', 'streamlit') if m in sys.modules]; print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_layering_by_import_scan():
    """evalcore never imports streamlit; pages never import torch or transformers."""
    for p in (ROOT / "evalcore").rglob("*.py"):
        assert "import streamlit" not in p.read_text(), p
    for p in [ROOT / "app.py", *(ROOT / "lab_cache").glob("*.py"), *(ROOT / "app_pages").glob("*.py")]:
        text = p.read_text()
        assert "import torch" not in text and "transformers" not in text, p


def test_too_large_for_free_memory_is_refused_before_loading(monkeypatch):
    spec = models.resolve_spec("gemma3-270m")
    folder, _, _ = models.weights_source(spec)
    n = models.parameter_count(spec, folder)
    assert 260e6 < n < 280e6  # from the safetensors headers, no weights read
    monkeypatch.setenv("EVALCORE_MEMORY_LIMIT_GB", "0.5")
    monkeypatch.setattr(models.loading, "_LOADED", {})  # not what another test loaded already
    with pytest.raises(ModelUnavailableError, match=r"needs about 0\.6 GiB .* but 0\.5 GiB is free"):
        models.load_model("gemma3-270m", device="cpu", dtype="bfloat16")  # refused before any weight is read
    assert not models.loading._LOADED
    monkeypatch.setenv("EVALCORE_MEMORY_LIMIT_GB", "0.7")
    models.check_memory(spec, folder, "bfloat16", "cpu")  # bf16 halves it: fits in 0.7 GiB
    with pytest.raises(ModelUnavailableError):
        models.check_memory(spec, folder, "float32", "cpu")


def test_no_network_when_offline_machine_uses_a_bundled_model():
    """HF_HUB_OFFLINE unset, every socket blocked and recorded: a bundled model loads and scores."""
    code = """
import os, socket
os.environ.pop("HF_HUB_OFFLINE", None); os.environ.pop("HF_DATASETS_OFFLINE", None)
calls = []
def blocked(*a, **k):
    calls.append(a[1:] if len(a) > 1 else a)
    raise OSError("network blocked by the test")
socket.socket.connect = blocked
socket.socket.connect_ex = blocked
socket.getaddrinfo = blocked
from evalcore.models import load_model
from evalcore.runs import run_hellaswag
from evalcore.store import Store
import tempfile
lm = load_model("smollm2-135m", device="cpu", dtype="float32")
r = run_hellaswag(lm, [0, 1], store=Store(tempfile.mkdtemp() + "/s.sqlite"))
print("CALLS", len(calls), calls[:3], "N", r.n)
"""
    env = {k: v for k, v in __import__("os").environ.items() if k not in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "CALLS 0 [] N 2" in out.stdout, out.stdout + out.stderr[-2000:]


def test_fused_rms_norms_equal_transformers():
    """The fused RMSNorm forwards (models.fuse_rms_norms, the transformers backend) give what
    transformers' own give."""
    import copy

    import torch

    for name in ("smollm2-135m", "gemma3-270m"):
        lm = models.load_model(name, device="cpu", dtype="float32", backend="transformers")
        norms = [m for m in lm.model.modules() if "forward" in m.__dict__]
        assert len(norms) >= 2 * lm.model.config.num_hidden_layers + 1  # every layer's norms swapped
        for dtype in (torch.float32, torch.bfloat16):
            for m in norms[:3] + norms[-1:]:
                m2 = copy.deepcopy(m).to(dtype)
                x = (torch.randn(300, m.weight.shape[0], generator=torch.Generator().manual_seed(0)) * 3).to(dtype)
                assert torch.equal(m2(x), type(m2).forward(m2, x))


def test_bundle_tokenizer_equals_autotokenizer(smol, gemma, hellaswag):
    """Bundled models read their tokenizer.json with the `tokenizers` library (evalcore.tokenizer,
    faster); it must give AutoTokenizer's ids (what lm-evaluation-harness uses), special tokens,
    decoding and vocabulary."""
    from transformers import AutoTokenizer

    items = hellaswag.items(list(range(0, 10042, 97)))
    for lm in (smol, gemma):
        auto = AutoTokenizer.from_pretrained(lm.source)
        for attr in ("bos_token_id", "eos_token_id", "pad_token_id", "unk_token_id"):
            assert getattr(lm.tokenizer, attr) == getattr(auto, attr), attr
        for it in items:
            for s in [it.query, *(it.query + c for c in it.continuations), *it.continuations, ""]:
                assert lm.tokenizer(s).input_ids == auto(s).input_ids, s
        assert type(lm.tokenizer).__module__ == "evalcore.tokenizer"
        for s in [items[0].query, " Paris.\n\nThe  answer is: 201", "naïve café – 東京 🙂"]:
            ids = auto(s).input_ids
            assert lm.tokenizer.decode(ids) == auto.decode(ids), s
            assert lm.tokenizer.decode(ids, skip_special_tokens=True) == auto.decode(ids, skip_special_tokens=True), s
        assert lm.tokenizer("x " * 50, truncation=True, max_length=7).input_ids == auto(
            "x " * 50, truncation=True, max_length=7).input_ids
        assert lm.tokenizer.get_vocab() == auto.get_vocab()


@pytest.mark.parametrize("backend", ["auto", "transformers"])
def test_truncated_safetensors_folder_is_one_clear_error(tmp_path, smol, backend):
    """A cut-off weights file: a ModelUnavailableError naming the folder and the file (one line in
    the CLI), on either forward path, found from the header before any weight is read."""
    import shutil

    src = models.converted_dir(smol.spec)
    for n in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(src / n, tmp_path / n)
    with open(src / "model.safetensors", "rb") as f:
        (tmp_path / "model.safetensors").write_bytes(f.read(100_000))
    with pytest.raises(ModelUnavailableError, match=f"model folder '{tmp_path}': model.safetensors: tensor .* outside the file"):
        models.load_model(str(tmp_path), device="cpu", dtype="float32", backend=backend)


_FAULTS = """
import json, resource, sys
from evalcore import data, models, runtime, scoring
lm = models.load_model("smollm2-135m", device="cpu", dtype="float32")
if sys.argv[1:] == ["--load-only"]:
    raise SystemExit(print(json.dumps({"tuned": runtime.tune_cpu_allocator()})))
its = data.HellaSwag().items(list(range(8)))
groups = [scoring.encode_pair(lm.tokenizer, it.query, it.continuations) for it in its]
scoring.score_groups(lm, groups, batch_tokens=1024)
r0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
scoring.score_groups(lm, groups, batch_tokens=1024)
print(json.dumps({"tuned": runtime.tune_cpu_allocator(), "faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - r0}))
"""


@pytest.mark.skipif(sys.platform != "linux", reason="glibc malloc")
def test_cpu_allocator_keeps_activation_pages(smol):
    """Loading a model for CPU sets glibc's malloc thresholds, so a second pass over the same
    batches reuses the pages of the first instead of faulting fresh ones in; EVALCORE_TUNE_MALLOC=0
    and a user's own MALLOC_* setting leave malloc alone."""
    def run(*args, **env):
        out = subprocess.run([sys.executable, "-c", _FAULTS, *args], capture_output=True, text=True, cwd=ROOT,
                             timeout=300, env={**os.environ, **env}, check=True)
        return json.loads(out.stdout.strip().splitlines()[-1])

    tuned, default = run(), run(EVALCORE_TUNE_MALLOC="0")
    # a user's own MALLOC_* setting: only whether the load tuned malloc is asserted, so no passes are timed
    assert tuned["tuned"] and not default["tuned"] and not run("--load-only", MALLOC_TOP_PAD_="0")["tuned"]
    assert default["faults"] > 20_000, default  # glibc's own thresholds: activations fault in on every pass
    assert tuned["faults"] < default["faults"] / 3, (tuned, default)
