"""Data-parallel runs under torchrun (CPU, gloo, 2 ranks, the real bundled SmolLM2), the store
merge, `--device-map auto` on CPU and the vLLM import guard.

Every distributed run is compared with a single-process run of the same items in another
store file: same predictions, log-likelihoods and NLLs within 1e-4.
"""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from evalcore import cli, parallel, scoring
from evalcore.errors import StoreError
from evalcore.runs import model_texts, run_perplexity
from evalcore.scoring import Decoding
from evalcore.store import Store

ROOT = Path(__file__).resolve().parents[2]
N_ITEMS = 24


def _torchrun(args: list[str], **kw) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "evalcore", *args]
    return subprocess.Popen(cmd, cwd=ROOT, env=os.environ.copy(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, **kw)


def _finish(p: subprocess.Popen, timeout: float = 300) -> str:
    out, err = p.communicate(timeout=timeout)
    assert p.returncode == 0, err[-3000:]
    return out


def _same_items(got: list[dict], ref: list[dict]) -> None:
    assert [g["index"] for g in got] == [r["index"] for r in ref]
    for g, r in zip(got, ref):
        assert (g["label"], g["pred"], g["pred_norm"], g["char_lengths"], g["n_tokens"]) == \
               (r["label"], r["pred"], r["pred_norm"], r["char_lengths"], r["n_tokens"])
        np.testing.assert_allclose(g["logprobs"], r["logprobs"], atol=1e-4)


@pytest.fixture
def reference(hellaswag_reference):
    """A single-process run of the first N_ITEMS items, in its own store (the session's, conftest.py)."""
    assert len(hellaswag_reference["items"]) == N_ITEMS
    return hellaswag_reference


# ----------------------------------------------------------------------------- the Dist value

def test_dist_shard_and_single_process_env():
    d = parallel.Dist(rank=1, world=3)
    assert d.shard(range(8)) == [1, 4, 7] and not d.is_main and not d.enabled
    shards = [parallel.Dist(rank=r, world=3).shard(range(8)) for r in range(3)]
    assert sorted(i for sh in shards for i in sh) == list(range(8))  # disjoint and complete
    for env in ({}, {"RANK": "0", "WORLD_SIZE": "1"}, {"WORLD_SIZE": "2"}):  # no job: nothing initialized
        one = parallel.from_env("cpu", environ=env)
        assert not one.enabled and one.is_main and one.device == "cpu" and one.shard([5, 6]) == [5, 6]
        assert one.gather(3) == [3]
        one.barrier()
        one.close()


# ----------------------------------------------------------------------------- HellaSwag

def test_hellaswag_two_ranks_equal_single_process(tmp_path, reference):
    db = tmp_path / "shared.sqlite"
    out = _finish(_torchrun(["hellaswag", "--model", "smollm2-135m", "--limit", str(N_ITEMS), "--store", str(db),
                             "--out", str(tmp_path / "out" / "r.json")]))
    got = json.loads((tmp_path / "out" / "r.json").read_text())
    assert os.listdir(tmp_path / "out") == ["r.json"]  # rank 1 wrote nothing (no temp file either)
    assert len([ln for ln in out.splitlines() if "acc" in ln]) == 1  # one summary line: rank 0's
    assert got["parallel"] == {"world": 2, "backend": "gloo"} and got["n"] == N_ITEMS
    assert got["timing"]["cached_items"] == 0
    _same_items(got["items"], reference["items"])
    assert got["results"] == reference["results"]
    assert Store(db).count("hellaswag") == N_ITEMS  # each item scored once, by one rank


def _rank_pids(agent: int) -> dict[int, int]:
    """{rank: pid} of torchrun's workers: the agent's children, RANK read from their environment."""
    pids: dict[int, int] = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            if ppid != agent:
                continue
            env = dict(kv.split("=", 1) for kv in (d / "environ").read_bytes().decode("utf-8", "replace").split("\0")
                       if "=" in kv)
        except (OSError, ValueError, IndexError):
            continue
        if "RANK" in env:
            pids[int(env["RANK"])] = int(d.name)
    return pids


def test_rank_killed_then_rerun_resumes(tmp_path, reference):
    """SIGKILL one rank mid-run: torchrun stops the job, each rank keeps its stored batches; a
    rerun scores only the rest and equals the single-process run."""
    db = tmp_path / "shared.sqlite"
    args = ["hellaswag", "--model", "smollm2-135m", "--limit", str(N_ITEMS), "--batch-tokens", "300",
            "--store", str(db)]
    p = _torchrun([*args, "--out", str(tmp_path / "killed.json")])
    deadline = time.time() + 240
    n = 0
    while time.time() < deadline and p.poll() is None and n < 4:
        time.sleep(0.2)
        if db.exists():
            try:
                s = Store(db)
                n = s.count("hellaswag")
                s.close()
            except (StoreError, sqlite3.Error):  # created but not yet initialized by a rank
                n = 0
    assert p.poll() is None, p.communicate()[1][-3000:]
    ranks = _rank_pids(p.pid)
    assert set(ranks) == {0, 1}, ranks
    os.kill(ranks[1], signal.SIGKILL)
    p.communicate(timeout=120)
    assert p.returncode != 0 and not (tmp_path / "killed.json").exists()
    kept = Store(db).count("hellaswag")
    assert 4 <= kept < N_ITEMS
    _finish(_torchrun([*args, "--out", str(tmp_path / "resumed.json")]))
    got = json.loads((tmp_path / "resumed.json").read_text())
    assert got["timing"]["cached_items"] == kept > 0  # the sum over both ranks' shards
    _same_items(got["items"], reference["items"])
    assert Store(db).count("hellaswag") == N_ITEMS


# ----------------------------------------------------------------------------- perplexity, MAUVE

def test_perplexity_two_ranks_equal_single_process(smol, tmp_path):
    from evalcore.data import corpus

    db = tmp_path / "shared.sqlite"
    _finish(_torchrun(["perplexity", "--model", "smollm2-135m", "--corpus", "wikipedia", "--limit", "4", "--per-token",
                       "--store", str(db), "--out", str(tmp_path / "p.json")]))
    got = json.loads((tmp_path / "p.json").read_text())
    ref = run_perplexity(smol, corpus("wikipedia", limit=4), store=Store(tmp_path / "single.sqlite"))
    assert Store(db).count("perplexity") == 4 and got["n_texts"] == 4 and got["parallel"]["world"] == 2
    assert got["tokens"] == ref.metrics.tokens
    np.testing.assert_allclose(got["perplexity"], ref.metrics.perplexity, rtol=1e-5)
    for g, r in zip(got["texts"], ref.texts):
        assert g["ids"] == r.ids and g["n_bytes"] == r.n_bytes
        np.testing.assert_allclose(g["nll"], r.nll, atol=1e-4)


def test_mauve_generation_sharded(smol, hellaswag, tmp_path, monkeypatch):
    """Ranks generate disjoint shards into the store; rank 0 featurizes all and writes MAUVE;
    every continuation equals the one a single process samples (per-item random streams)."""
    db = tmp_path / "shared.sqlite"
    _finish(_torchrun(["mauve", "--model", "smollm2-135m", "--limit", "8", "--k", "2", "--store", str(db),
                       "--out", str(tmp_path / "m.json")]))
    got = json.loads((tmp_path / "m.json").read_text())
    assert got["n"] == 8 and 0 < got["mauve"] <= 1
    dec = Decoding(temperature=1.0, top_p=0.95, top_k=0, max_new_tokens=None, seed=25)  # the CLI's defaults
    single = model_texts(smol, range(8), dec, dataset=hellaswag, store=Store(tmp_path / "single.sqlite"))

    def boom(*a, **k):
        raise AssertionError("generation ran for stored items")

    monkeypatch.setattr(scoring, "generate", boom)
    assert model_texts(smol, range(8), dec, dataset=hellaswag, store=Store(db)) == single
    assert Store(db).count("generate") == 8


# ----------------------------------------------------------------------------- merge, device map, vLLM

def test_store_merge(tmp_path, capsys):
    a, b, into = tmp_path / "a.sqlite", tmp_path / "b.sqlite", tmp_path / "all.sqlite"
    sa, sb = Store(a), Store(b)
    sa.put_many("hellaswag", {"k1": {"x": 1}, "k2": {"x": 2}})
    sb.put_many("hellaswag", {"k2": {"x": 2}, "k3": {"x": 3}})
    sb.put_many("perplexity", {"k4": [0.5]})
    sa.close()
    sb.close()
    assert cli.main(["store-merge", str(a), str(b), "--into", str(into)]) == 0
    assert "now holds 4" in capsys.readouterr().out
    s = Store(into)
    assert s.get_many(["k1", "k2", "k3", "k4"]) == {"k1": {"x": 1}, "k2": {"x": 2}, "k3": {"x": 3}, "k4": [0.5]}
    assert s.count("hellaswag") == 3 and s.count("perplexity") == 1
    s.close()
    from evalcore.store import merge

    assert merge([a, b], into=into) == {str(a): 0, str(b): 0}  # merging twice adds nothing
    (tmp_path / "junk.sqlite").write_bytes(b"not a database" * 100)
    for bad, msg in [(tmp_path / "missing.sqlite", "does not exist"), (into, "merge target"),
                     (tmp_path / "junk.sqlite", "not an evalcore results store")]:
        assert cli.main(["store-merge", str(bad), "--into", str(into)]) == 2
        err = capsys.readouterr().err
        assert msg in err and len(err.strip().splitlines()) == 1, err


def test_device_map_auto_on_cpu_scores_the_same(smol, hellaswag):
    from evalcore.models import load_model

    mapped = load_model("smollm2-135m", device="cpu", dtype="float32", device_map="auto")
    assert mapped is not smol and mapped.identity() == smol.identity()  # same store records
    groups = [scoring.encode_pair(smol.tokenizer, it.query, it.continuations) for it in hellaswag.items([0, 1, 2])]
    for g_a, g_b in zip(scoring.score_groups(smol, groups), scoring.score_groups(mapped, groups)):
        for a, b in zip(g_a, g_b):  # native (unpadded matmuls) vs transformers: float32 rounding
            np.testing.assert_allclose(a, b, atol=5e-5)


def test_vllm_backend_missing_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # as on this machine: `import vllm` fails
    rc = cli.main(["hellaswag", "--model", "smollm2-135m", "--limit", "2", "--backend", "vllm",
                   "--store", str(tmp_path / "s.sqlite"), "--out", str(tmp_path / "x.json")])
    err = capsys.readouterr().err
    assert rc == 2 and err.strip() == "evalcore: error: vLLM is not installed; pip install vllm on a CUDA machine"
    assert not (tmp_path / "x.json").exists()



def test_vllm_prompt_logprobs_indexing_matches_hf(smol, hellaswag, monkeypatch):
    """The vLLM path's arithmetic on a stand-in engine whose prompt_logprobs come from the HF
    model: summing positions Lc .. Lc+m-1 gives the HF path's log-likelihoods."""
    import types

    import torch

    from evalcore.scoring import vllm_backend

    class FakeLLM:  # vllm.LLM.generate's output shape: prompt_logprobs[i] = {token_i: Logprob}, None at 0
        def generate(self, prompts, params, use_tqdm=False):
            assert params["prompt_logprobs"] == 1 and params["max_tokens"] == 1
            outs = []
            for p in prompts:
                ids = p["prompt_token_ids"]
                with torch.inference_mode():
                    lp = torch.log_softmax(smol.model(input_ids=torch.tensor([ids])).logits[0].float(), -1)
                plp = [None] + [{t: types.SimpleNamespace(logprob=float(lp[i - 1, t]))} for i, t in enumerate(ids) if i]
                outs.append(types.SimpleNamespace(prompt_logprobs=plp))
            return outs

    monkeypatch.setitem(sys.modules, "vllm", types.SimpleNamespace(SamplingParams=lambda **kw: kw))
    vm = vllm_backend.VLLMModel(smol.spec, FakeLLM(), smol.tokenizer, "cpu", "float32", smol.fingerprint, smol.source,
                                max_model_len=2048)
    assert vm.identity() == {**smol.identity(), "backend": "vllm"}  # never mixed with HF records
    groups = [scoring.encode_pair(smol.tokenizer, it.query, it.continuations) for it in hellaswag.items([0, 1, 2])]
    got = [None] * len(groups)
    for idx, lps in vllm_backend.iter_logprobs(vm, groups, batch_tokens=200):  # several batches
        for i, lp in zip(idx, lps):
            got[i] = lp
    for g_v, g_h in zip(got, scoring.score_groups(smol, groups)):
        for a, b in zip(g_v, g_h):
            assert a.shape == b.shape
            np.testing.assert_allclose(a, b, atol=1e-4)
